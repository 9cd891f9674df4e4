"""Decoding rating batches: kiosk.protocol's checks against the server's msgspec decoder, same run.

Run by hand (never in the test suite); figures go to docs/benchmarks.md:

    .venv/bin/python bench/bench_decode.py [--rounds 5]

The batches are what a kiosk sends: ratings recorded by a real outbox (so
time-ordered ids, chained), a full 500-rating batch and a one-rating batch.
Each side decodes the same bytes; the figure is the median of the rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kiosk import protocol  # noqa: E402
from kiosk.outbox import Outbox  # noqa: E402
from server import decoder  # noqa: E402

REASONS = frozenset(protocol.DEFAULT_REASONS)


def batches() -> dict[str, bytes]:
    with tempfile.TemporaryDirectory(prefix="onetap-bench-") as tmp:
        outbox = Outbox.open(Path(tmp) / "outbox.db", chain_seed="ab" * 32)
        for tap in range(protocol.MAX_BATCH_RATINGS):
            held = outbox.record(1 + tap % 5, clock_synced=True, hold=True)
            outbox.annotate(held.id, reason=protocol.DEFAULT_REASONS[tap % 3], age_group="70plus")
            outbox.release(held.id)
        rows = outbox.pending(limit=protocol.MAX_BATCH_RATINGS)
        outbox.close()
    encoded = [payload for _, _, payload in rows]
    return {"batch_of_500": protocol.encode_batch("bench", "counter-01", encoded),
            "batch_of_1": protocol.encode_batch("bench", "counter-01", encoded[:1])}


def seconds_per_decode(decode, payload: bytes, repeat: int) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        decode(payload, REASONS)
    return (time.perf_counter() - started) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    payloads = batches()
    sides = {"kiosk_protocol": protocol.decode_batch, "server_decoder": decoder.decode_batch}
    for name, payload in payloads.items():
        # Both sides must give the same batch, or the comparison means nothing.
        assert decoder.decode_batch(payload, REASONS) == protocol.decode_batch(payload, REASONS)
        repeat = 200 if len(payload) > 10_000 else 50_000
        times: dict[str, list[float]] = {side: [] for side in sides}
        for _ in range(args.rounds):
            for side, decode in sides.items():  # alternating, so drift hits both
                times[side].append(seconds_per_decode(decode, payload, repeat))
        medians = {side: statistics.median(values) for side, values in times.items()}
        print(json.dumps({
            "payload": name, "bytes": len(payload), "rounds": args.rounds,
            **{f"{side}_us": round(value * 1e6, 2) for side, value in medians.items()},
            "ratio": round(medians["server_decoder"] / medians["kiosk_protocol"], 3),
        }), flush=True)


if __name__ == "__main__":
    main()
