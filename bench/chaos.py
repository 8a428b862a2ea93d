"""Any single failure, under load: is an accepted request lost, repeated or failed, does a
limit hold at the engine, and is usage what the clients got? (issue 21's experiments)

    ./dev shell bench/chaos.py [--only NAME]... [--runs 2] [--token-delay-ms 30]
                               [--lease-ttl-seconds 15]          (about 5 minutes)

The services it starts are the `tiller` its interpreter imports: to measure another checkout
(an older commit), run this file with that checkout's interpreter,
`/path/to/checkout/.venv/bin/python bench/chaos.py`; the first line printed names the code.

Starts its own stack as separate processes (bench/chaos_stack.py): Redis, the Temporal dev
server, the demo engine at 30 ms a token, counted per key (bench/chaos_engine.py), one router,
two quotas, two workers and two gateways. Each experiment runs `--runs` times, each run with
keys of its own; every prompt starts with its key's tag, so the engine counts answers in
flight per key. The answers are the demo engine's echo, so each client knows the whole text it
should get (checked once against a real answer at start-up).

    gateway       10 streams through gateway0, SIGKILLed mid-answer; each client resumes on
                  gateway1 (GET /v1/chat/completions/{id}/stream, Last-Event-ID)
    concurrency   a concurrency-5 key, 10 clients looping on gateway0, SIGKILLed; they go on
                  through gateway1 for 2 lease TTLs: the engine's peak for the key
    redis         10 background requests and 10 streams; Redis SIGKILLed for 10 s, restarted
                  on its data; every background request polled for its result
    engine        20 streams; the engine SIGKILLed for 20 s, then started again
    router        8 clients looping over both gateways; the only router SIGKILLed for 5 s
    hangup        a concurrency-1 key whose clients leave 5-80 ms after asking without reading
                  a token (before the headers or just after), for 10 s: the engine's peak
    reservations  tpm=30 and 40 one-letter words with max_tokens 1; tpm=100 and "hi" to a
                  model with a 200-word system prompt; a 100-token daily budget: admitted or
                  refused, and the tokens recorded

Last, per key: the completion tokens quota recorded (GET /admin/usage) against the tokens its
clients got (the demo engine writes a word per token), once the engine is idle.

The table: req (requests sent; for concurrency, those admitted: its 429s are in the notes),
whole (the exact text, once), lost (accepted, not whole and not repeated, and not hung up by the
suite), dup (some of the text came twice), err (requests whose client saw an error: a status of
400 or more, an error event, a cut, a failed resume; for reservations a refusal is the result,
not an error), peak/limit (the engine's most answers at once for the run's key, and the key's
concurrency limit), usage (keys whose recorded completion tokens equal what their clients
got), notes (what else the run counted, and its commonest errors).
It exits 0 whatever it finds: it is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import FrameType

import chaos_experiments as experiments
from chaos_experiments import Row, Suite, check_reference
from chaos_stack import Cluster, EngineWatch

import tiller


def usage(suite: Suite) -> tuple[int, int, list[str]]:
    """Per key, recorded completion tokens against tokens delivered; fills each row's column."""
    ledger = suite.cluster.admin("GET", "/admin/usage")
    recorded: Counter[str] = Counter()
    for entry in ledger["data"]:
        recorded[entry["key_id"]] += entry["completion_tokens"]
    matched = total = 0
    misses: list[str] = []
    for row in suite.rows:
        row_matched = 0
        for key in row.keys:
            got = sum(o.tokens for o in row.outcomes if o.key == key)
            if recorded[key.id] == got:
                row_matched += 1
            else:
                misses.append(f"{key.tag}: recorded {recorded[key.id]}, clients got {got}")
        row.usage = f"{row_matched}/{len(row.keys)}"
        matched += row_matched
        total += len(row.keys)
    return matched, total, misses


def table(rows: list[Row]) -> str:
    head = f"{'experiment':<13}{'run':>4}{'req':>6}{'whole':>7}{'lost':>6}{'dup':>5}{'err':>5}"
    head += f"{'peak/limit':>12}{'usage':>7}  notes"
    lines = [head, "-" * len(head)]
    for row in rows:
        if row.experiment == "reference":
            continue
        errored = row.count(lambda o: bool(o.errors))
        line = f"{row.experiment:<13}{row.run:>4}{len(row.outcomes):>6}"
        line += f"{row.count(lambda o: o.whole):>7}{row.count(lambda o: o.lost):>6}"
        line += f"{row.count(lambda o: o.duplicated):>5}{errored:>5}{row.peak:>12}{row.usage:>7}"
        errors = Counter(e for o in row.outcomes for e in o.errors)
        notes = row.notes + [f"{n}x {e}" for e, n in errors.most_common(3)]
        lines.append(f"{line}  {'; '.join(notes)}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--only", choices=sorted(experiments.ALL), action="append")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--token-delay-ms", type=float, default=30.0)
    parser.add_argument(
        "--lease-ttl-seconds",
        type=float,
        default=15.0,
        help="quota's lease TTL (60 s by default in Tiller); the concurrency run lasts 2 of it",
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _exit)
    chosen = args.only or list(experiments.ALL)
    started = time.monotonic()
    data = Path(tempfile.mkdtemp(prefix="tiller-chaos-"))
    cluster = Cluster(data, args.token_delay_ms, args.lease_ttl_seconds)
    print(f"tiller from {Path(tiller.__file__).parent}; logs in {cluster.logs}", flush=True)
    try:
        cluster.up()
        suite = Suite(cluster, EngineWatch(cluster.engine_url))
        print(f"stack up in {time.monotonic() - started:.0f} s", flush=True)
        check_reference(suite)
        for name in chosen:
            for run in range(1, args.runs + 1):
                row = Row(name, run)
                suite.rows.append(row)
                began = time.monotonic()
                experiments.ALL[name](suite, row)
                print(f"{name} run {run}: {time.monotonic() - began:.0f} s", flush=True)
                cluster.heal()
        suite.settle_engine([k.tag for r in suite.rows for k in r.keys], timeout=60)
        time.sleep(3)  # the last settlements
        matched, total, misses = usage(suite)
        print("\n" + table(suite.rows))
        print(f"\nusage: {matched}/{total} keys' recorded completion tokens = tokens delivered")
        for miss in misses:
            print(f"  {miss}")
        print(f"\nsuite took {time.monotonic() - started:.0f} s", flush=True)
    finally:
        cluster.stop()


def _exit(signum: int, frame: FrameType | None) -> None:
    sys.exit(128 + signum)


if __name__ == "__main__":
    main()
