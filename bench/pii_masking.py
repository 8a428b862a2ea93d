"""What PII masking adds to a request: the gateway's masking step (find, then replace every
text the engine will see) timed on its own, for prompts of 1, 4, 16 and 128 KB.

    .venv/bin/python bench/pii_masking.py [--rounds 200]

Three kinds of prompt, built from the labelled corpus (tests/pii/corpus.jsonl):
  dense    the corpus' texts back to back: a finding every ~45 characters, Korean and English
  numbers  its near-misses only: dates, order numbers, versions, ISBNs, UUIDs, invalid cards and
           impossible registration numbers, with nothing to find but digits everywhere
  prose    the texts with every digit and '@' removed: nothing to find, as in most prompts
For each, masking runs `rounds` times under a mask policy and under `off` (which returns at
once); it prints the added latency (p50, p99) and throughput in MB/s. The same run also times
restoring a streamed answer of that size in 16-byte chunks (mask+restore).
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.pii.evaluate import load
from tiller.contract.events import Delta
from tiller.contract.requests import Chat, Message, texts_of
from tiller.gateway.masking import Masking
from tiller.gateway.protocol import ApiRequest
from tiller.gateway.restoring import AnswerRestorer
from tiller.protos.quota.v1 import quota_pb2
from tiller.protos.router.v1 import router_pb2

SIZES_KB = (1, 4, 16, 128)


def prompt(kind: str, size: int) -> str:
    texts = [c.text for c in load() if kind != "numbers" or not c.entities]
    if kind == "prose":
        texts = [re.sub(r"[\d@]", "", t) for t in texts]
    out: list[str] = []
    i = 0
    while sum(len(t.encode()) + 1 for t in out) < size:
        out.append(texts[i % len(texts)])
        i += 1
    return "\n".join(out).encode()[:size].decode(errors="ignore")


def route(mode: str) -> router_pb2.Route:
    return router_pb2.Route(
        model="m",
        pii=router_pb2.PiiSettings(policies=[router_pb2.PiiPolicy(mode=mode)], min_score=0.5),
    )


def time_mask(masking: Masking, text: str, mode: str, rounds: int) -> tuple[list[float], int]:
    chat = ApiRequest("m", Chat((Message("user", text),)))
    principal = quota_pb2.Principal()
    r = route(mode)
    masked, _ = masking.mask(chat, r, principal)  # warm: compiled patterns, metadata
    found = texts_of(masked.ask)[0].count("<") - text.count("<")
    took = []
    for _ in range(rounds):
        start = time.perf_counter()
        masking.mask(chat, r, principal)
        took.append(time.perf_counter() - start)
    return took, found


def time_restore(text: str, rounds: int) -> list[float]:
    vault = {f"<EMAIL_{i}>": f"person{i}@example.com" for i in range(1, 40)}
    answer = text.replace("@", "<EMAIL_1>")
    pieces = [answer[i : i + 16] for i in range(0, len(answer), 16)]
    batch = [Delta(p, 1, (), f"{i}-0") for i, p in enumerate(pieces)]
    took = []
    for _ in range(max(5, rounds // 10)):
        restorer = AnswerRestorer(vault)
        start = time.perf_counter()
        for event in batch:
            list(restorer.restore([event]))
        took.append(time.perf_counter() - start)
    return took


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    masking = Masking()
    print(
        f"{'prompt':<14} {'found':>5} {'off p99':>9} {'mask p50':>9} {'mask p99':>9} "
        f"{'MB/s':>7} {'restore p50':>12}"
    )
    for kind in ("dense", "numbers", "prose"):
        for kb in SIZES_KB:
            rounds = args.rounds if kb < 64 else max(20, args.rounds // 8)
            text = prompt(kind, kb * 1024)
            off, _ = time_mask(masking, text, "off", rounds)
            on, found = time_mask(masking, text, "mask", rounds)
            restore = time_restore(text, rounds)
            mbps = len(text.encode()) / statistics.median(on) / 1e6
            print(
                f"{kind:<7} {kb:>3} KB {found:>5} {pct(off, 0.99) * 1e3:>7.3f}ms "
                f"{statistics.median(on) * 1e3:>7.3f}ms {pct(on, 0.99) * 1e3:>7.3f}ms "
                f"{mbps:>7.2f} {statistics.median(restore) * 1e3:>10.3f}ms"
            )


if __name__ == "__main__":
    main()
