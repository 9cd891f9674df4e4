"""Data-path benchmarks: backlog drain vs a naive sender, tap to durable, live ingest.

Run by hand (never in the test suite); figures go to docs/benchmarks.md:

    .venv/bin/python bench/bench_datapath.py all
    .venv/bin/python bench/bench_datapath.py drain --ratings 50000 --rounds 5 [--window 16]
    .venv/bin/python bench/bench_datapath.py handle --ratings 50000 --rounds 5
    .venv/bin/python bench/bench_datapath.py plan --ratings 50000 --rounds 7
    .venv/bin/python bench/bench_datapath.py tap --taps 20000
    .venv/bin/python bench/bench_datapath.py ingest --terminals 100 --seconds 20 --rate 100
    .venv/bin/python bench/bench_datapath.py live --terminals 100 --seconds 20 --rate 100

Every run uses a private mosquitto and a real `onetap-server run` process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as mqtt  # noqa: E402

from kiosk import protocol  # noqa: E402
from kiosk.outbox import Outbox  # noqa: E402
from kiosk.uplink import Uplink  # noqa: E402
from tests.broker import Mosquitto  # noqa: E402
from tests.server_process import ServerProcess  # noqa: E402

BIN = Path(sys.executable).parent


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


def stored(db: Path) -> int:
    with sqlite3.connect(db, timeout=30) as conn:
        return conn.execute("SELECT count(*) FROM ratings").fetchone()[0]


def commit_times(db: Path) -> tuple[list[tuple[str, str]], list[float], float]:
    """Every stored rating's (at, received_at), its tap-to-commit ms, and the seconds
    between the first and last commit (the span a sustained rate is taken over)."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT at, received_at FROM ratings").fetchall()
    latencies = [
        (datetime.fromisoformat(received) - datetime.fromisoformat(at)).total_seconds() * 1000
        for at, received in rows
    ]
    received = sorted(datetime.fromisoformat(r) for _, r in rows)
    return rows, latencies, (received[-1] - received[0]).total_seconds() or 1


def bench_drain(ratings: int, workdir: Path, rounds: int = 1, chained: bool = False,
                window: int | None = None) -> dict:
    """A terminal holding *ratings* unacked ratings reconnects: time to the last Ack (the
    server Acks after its commit, so this bounds uplink start to the last commit from
    above), against the Store's own ceiling for the same ratings and a naive sender.

    Each of *rounds* measures the three in turn (a fresh copy of the backlog, a fresh
    database, broker and server), so the ratios are taken within a round: on a machine
    whose disk or processor speed swings from minute to minute, one run's ratio says
    which side met the slow minute. The summary gives the medians of the rounds.

    *chained*: the audit chain on (each rating chained at release, each batch head
    signed with a provisioned key, the server verifying against its registry); the
    drain alone then, without the ceiling and the naive sender. *window*: the
    uplink's batches in flight (None: its default)."""
    name = "drain-chained" if chained else "drain"
    backlog = workdir / name / "backlog.db"
    backlog.parent.mkdir(parents=True)
    seed = key = None
    server_args: tuple[str, ...] = ()
    if chained:
        from kiosk.config import load_config
        from kiosk.uplink import load_signing_key
        from server.provision import provision_terminal

        account = provision_terminal("bench", "drain-01", "mqtt://127.0.0.1:1883", workdir / name / "passwd",
                                     workdir / name / "acl", workdir / name / "kiosk")
        kiosk = load_config(account.config_path, env={})
        seed, key = kiosk.chain_seed, load_signing_key(kiosk.key_path)
        (workdir / name / "server.toml").write_text(f'registry = "{workdir / name / "acl"}"\n')
        server_args = ("--config", str(workdir / name / "server.toml"))
    outbox = Outbox.open(backlog, chain_seed=seed)
    # Build the backlog fast (the figure measured is the drain, not the taps).
    for _ in range(ratings):
        outbox.record(4, clock_synced=True)
    # The ceiling's ratings (a chained drain measures no ceiling).
    batches = None if chained else [protocol.decode_batch(p).ratings for p in backlog_payloads(outbox)]
    outbox.close()
    results = []
    for index in range(rounds):
        round_dir = workdir / name / f"round-{index + 1}"
        round_dir.mkdir()
        path = round_dir / "outbox.db"
        with contextlib.closing(sqlite3.connect(backlog)) as source, \
                contextlib.closing(sqlite3.connect(path)) as copy:
            source.backup(copy)
        result: dict = {"round": index + 1}
        if not chained:
            result["store_ceiling_seconds"], result["store_ingest_only_seconds"] = bench_store_ceiling(
                batches, round_dir / "ceiling.db")
        with Mosquitto(round_dir / "broker") as broker:
            server = ServerProcess(broker, round_dir, args=server_args).start()
            try:
                uplink = Uplink(lambda: Outbox.open(path), site="bench", terminal="drain-01",
                                broker_url=broker.url, ack_timeout=30, signing_key=key,
                                **({} if window is None else {"window": window}))
                with AckWatch(broker) as acks:
                    started = time.perf_counter()
                    uplink.start()
                    drained = uplink.wait_idle(600)
                    result["drain_idle_seconds"] = time.perf_counter() - started
                    # The server Acks each batch after its commit: the Ack that names
                    # the last of the backlog marks the commit of its last rating.
                    result["drain_seconds"] = acks.time_all_named(ratings) - started
                uplink.stop()
                assert drained and stored(server.db) == ratings, "drain incomplete"
            finally:
                server.stop()
            if not chained:
                result["naive_seconds"] = bench_naive(broker, ratings)
        if not chained:
            result["drain_share_of_ceiling"] = result["store_ceiling_seconds"] / result["drain_seconds"]
            # The ceiling without the roll-up (the counts left queued): the stricter figure.
            result["drain_share_of_ingest_only"] = result["store_ingest_only_seconds"] / result["drain_seconds"]
            result["speedup"] = result["naive_seconds"] / result["drain_seconds"]
        results.append({k: round(v, 3) for k, v in result.items()})
        print(json.dumps({name + "_round": results[-1]}), file=sys.stderr, flush=True)
    medians = {f"median_{k}": round(statistics.median(r[k] for r in results), 3)
               for k in results[0] if k != "round"}
    return {"chained": chained, "ratings": ratings, "rounds": results, **medians,
            "median_drain_per_s": round(ratings / medians["median_drain_seconds"])}


class AckWatch:
    """The time each of the drain terminal's Acks reaches a client of its own on the
    broker (QoS 0: it adds no PUBACK to the server's work; the callback only keeps
    the time and payload, decoded afterwards, so the uplink sharing this process is
    not slowed)."""

    def __init__(self, broker: Mosquitto):
        self.received: list[tuple[float, bytes]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-ack-watch",
                                  protocol=mqtt.MQTTv5)
        self.client.on_message = lambda client, userdata, message: self.received.append(
            (time.perf_counter(), message.payload))
        self.broker = broker

    def __enter__(self) -> "AckWatch":
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect("127.0.0.1", self.broker.port)
        self.client.loop_start()
        self.client.subscribe(protocol.topic("bench", "drain-01", protocol.ACK), qos=0)
        assert subscribed.wait(10), "the Ack watch was not subscribed"
        return self

    def __exit__(self, *exc) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def time_all_named(self, count: int, timeout: float = 10) -> float:
        """When the Ack came that made *count* distinct rating ids named (the last
        Acks may reach this client after the uplink's: waits up to *timeout* for them)."""
        named: set[str] = set()
        seen = 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, payload in self.received[seen:]:
                seen += 1
                named |= protocol.Ack.decode(payload).ids
                if len(named) >= count:
                    return at
            time.sleep(0.01)
        raise AssertionError(f"the Acks named {len(named)} of {count} ratings")


def backlog_payloads(outbox: Outbox) -> list[bytes]:
    """The batches the drain's terminal sends of *outbox*'s backlog, as the uplink cuts them."""
    payloads, after = [], 0
    while rows := outbox.pending(limit=protocol.MAX_BATCH_RATINGS, after_rowid=after):
        after = rows[-1][0]
        payloads.append(protocol.encode_batch("bench", "drain-01", [r[2] for r in rows]))
    return payloads


def bench_store_ceiling(batches: list, db: Path) -> tuple[float, float]:
    """The server's own ingest ceiling for the drain's ratings: the Store alone (a fresh
    SQLite database, as the server's), ingest_batch of each 500 in its own commit.
    The ratings are decoded beforehand: the figure is the store's, not JSON's.
    Returns the seconds with the roll-up and without it."""
    from datetime import timezone

    from server.store import SQLiteStore

    store = SQLiteStore.open(db)
    try:
        started = time.perf_counter()
        for ratings in batches:
            store.ingest_batch("bench", "drain-01", ratings, datetime.now(timezone.utc))
        ingest_only = time.perf_counter() - started
        # The same work is not done until the queued counts are in the rollups
        # (code without the queue wrote them in each commit): the ceiling counts it.
        while getattr(store, "roll_up", lambda: 0)():
            pass
        return time.perf_counter() - started, ingest_only
    finally:
        store.close()


def bench_handle(ratings: int, workdir: Path, rounds: int, per_commit: int = 3) -> dict:
    """The drain's server work without MQTT: Ingest.handle of the drain's encoded
    500-rating batches, *per_commit* to a commit (as the drain's ingest thread takes
    them) with each Ack encoded, against the Store's ingest of the same ratings
    decoded beforehand, alternating, each in a fresh database. Processor time of
    this process, so a slow fsync does not enter; the median of *rounds*."""
    from datetime import timezone

    from server.ingest import Ingest
    from server.store import SQLiteStore

    (workdir / "handle").mkdir()
    outbox = Outbox.open(workdir / "handle" / "outbox.db")
    for _ in range(ratings):
        outbox.record(4, clock_synced=True)
    payloads = backlog_payloads(outbox)
    outbox.close()
    decoded = [protocol.decode_batch(p).ratings for p in payloads]
    topic = protocol.topic("bench", "drain-01", protocol.RATINGS)
    store_cpu, handle_cpu = [], []
    for index in range(rounds):
        store = SQLiteStore.open(workdir / "handle" / f"store-{index}.db")
        started = time.process_time()
        for batch in decoded:
            store.ingest_batch("bench", "drain-01", batch, datetime.now(timezone.utc))
        store_cpu.append(time.process_time() - started)
        store.close()
        store = SQLiteStore.open(workdir / "handle" / f"handle-{index}.db")
        ingest = Ingest(store)
        started = time.process_time()
        for start in range(0, len(payloads), per_commit):
            for _, ack in ingest.handle([(topic, p) for p in payloads[start:start + per_commit]]):
                ack.encode()
        handle_cpu.append(time.process_time() - started)
        assert stored(workdir / "handle" / f"handle-{index}.db") == ratings, "handle stored too few"
        store.close()
    return {
        "ratings": ratings,
        "rounds": rounds,
        "store_cpu_seconds": [round(x, 3) for x in store_cpu],
        "handle_cpu_seconds": [round(x, 3) for x in handle_cpu],
        "store_share_of_handle": [round(a / b, 3) for a, b in zip(store_cpu, handle_cpu)],
        "median_share": round(statistics.median(a / b for a, b in zip(store_cpu, handle_cpu)), 3),
    }


def bench_plan(ratings: int, workdir: Path, rounds: int, per_commit: int = 3) -> dict:
    """The store's work in Python for the drain's ratings, without the database: the
    ingest plan (bucket, row, first sighting) of the drain's decoded batches,
    *per_commit* to a call, and the counts of its rollup keys. Processor time,
    each round in full, the median of *rounds*."""
    from datetime import timezone
    from zoneinfo import ZoneInfo

    from server import store as store_module

    (workdir / "plan").mkdir()
    outbox = Outbox.open(workdir / "plan" / "outbox.db")
    for _ in range(ratings):
        outbox.record(4, clock_synced=True)
    decoded = [protocol.decode_batch(p).ratings for p in backlog_payloads(outbox)]
    outbox.close()
    seconds = []
    for _ in range(rounds):
        buckets = store_module.Buckets(ZoneInfo("Asia/Seoul"))
        received_at = datetime.now(timezone.utc)
        started = time.process_time()
        for start in range(0, len(decoded), per_commit):
            batches = [("bench", "drain-01", batch) for batch in decoded[start:start + per_commit]]
            plan = store_module.IngestPlan(batches, received_at, buckets)
            if hasattr(plan, "counts"):
                plan.counts(set(plan.rows))
            else:  # a checkout before IngestPlan.counts: the loop ingest_many ran then
                counts: dict = {}
                for identity in set(plan.rows):
                    key = store_module._rollup_key(plan.rows[identity], 0)
                    counts[key] = counts.get(key, 0) + 1
        seconds.append(time.process_time() - started)
    return {"ratings": ratings, "rounds": rounds, "cpu_seconds": [round(x, 3) for x in seconds],
            "median_cpu_seconds": round(statistics.median(seconds), 3)}


def bench_naive(broker: Mosquitto, ratings: int) -> float:
    """One QoS 1 message per rating, waiting for each PUBACK (what most senders do)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="naive-01",
                         protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        items = [protocol.Rating(f"00000000-0000-4000-8000-{i:012x}", i + 1, 4,
                                 "2026-11-27T10:00:00.000+09:00", True).encode()
                 for i in range(ratings)]
        topic = protocol.topic("bench", "naive-01", "ratings")
        started = time.perf_counter()
        for item in items:
            info = client.publish(topic, protocol.encode_batch("bench", "naive-01", [item]), qos=1)
            info.wait_for_publish(30)
        return time.perf_counter() - started
    finally:
        client.loop_stop()
        client.disconnect()


def bench_tap(taps: int, workdir: Path, chained: bool = False) -> dict:
    """Recording one tap in the outbox: one FULL commit, on this machine's disk
    (*chained*: the rating chained in the same commit, as a tap without follow-up is)."""
    name = "tap-chained" if chained else "tap"
    (workdir / name).mkdir()
    seed = protocol.default_chain_seed("bench", "tap-01") if chained else None
    outbox = Outbox.open(workdir / name / "outbox.db", chain_seed=seed)
    durations = []
    for i in range(taps):
        started = time.perf_counter()
        outbox.record(1 + i % 5, clock_synced=True)
        durations.append((time.perf_counter() - started) * 1000)
    return {
        "taps": taps,
        "p50_ms": round(statistics.median(durations), 3),
        "p99_ms": round(percentile(durations, 99), 3),
        "max_ms": round(max(durations), 3),
    }


def bench_live(terminals: int, seconds: float, rate: float, workdir: Path) -> dict:
    """*terminals* simulated terminals tapping *rate* taps/s each, together."""
    taps = int(seconds * rate)
    with Mosquitto(workdir / "broker-live") as broker:
        (workdir / "live-server").mkdir()
        server = ServerProcess(broker, workdir / "live-server").start()
        try:
            started = time.perf_counter()
            # Two processes share the terminals: one Python process cannot do
            # 10,000 FULL commits a second alongside 100 uplinks on its own.
            half = terminals // 2
            procs = [
                subprocess.Popen(
                    [str(BIN / "onetap-kiosk"), "simulate", "--broker", broker.url,
                     "--site", f"live{n}", "--terminals", str(count), "--taps", str(taps),
                     "--rate", str(rate), "--data-dir", str(workdir / f"live-kiosks-{n}"),
                     "--timeout", "120"],
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                for n, count in enumerate((half, terminals - half))
            ]
            results = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
            wall = time.perf_counter() - started
        finally:
            server.stop()
    rows, latencies, span = commit_times(server.db)
    return {
        "terminals": terminals,
        "taps_each": taps,
        "stored": len(rows),
        "pending": sum(r["pending"] for r in results),
        "offered_per_s": round(terminals * rate),
        "sustained_per_s": round(len(rows) / span),
        "tap_to_commit_p50_ms": round(statistics.median(latencies), 1),
        "tap_to_commit_p99_ms": round(percentile(latencies, 99), 1),
        "wall_seconds": round(wall, 1),
    }


def bench_ingest(terminals: int, seconds: float, rate: float, workdir: Path) -> dict:
    """The server alone under *terminals* live terminals, each sending every tap at once.

    A light load generator stands in for the kiosks (one paho client per
    terminal, one-rating batches, as an uplink sends a fresh tap), so that the
    figure is the server's, not the load generator's disk.
    """
    import uuid

    taps = int(seconds * rate)
    with Mosquitto(workdir / "broker-ingest") as broker:
        (workdir / "ingest-server").mkdir()
        server = ServerProcess(broker, workdir / "ingest-server").start()
        acked = [0]
        lock = threading.Lock()

        def on_message(client, userdata, message):
            ack = protocol.Ack.decode(message.payload)
            with lock:
                acked[0] += len(ack.ids)

        clients = []
        for n in range(terminals):
            terminal = f"load-{n:03d}"
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=terminal,
                                 protocol=mqtt.MQTTv5)
            client.on_message = on_message
            client.connect("127.0.0.1", broker.port)
            client.subscribe(protocol.topic("ingest", terminal, "ack"), qos=1)
            client.loop_start()
            clients.append((terminal, client))
        time.sleep(1)
        try:
            started = time.perf_counter()
            interval = 1 / rate
            for tick in range(taps):
                due = started + tick * interval
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                at = protocol.format_timestamp(datetime.now().astimezone())
                for terminal, client in clients:
                    rating = protocol.Rating(str(uuid.uuid4()), tick + 1, 1 + tick % 5, at, True)
                    client.publish(protocol.topic("ingest", terminal, "ratings"),
                                   protocol.encode_batch("ingest", terminal, [rating.encode()]),
                                   qos=1)
            offered_seconds = time.perf_counter() - started
            deadline = time.monotonic() + 120
            while acked[0] < taps * terminals and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            for _, client in clients:
                client.loop_stop()
                client.disconnect()
            server.stop()
    rows, latencies, span = commit_times(server.db)
    return {
        "terminals": terminals,
        "offered_per_s": round(terminals * taps / offered_seconds),
        "stored": len(rows),
        "acked": acked[0],
        "sustained_per_s": round(len(rows) / span),
        "tap_to_commit_p50_ms": round(statistics.median(latencies), 1),
        "tap_to_commit_p99_ms": round(percentile(latencies, 99), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=("drain", "handle", "plan", "tap", "live", "ingest", "all"))
    parser.add_argument("--ratings", type=int, default=50_000)
    parser.add_argument("--taps", type=int, default=20_000)
    parser.add_argument("--terminals", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--window", type=int, help="drain: the uplink's batches in flight (default: its own)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="onetap-bench-") as tmp:
        workdir = Path(tmp)
        if args.which in ("tap", "all"):
            print(json.dumps({"tap": bench_tap(args.taps, workdir)}), flush=True)
            print(json.dumps({"tap_chained": bench_tap(args.taps, workdir, chained=True)}), flush=True)
        if args.which in ("drain", "all"):
            print(json.dumps({"drain": bench_drain(args.ratings, workdir, args.rounds, window=args.window)}),
                  flush=True)
            print(json.dumps({"drain": bench_drain(args.ratings, workdir, chained=True, window=args.window)}),
                  flush=True)
        if args.which in ("handle", "all"):
            print(json.dumps({"handle": bench_handle(args.ratings, workdir, args.rounds)}), flush=True)
        if args.which in ("plan", "all"):
            print(json.dumps({"plan": bench_plan(args.ratings, workdir, args.rounds)}), flush=True)
        if args.which in ("ingest", "all"):
            print(json.dumps({"ingest": bench_ingest(args.terminals, args.seconds, args.rate,
                                                     workdir)}), flush=True)
        if args.which in ("live", "all"):
            print(json.dumps({"live": bench_live(args.terminals, args.seconds, args.rate, workdir)}),
                  flush=True)


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
