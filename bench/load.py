"""Load test: thousands of simulated terminals on one broker, ingest workers, SQLite or PostgreSQL.

Run by hand (never in the test suite); figures go to docs/benchmarks.md:

    .venv/bin/python bench/load.py --backend postgres --workers 2 --terminals 2000 \\
        --phases 67:60,2500:30,5000:30,7500:30
    .venv/bin/python bench/load.py --backend sqlite --workers 1 --phases 67:600   # soak

Each terminal is one MQTT connection (a minimal asyncio MQTT 3.1.1 client, a
few processes of them) that behaves like the kiosk's uplink: a tap goes to
its outbox; whatever is pending goes out as one protocol-valid RatingBatch
while fewer than --window batches are unanswered (default 1: only when
nothing is in flight; the kiosk's uplink allows 8); a batch without an Ack
after --ack-timeout is sent again (same ids). Tap to Ack is measured per rating (the server Acks only
after the commit, so it bounds tap to commit from above). A phase is
"RATE:SECONDS" in taps/s over all terminals. At the end the database is
checked with the seq rule: per terminal, seqs 1..N with no gap, no repeat.
Private mosquitto (deploy/mosquitto/onetap.conf), real `onetap-server run
--role ingest` processes, its own database (dropped afterwards; PostgreSQL at
ONETAP_BENCH_POSTGRES, default as the tests', synchronous_commit on).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import resource
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kiosk import protocol  # noqa: E402
from server.process import stop_process  # noqa: E402
from tests.backends import PostgresDatabase  # noqa: E402
from tests.broker import Mosquitto  # noqa: E402

BIN = Path(sys.executable).parent
KST = timezone(timedelta(hours=9))
SITE = "load"

# -- a minimal MQTT 3.1.1 client (QoS 1 publish, one subscription) ------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def _packet(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + _varint(len(body)) + body


class Terminal:
    """One simulated kiosk: an outbox, up to *window* batches in flight (the
    kiosk's uplink sends each tap at once while fewer than its window of 8 are
    unanswered; 1: a batch only when nothing is in flight), resend on timeout."""

    def __init__(self, name: str, port: int, ack_timeout: float, stats: dict, window: int = 1):
        self.name = name
        self.port = port
        self.ack_timeout = ack_timeout
        self.stats = stats
        self.window = window
        self.seq = 0
        self.pending: dict[str, tuple[int, float, str]] = {}  # id -> (seq, tap time, json)
        self.unsent: list[str] = []
        #: Batches sent and not wholly Acked: [sent at, ids].
        self.in_flight: list[list] = []
        self.packet_id = 0
        self.writer: asyncio.StreamWriter | None = None
        self.topic = protocol.topic(SITE, name, "ratings")

    async def connect(self) -> None:
        reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        body = _str("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 0) + _str(f"load-{self.name}")
        self.writer.write(_packet(0x10, body))
        header = await reader.readexactly(4)
        assert header[0] == 0x20 and header[3] == 0, f"CONNACK {header!r}"
        ack_topic = protocol.topic(SITE, self.name, "ack")
        self.writer.write(_packet(0x82, struct.pack("!H", 1) + _str(ack_topic) + b"\x01"))
        suback = await reader.readexactly(5)
        assert suback[0] == 0x90 and suback[4] == 1, f"SUBACK {suback!r}"
        asyncio.get_running_loop().create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while True:
            first = (await reader.readexactly(1))[0]
            length, shift = 0, 0
            while True:
                byte = (await reader.readexactly(1))[0]
                length += (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            body = await reader.readexactly(length)
            if first >> 4 == 3:  # PUBLISH: an Ack
                tlen = struct.unpack("!H", body[:2])[0]
                offset = 2 + tlen
                if (first >> 1) & 3:
                    pid = body[offset:offset + 2]
                    offset += 2
                    self.writer.write(b"\x40\x02" + pid)
                self._on_ack(protocol.Ack.decode(body[offset:]))

    def _on_ack(self, ack: protocol.Ack) -> None:
        now = time.monotonic()
        for rid in (*ack.accepted, *ack.duplicate):
            item = self.pending.pop(rid, None)
            if item is not None:
                self.stats["latencies"].append(now - item[1])
                self.stats["confirmed"] += 1
        self.stats["duplicates"] += len(ack.duplicate)
        self.stats["rejected"] += len(ack.rejected)
        self.in_flight = [batch for batch in self.in_flight if any(i in self.pending for i in batch[1])]
        self._fill()

    def tap(self) -> None:
        self.seq += 1
        rid = str(uuid.uuid4())
        at = protocol.format_timestamp(datetime.now(KST))
        rating = protocol.Rating(rid, self.seq, random.randint(1, 5), at, True,
                                 lang=random.choice(("ko", "ko", "ko", "en")))
        self.pending[rid] = (self.seq, time.monotonic(), rating.encode())
        self.unsent.append(rid)
        self.stats["taps"] += 1
        self._fill()

    def _fill(self) -> None:
        while len(self.in_flight) < self.window and self.unsent:
            ids = [i for i in self.unsent if i in self.pending][:protocol.MAX_BATCH_RATINGS]
            self.unsent = self.unsent[len(ids):] if ids else []
            self._send(ids)

    def _send(self, ids: list[str]) -> None:
        if not ids:
            return
        self.in_flight.append([time.monotonic(), ids])
        payload = protocol.encode_batch(SITE, self.name, [self.pending[i][2] for i in ids])
        self.packet_id = self.packet_id % 65535 + 1
        body = _str(self.topic) + struct.pack("!H", self.packet_id) + payload
        self.writer.write(_packet(0x32, body))
        self.stats["batches"] += 1

    def check_timeout(self, now: float) -> None:
        late = [batch for batch in self.in_flight if now - batch[0] > self.ack_timeout]
        if not late:
            return
        self.in_flight = [batch for batch in self.in_flight if batch not in late]
        for _, ids in late:
            self.stats["resends"] += 1
            self._send([i for i in ids if i in self.pending])
        self._fill()


def generator(names: list[str], port: int, phases: list[tuple[float, float]], share: float,
              ack_timeout: float, start_at: float, results, window: int = 1) -> None:
    """One process of terminals: taps at share * phase rate, Poisson arrivals."""
    raise_fd_limit()

    async def main() -> None:
        stats = {"latencies": [], "taps": 0, "confirmed": 0, "duplicates": 0, "rejected": 0,
                 "batches": 0, "resends": 0}
        terminals = [Terminal(n, port, ack_timeout, stats, window) for n in names]
        for start in range(0, len(terminals), 100):
            await asyncio.gather(*(t.connect() for t in terminals[start:start + 100]))
        results.put(("connected", len(terminals)))
        await asyncio.sleep(max(0.0, start_at - time.time()))
        rng = random.Random()
        for index, (rate, seconds) in enumerate(phases):
            stats.update(latencies=[], taps=0, confirmed=0, duplicates=0, batches=0, resends=0)
            cpu0 = time.process_time()
            begin = time.monotonic()
            end = begin + seconds
            my_rate = rate * share
            tapped = 0
            next_check = begin
            while (now := time.monotonic()) < end:
                # Taps spread evenly over the phase, on random terminals of this process.
                due = int(my_rate * (now - begin)) - tapped
                for _ in range(due):
                    rng.choice(terminals).tap()
                tapped += due
                if now >= next_check:
                    for t in terminals:
                        t.check_timeout(now)
                    next_check = now + 1.0
                await asyncio.sleep(0.005)
            results.put(("phase", index, {k: v for k, v in stats.items()},
                         time.process_time() - cpu0))
        # Drain: wait for every Ack (resending as needed).
        deadline = time.monotonic() + 120
        while any(t.pending for t in terminals) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            for t in terminals:
                t.check_timeout(now)
        results.put(("done", {t.name: t.seq for t in terminals}, sum(len(t.pending) for t in terminals)))

    asyncio.run(main())


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, 65536) if hard == resource.RLIM_INFINITY else want, hard))


# -- measuring ---------------------------------------------------------------------


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User+system CPU of process *pid*, or of its thread *thread* (0.0 once gone)."""
    stat = Path(f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat")
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError):
        return 0.0


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def postgres_pids() -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    out.append(int(entry.name))
            except OSError:
                continue
    return out


class Database:
    def __init__(self, backend: str, directory: Path):
        self.backend = backend
        if backend == "postgres":
            # durable: every commit waits for the disk, as in production.
            self.pg = PostgresDatabase(os.environ.get("ONETAP_BENCH_POSTGRES")).create(durable=True)
            self.url: str | Path = self.pg.url
        else:
            self.pg = None
            self.url = directory / "load.db"

    def query(self, sql: str) -> list[tuple]:
        if self.pg is not None:
            import psycopg
            with psycopg.connect(self.url, autocommit=True) as conn:
                return conn.execute(sql).fetchall()
        import sqlite3
        with sqlite3.connect(self.url, timeout=30) as conn:
            return conn.execute(sql).fetchall()

    def count(self) -> int:
        try:
            return self.query("SELECT count(*) FROM ratings")[0][0]
        except Exception:  # noqa: BLE001 - not created yet
            return 0

    def drop(self) -> None:
        if self.pg is not None:
            self.pg.drop()


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="postgres")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--terminals", type=int, default=2000)
    parser.add_argument("--procs", type=int, default=2, help="load generator processes")
    parser.add_argument("--phases", default="67:60,2500:30,5000:30",
                        help="RATE:SECONDS,... taps/s over all terminals")
    parser.add_argument("--ack-timeout", type=float, default=10.0)
    parser.add_argument("--window", type=int, default=1,
                        help="batches in flight per terminal (the kiosk's uplink: 8)")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    phases = [tuple(float(x) for x in p.split(":")) for p in args.phases.split(",")]
    raise_fd_limit()  # inherited by mosquitto: one descriptor per terminal

    directory = Path(tempfile.mkdtemp(prefix="onetap-load-"))
    broker = Mosquitto(directory / "broker").start()
    db = Database(args.backend, directory)
    workers: list[subprocess.Popen] = []
    report: dict = {"backend": args.backend, "workers": args.workers, "terminals": args.terminals,
                    "window": args.window, "phases": []}
    try:
        for i in range(args.workers):
            log = directory / f"worker{i}.log"
            workers.append(subprocess.Popen(
                [str(BIN / "onetap-server"), "run", "--role", "ingest", "--broker", broker.url,
                 "--db", str(db.url), "--log-level", "WARNING"],
                stdout=subprocess.DEVNULL, stderr=open(log, "ab")))
            # Let the first one migrate the database alone.
            time.sleep(2.0 if i == 0 else 0.5)
        time.sleep(2.0)
        for w in workers:
            assert w.poll() is None, "an ingest worker died at start"
        names = [f"k{i:05d}" for i in range(args.terminals)]
        results: multiprocessing.Queue = multiprocessing.Queue()
        start_at = time.time() + 15 + args.terminals / 200
        procs = [multiprocessing.Process(
            target=generator, args=(names[k::args.procs], broker.port, phases, 1 / args.procs,
                                    args.ack_timeout, start_at, results, args.window), daemon=True)
            for k in range(args.procs)]
        for p in procs:
            p.start()
        connected = 0
        while connected < args.terminals:
            kind, n = results.get(timeout=120)[:2]
            connected += n
        print(f"{connected} terminals connected", file=sys.stderr)
        time.sleep(max(0.0, start_at - time.time()))
        pg = postgres_pids() if args.backend == "postgres" else []
        gen_pids = [p.pid for p in procs]
        rss_samples = []
        for index, (rate, seconds) in enumerate(phases):
            c0 = db.count()
            cpu0 = {pid: cpu_seconds(pid) for pid in [w.pid for w in workers] + [broker.process.pid] + pg}
            t0 = time.monotonic()
            end = t0 + seconds
            while time.monotonic() < end:
                time.sleep(min(args.sample, max(0.0, end - time.monotonic())))
                rss_samples.append((round(time.monotonic() - t0 + sum(s for _, s in phases[:index]), 1),
                                    [round(rss_mb(w.pid), 1) for w in workers],
                                    round(rss_mb(broker.process.pid), 1)))
            elapsed = time.monotonic() - t0
            c1 = db.count()
            cpu = {pid: cpu_seconds(pid) - cpu0[pid] for pid in cpu0}
            worker_cpu = sum(cpu[w.pid] for w in workers)
            pg_cpu = sum(cpu[p] for p in pg)
            stored_rate = (c1 - c0) / elapsed
            report["phases"].append({
                "rate": rate, "seconds": seconds, "stored_per_s": round(stored_rate),
                "worker_cpu_s_per_s": round(worker_cpu / elapsed, 3),
                "postgres_cpu_s_per_s": round(pg_cpu / elapsed, 3),
                "broker_cpu_s_per_s": round(cpu[broker.process.pid] / elapsed, 3),
            })
            print(json.dumps(report["phases"][-1]), file=sys.stderr)
        done = 0
        taps_by_terminal: dict[str, int] = {}
        left = 0
        while done < args.procs:
            item = results.get(timeout=300)
            if item[0] == "phase":
                _, index, stats, gen_cpu = item
                phase = report["phases"][index]
                phase.setdefault("latencies", []).extend(stats["latencies"])
                for key in ("taps", "confirmed", "duplicates", "batches", "resends"):
                    phase[key] = phase.get(key, 0) + stats[key]
                phase["generator_cpu_s"] = round(phase.get("generator_cpu_s", 0) + gen_cpu, 1)
            elif item[0] == "done":
                taps_by_terminal.update(item[1])
                left += item[2]
                done += 1
        for phase in report["phases"]:
            lat = phase.pop("latencies", [])
            phase["tap_to_ack_p50_ms"] = round(1000 * percentile(lat, 50), 1) if lat else None
            phase["tap_to_ack_p99_ms"] = round(1000 * percentile(lat, 99), 1) if lat else None
            phase["tap_to_ack_max_ms"] = round(1000 * max(lat), 1) if lat else None
            rate = phase["stored_per_s"]
            cpu = phase["worker_cpu_s_per_s"] + phase["postgres_cpu_s_per_s"]
            phase["server_cpu_s_per_1000_ratings"] = round(cpu / rate * 1000, 3) if rate else None
        # The seq rule over the whole run.
        rows = db.query(f"SELECT terminal, count(*), count(DISTINCT seq), min(seq), max(seq),"
                        f" count(DISTINCT id) FROM ratings WHERE site = '{SITE}' GROUP BY terminal")
        bad = [r for r in rows if not (r[1] == r[2] == r[4] == r[5] == taps_by_terminal.get(r[0])
                                       and r[3] == 1)]
        missing = [t for t, n in taps_by_terminal.items() if n and t not in {r[0] for r in rows}]
        report["taps_total"] = sum(taps_by_terminal.values())
        report["stored_total"] = sum(r[1] for r in rows)
        report["unconfirmed_at_end"] = left
        report["seq_rule"] = "ok" if not bad and not missing else f"{len(bad)} bad, {len(missing)} missing"
        report["rss_mb"] = {"first": rss_samples[0] if rss_samples else None,
                            "last": rss_samples[-1] if rss_samples else None,
                            "max_worker": max((max(s[1]) for s in rss_samples), default=None)}
        report["rss_samples"] = rss_samples
        for p in procs:
            p.join(10)
        print(json.dumps({k: v for k, v in report.items() if k != "rss_samples"}, indent=1))
        if args.json:
            args.json.write_text(json.dumps(report, indent=1))
        return 0 if report["seq_rule"] == "ok" and not left else 1
    finally:
        for w in workers:
            stop_process(w, timeout=15)
        broker.stop()
        db.drop()


if __name__ == "__main__":
    sys.exit(main())
