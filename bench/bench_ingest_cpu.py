"""Ingest worker CPU per one-rating message, read from the worker's own /proc/<pid>/stat.

Run by hand (never in the test suite); figures go to docs/benchmarks.md:

    git worktree add /tmp/before main
    .venv/bin/python bench/bench_ingest_cpu.py --checkout /tmp/before --checkout . \\
        --messages 20000 --terminals 500 --backend sqlite

For each checkout, in turn and in the same run: a private mosquitto, one real
`onetap-server run --role ingest` process started from that checkout's code
(PYTHONPATH), and *terminals* closed-loop terminals (load.py's minimal MQTT
3.1.1 client, Ack subscription at QoS 1 as the kiosk's) that each send a
one-rating batch and the next one when its Ack comes. After a warm-up, the
worker's user+system CPU is read before and after a fixed count of messages,
so the figure does not depend on how fast the machine or the load generator
is, only on what the worker does per message; each of its threads' share is
read the same way, by the name the server gives it in the operating system.
The seq rule is checked at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from load import SITE, Database, Terminal, cpu_seconds, raise_fd_limit  # noqa: E402
from server.process import stop_process  # noqa: E402
from tests.broker import Mosquitto  # noqa: E402


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """User+system CPU of each thread of *pid* by its name in the operating system
    (the server names its own: onetap-ingest, onetap-mqtt, onetap-roll-up, ...)."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
        except OSError:
            continue  # the thread ended meanwhile
        out[name] = out.get(name, 0.0) + cpu_seconds(pid, int(task.name))
    return out


class LoopTerminal(Terminal):
    """A terminal that taps again as soon as its Ack comes, while the round's budget lasts."""

    def __init__(self, name: str, port: int, stats: dict, budget: list[int]):
        super().__init__(name, port, ack_timeout=10.0, stats=stats)
        self.budget = budget

    def next(self) -> None:
        if self.budget[0] > 0:
            self.budget[0] -= 1
            self.tap()

    def _on_ack(self, ack) -> None:
        super()._on_ack(ack)
        if not self.in_flight and not self.pending:
            self.next()


async def run_round(terminals: list[LoopTerminal], stats: dict, count: int) -> float:
    """Send *count* one-rating messages over the terminals; wall seconds until all are Acked."""
    stats["confirmed"] = 0
    terminals[0].budget[0] = count
    started = time.monotonic()
    for t in terminals:
        t.next()
    while stats["confirmed"] < count:
        await asyncio.sleep(0.01)
        now = time.monotonic()
        for t in terminals:
            t.check_timeout(now)
    return time.monotonic() - started


def measure(checkout: Path, args: argparse.Namespace, workdir: Path) -> dict:
    checkout = checkout.resolve()
    label = checkout.name
    workdir.mkdir(parents=True)
    broker = Mosquitto(workdir / f"broker-{label}").start()
    db = Database(args.backend, workdir / label)
    (workdir / label).mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    commit = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    worker = subprocess.Popen(
        [sys.executable, "-m", "server", "run", "--role", "ingest", "--broker", broker.url,
         "--db", str(db.url), "--log-level", "WARNING"],
        cwd=checkout, env=env, stdout=subprocess.DEVNULL,
        stderr=open(workdir / f"worker-{label}.log", "ab"))
    try:
        time.sleep(3.0)
        assert worker.poll() is None, "the ingest worker died at start"
        if args.profile:
            # py-spy (pip install py-spy) samples the worker's threads; collapsed stacks to a file.
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw", "--rate", "400",
                                    "--nonblocking", *args.profile_mode, "--threads", "--pid", str(worker.pid),
                                    "--output", str(args.profile / f"{label}.txt")],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stats = {"latencies": [], "taps": 0, "confirmed": 0, "duplicates": 0, "rejected": 0,
                 "batches": 0, "resends": 0}
        budget = [0]

        async def main() -> dict:
            terminals = [LoopTerminal(f"k{i:05d}", broker.port, stats, budget)
                         for i in range(args.terminals)]
            await asyncio.gather(*(t.connect() for t in terminals))
            await asyncio.sleep(1.0)
            await run_round(terminals, stats, args.warmup)
            await asyncio.sleep(0.5)
            cpu0, broker0 = cpu_seconds(worker.pid), cpu_seconds(broker.process.pid)
            threads0 = thread_cpu_seconds(worker.pid)
            wall = await run_round(terminals, stats, args.messages)
            cpu = cpu_seconds(worker.pid) - cpu0
            threads = thread_cpu_seconds(worker.pid)
            broker_cpu = cpu_seconds(broker.process.pid) - broker0
            threads = {name: seconds - threads0.get(name, 0.0) for name, seconds in threads.items()}
            return {"cpu": cpu, "broker_cpu": broker_cpu, "wall": wall, "threads": threads,
                    "seqs": {t.name: t.seq for t in terminals}}

        out = asyncio.run(main())
        if args.profile:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        time.sleep(0.5)
        rows = db.query(f"SELECT terminal, count(*), count(DISTINCT seq), min(seq), max(seq)"
                        f" FROM ratings WHERE site = '{SITE}' GROUP BY terminal")
        seqs = out["seqs"]
        bad = [r for r in rows if not (r[1] == r[2] == r[4] == seqs.get(r[0]) and r[3] == 1)]
        total = args.warmup + args.messages
        return {
            "checkout": str(checkout), "commit": commit + ("+dirty" if dirty else ""),
            "backend": args.backend, "terminals": args.terminals, "messages": args.messages,
            "worker_cpu_s": round(out["cpu"], 3),
            "worker_cpu_ms_per_message": round(1000 * out["cpu"] / args.messages, 4),
            "broker_cpu_ms_per_message": round(1000 * out["broker_cpu"] / args.messages, 4),
            "worker_threads_ms_per_message": {name: round(1000 * seconds / args.messages, 4)
                                              for name, seconds in sorted(out["threads"].items(),
                                                                          key=lambda item: -item[1])
                                              if seconds > 0},
            "wall_messages_per_s": round(args.messages / out["wall"]),
            "stored": sum(r[1] for r in rows), "sent": total,
            "resends": stats["resends"], "duplicates": stats["duplicates"],
            "seq_rule": "ok" if not bad and sum(r[1] for r in rows) == total else f"{len(bad)} bad",
        }
    finally:
        stop_process(worker, timeout=15)
        broker.stop()
        db.drop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", type=Path, action="append",
                        help="a checkout whose server code to measure (repeatable; default: this one)")
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--terminals", type=int, default=500)
    parser.add_argument("--profile", type=Path, help="a directory for py-spy's collapsed stacks of each worker")
    parser.add_argument("--profile-wall", dest="profile_mode", action="store_const", const=["--idle"],
                        default=["--gil"], help="profile wall time (waits too), not only what holds the GIL")
    parser.add_argument("--profile-cpu", dest="profile_mode", action="store_const", const=[],
                        help="profile every thread while it runs, the GIL held or not (SQLite's own work)")
    parser.add_argument("--repeat", type=int, default=1, help="measure the checkouts this many times, interleaved")
    args = parser.parse_args()
    raise_fd_limit()
    checkouts = args.checkout or [Path(__file__).resolve().parent.parent]
    results = []
    with tempfile.TemporaryDirectory(prefix="onetap-cpu-") as tmp:
        for round_ in range(args.repeat):
            for n, checkout in enumerate(checkouts):
                result = measure(checkout, args, Path(tmp) / f"r{round_}-{n}")
                print(json.dumps(result), flush=True)
                results.append(result)
    if len(checkouts) > 1:
        by = {}
        for r in results:
            by.setdefault(r["checkout"], []).append(r["worker_cpu_ms_per_message"])
        first, *rest = by.values()
        base = min(first)
        for name, values in list(by.items())[1:]:
            print(json.dumps({"checkout": name, "best_ms_per_message": min(values),
                              "baseline_best_ms_per_message": base,
                              "ratio_to_first": round(min(values) / base, 3)}))
    return 0 if all(r["seq_rule"] == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
