"""The roll-up's cost for a busy second: 2,000 terminals' one-rating messages moved into every rollup.

Run by hand (never in the test suite); figures go to docs/benchmarks.md:

    git worktree add /tmp/before main
    .venv/bin/python bench/bench_roll_up.py --checkout /tmp/before --checkout . \\
        --backend postgres --seconds 10 --rounds 2

For each checkout in turn (alternating, *rounds* times), in a fresh
interpreter running that checkout's code (PYTHONPATH) on a fresh store:
*seconds* simulated seconds of load.py's traffic (5,000 one-rating messages
a second from 2,000 terminals of one site, a random score each, lang ko or
en), each second stored through ``ingest_many`` in commits of 200 messages as
two ingest workers commit them, then one ``roll_up()`` of that second's
queue (or every *every* seconds, of those seconds' queue), timed alone. Reported per roll-up: wall time (what holds SQLite's
write lock, and on PostgreSQL the backend's work as well), the Python
process's own CPU, and the rollup rows written. The first simulated second
(every rollup row new) is reported apart from the rest (mostly updates).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

#: Runs inside the checkout's interpreter; prints one JSON line.
CHILD = r"""
import json, random, sys, time, uuid
from datetime import datetime, timedelta, timezone
from kiosk.protocol import Rating
from server.schema import ROLLUPS
from server.store import PostgresStore, SQLiteStore

backend, target, seconds, terminals, rate, every = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7])
store = PostgresStore.open(target) if backend == "postgres" else SQLiteStore.open(target)
rng = random.Random(14)
seqs = {}
start = datetime(2026, 11, 30, 1, 0, tzinfo=timezone.utc)
walls, cpus, moved = [], [], []
for second in range(seconds):
    received = start + timedelta(seconds=second)
    at = received.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    batches = []
    for _ in range(rate):
        terminal = f"t{rng.randrange(terminals):04d}"
        seqs[terminal] = seq = seqs.get(terminal, 0) + 1
        batches.append(("load", terminal, [Rating(str(uuid.uuid4()), seq, rng.randint(1, 5), at, True,
                                                  lang=rng.choice(("ko", "ko", "ko", "en")))]))
    for i in range(0, len(batches), 200):
        store.ingest_many(batches[i:i + 200], received)
    if (second + 1) % every:
        continue
    wall, cpu = time.perf_counter(), time.process_time()
    moved.append(0)
    while n := store.roll_up():
        moved[-1] += n
    walls.append(time.perf_counter() - wall)
    cpus.append(time.process_time() - cpu)
rows = sum(store._read(f"SELECT count(*) FROM {name}")[0][0] for name, _ in ROLLUPS)
print(json.dumps({"walls": walls, "cpus": cpus, "moved": moved, "rollup_rows": rows}))
"""


def run(checkout: Path, args: argparse.Namespace, workdir: Path, index: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout.resolve())}
    if args.backend == "postgres":
        from tests.backends import PostgresDatabase
        database = PostgresDatabase(os.environ.get("ONETAP_BENCH_POSTGRES")).create(durable=True)
        target = database.url
    else:
        database, target = None, str(workdir / f"roll-up-{index}.db")
    try:
        out = subprocess.run([sys.executable, "-c", CHILD, args.backend, target, str(args.seconds),
                              str(args.terminals), str(args.rate), str(args.every)],
                             env=env, cwd=checkout, check=True, capture_output=True, text=True).stdout
    finally:
        if database is not None:
            database.drop()
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", action="append", type=Path, required=True)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="postgres")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--terminals", type=int, default=2000)
    parser.add_argument("--rate", type=int, default=5000, help="one-rating messages a second")
    parser.add_argument("--every", type=int, default=1, help="simulated seconds between roll-ups")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for index, checkout in enumerate(args.checkout):
                result = run(checkout, args, Path(tmp), round_ * len(args.checkout) + index)
                walls, cpus = result["walls"], result["cpus"]
                print(f"{args.backend} every {args.every} s, round {round_ + 1} {checkout}:"
                      f" first roll-up {walls[0]:.3f} s"
                      f" (CPU {cpus[0]:.3f}); the next {len(walls) - 1}: median wall"
                      f" {statistics.median(walls[1:]):.3f} s, max {max(walls[1:]):.3f},"
                      f" median CPU {statistics.median(cpus[1:]):.3f} s;"
                      f" queue rows moved each {statistics.median(result['moved']):.0f};"
                      f" rollup rows in the end {result['rollup_rows']:,}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
