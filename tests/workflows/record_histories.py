"""Record the histories that test_replay.py replays: each scenario of catalog.py, run on a
time-skipping test server with its stand-ins, written to histories/<scenario>.json
(`WorkflowHistory.to_json()`; payloads unsealed, as the stand-ins have no codec).

    ./dev shell -m tests.workflows.record_histories            # scenarios without a history
    ./dev shell -m tests.workflows.record_histories NAME ...   # these scenarios, replacing theirs

A recorded history stands for a run that an earlier worker began: a worker with today's code
must be able to finish it. So a history is not re-recorded because a change made it fail to
replay: that failure is the point (keep the old behaviour for old runs with
`workflow.patched`, or make the contract's `from_dict` read the old payload). Record again only
when a scenario itself changes, and keep the history it replaces when it still says something,
under another name (`<scenario>@<date>.json`): every file in histories/ is replayed.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from tests.workflows.catalog import ALL
from tests.workflows.harness import time_skipping_server
from tests.workflows.scenarios import play

HISTORIES = Path(__file__).resolve().parent / "histories"


async def record(names: list[str]) -> None:
    HISTORIES.mkdir(exist_ok=True)
    for name in names:
        # A server per run, as in the tests: time skipping is the server's, and one run's
        # leftovers (a timed-out attempt) could keep the next from skipping.
        async with time_skipping_server() as environment:
            run = await play(environment.client, ALL[name])
            history = await run.handle.fetch_history()
        (HISTORIES / f"{name}.json").write_text(history.to_json() + "\n")
        outcome = "completed" if run.failure is None else "failed"
        print(f"recorded {name} ({outcome}, {len(history.events)} events)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help="scenarios of catalog.py")
    names = parser.parse_args().names
    unknown = sorted(set(names) - set(ALL))
    if unknown:
        parser.error(f"not in catalog.py: {', '.join(unknown)}")
    if not names:
        names = [name for name in ALL if not (HISTORIES / f"{name}.json").exists()]
        if not names:
            print("every scenario has its history; name those to record again")
            return
    asyncio.run(record(names))


if __name__ == "__main__":
    main()
