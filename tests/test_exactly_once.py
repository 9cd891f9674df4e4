"""End to end, real processes: every tap counted exactly once under every fault.

Each test runs the real `onetap-kiosk simulate` and `onetap-server run` as
subprocesses against a private mosquitto, breaks something with kill -9, and
then checks the server's database: ids unique, and per terminal the seqs run
1..M with no gap and no repeat, and the simulator reports nothing pending.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from kiosk import protocol
from tests.broker import Mosquitto
from tests.server_process import ServerProcess
from tests.waiting import wait_for

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def simulate(broker_url: str, data_dir: Path, terminals: int, taps: int, *, timeout: float = 60,
             rate: float | None = None, wait: bool = True, site: str = "e2e"):
    args = [str(BIN / "onetap-kiosk"), "simulate", "--broker", broker_url, "--site", site,
            "--terminals", str(terminals), "--taps", str(taps), "--data-dir", str(data_dir),
            "--timeout", str(timeout)]
    if rate:
        args += ["--rate", str(rate)]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return process
    out, err = process.communicate(timeout=timeout + 120)
    return process.returncode, out, err


def finished(process: subprocess.Popen, timeout: float = 240) -> str:
    """A simulator started with wait=False, once it ended well: its output."""
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-2000:]
    return out


def summary_of(out: str) -> dict:
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines, "simulate printed no summary"
    return json.loads(lines[-1])


def assert_exactly_once(db: Path, site: str, terminals: int, taps: int) -> None:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT id, terminal, seq FROM ratings WHERE site = ?", (site,)).fetchall()
    ids = [row[0] for row in rows]
    assert len(ids) == len(set(ids)), "a rating id was stored twice"
    seqs = defaultdict(list)
    for _, terminal, seq in rows:
        seqs[terminal].append(seq)
    assert len(seqs) == terminals, f"expected {terminals} terminals, got {sorted(seqs)}"
    for terminal, found in seqs.items():
        assert sorted(found) == list(range(1, taps + 1)), (
            f"{terminal}: {len(found)} ratings, {len(set(found))} distinct seqs, "
            f"missing {sorted(set(range(1, taps + 1)) - set(found))[:10]}")


def stored_count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute("SELECT count(*) FROM ratings").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


@pytest.fixture
def broker(tmp_path):
    b = Mosquitto(tmp_path / "broker").start()
    yield b
    b.stop()


@pytest.fixture
def server(broker, tmp_path):
    s = ServerProcess(broker, tmp_path).start()
    yield s
    s.stop()


def test_plain_run_counts_everything_once(broker, server, tmp_path):
    code, out, err = simulate(broker.url, tmp_path / "kiosks", terminals=3, taps=400)
    assert code == 0, err[-2000:]
    assert summary_of(out) | {"seconds": 0} == {"taps": 1200, "confirmed": 1200, "pending": 0, "seconds": 0}
    assert_exactly_once(server.db, "e2e", 3, 400)


def test_duplicate_batches_are_counted_once(broker, server):
    """A batch sent three times (as a kiosk does after lost Acks) is stored once."""
    ratings = [protocol.Rating(str(uuid.uuid4()), seq, 4, "2026-11-27T10:00:00.000+09:00", True)
               for seq in range(1, 11)]
    payload = protocol.encode_batch("e2e", "dup-01", [r.encode() for r in ratings])
    acks = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="dup-01", protocol=mqtt.MQTTv5)
    client.on_message = lambda c, u, m: acks.append(protocol.Ack.decode(m.payload))
    subscribed = threading.Event()
    client.on_subscribe = lambda *args: subscribed.set()
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        client.subscribe(protocol.topic("e2e", "dup-01", "ack"), qos=1)
        assert subscribed.wait(10)
        for _ in range(3):
            client.publish(protocol.topic("e2e", "dup-01", "ratings"), payload, qos=1)
        wait_for(lambda: len(acks) >= 3, "three Acks", timeout=30)
    finally:
        client.loop_stop()
        client.disconnect()
    ids = {r.id for r in ratings}
    assert set(acks[0].accepted) == ids
    assert all(set(ack.duplicate) == ids and not ack.accepted for ack in acks[1:])
    assert_exactly_once(server.db, "e2e", 1, 10)


def test_simulator_killed_mid_burst_resumes(broker, server, tmp_path):
    data = tmp_path / "kiosks"
    process = simulate(broker.url, data, terminals=2, taps=3000, wait=False)
    wait_for(lambda: stored_count(server.db) > 300, "the first ratings to arrive", timeout=60)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert stored_count(server.db) < 6000, "the kill came too late to test anything"
    code, out, err = simulate(broker.url, data, terminals=2, taps=3000)
    assert code == 0, err[-2000:]
    summary = summary_of(out)
    assert (summary["taps"], summary["pending"]) == (6000, 0)
    assert_exactly_once(server.db, "e2e", 2, 3000)


def test_server_killed_before_commit_loses_nothing(broker, tmp_path):
    """The server dies after receiving batches but before committing them."""
    doomed = ServerProcess(broker, tmp_path, env={"ONETAP_FAULT": "kill-before-commit:5"}).start()
    process = simulate(broker.url, tmp_path / "kiosks", terminals=2, taps=1500, wait=False,
                       timeout=120)
    doomed.process.wait(60)
    assert doomed.process.returncode == -signal.SIGKILL
    survivor = ServerProcess(broker, tmp_path).start()
    try:
        finished(process)
        assert_exactly_once(survivor.db, "e2e", 2, 1500)
    finally:
        survivor.stop()


def test_broker_killed_and_restarted_empty(broker, server, tmp_path):
    process = simulate(broker.url, tmp_path / "kiosks", terminals=3, taps=2000, wait=False,
                       timeout=120)
    wait_for(lambda: stored_count(server.db) > 200, "the first ratings to arrive", timeout=60)
    broker.restart(empty=True)
    out = finished(process)
    assert summary_of(out)["pending"] == 0
    assert_exactly_once(server.db, "e2e", 3, 2000)


def test_broker_down_while_tapping_then_up(tmp_path):
    broker = Mosquitto(tmp_path / "broker")  # not started: nothing to connect to
    process = simulate(broker.url, tmp_path / "kiosks", terminals=2, taps=500, wait=False,
                       timeout=120)
    outboxes = tmp_path / "kiosks"

    def all_taps_recorded() -> bool:
        total = 0
        for path in outboxes.rglob("*.db"):
            try:
                with sqlite3.connect(path, timeout=5) as conn:
                    total += conn.execute("SELECT count(*) FROM ratings").fetchone()[0]
            except sqlite3.OperationalError:
                return False
        return total == 1000

    try:
        wait_for(all_taps_recorded, "every tap recorded with no broker", timeout=60)
        assert process.poll() is None, "the simulator gave up while the broker was away"
        broker.start()
        server = ServerProcess(broker, tmp_path).start()
        try:
            finished(process)
            assert_exactly_once(server.db, "e2e", 2, 500)
        finally:
            server.stop()
    finally:
        if process.poll() is None:
            process.kill()
        broker.stop()


def test_server_down_for_a_while_with_broker_up(broker, tmp_path):
    server = ServerProcess(broker, tmp_path).start()
    server.stop()  # its persistent session now exists, then it is gone
    process = simulate(broker.url, tmp_path / "kiosks", terminals=2, taps=800, wait=False,
                       timeout=120)
    time.sleep(3)
    assert stored_count(server.db) == 0
    server.start()
    try:
        finished(process)
        assert_exactly_once(server.db, "e2e", 2, 800)
    finally:
        server.stop()


def test_simulator_exits_nonzero_when_acks_never_come(broker, tmp_path):
    """No server: the taps are kept, reported pending, and the exit code says so."""
    code, out, err = simulate(broker.url, tmp_path / "kiosks", terminals=1, taps=20, timeout=2)
    assert code == 1
    summary = summary_of(out)
    assert (summary["taps"], summary["confirmed"], summary["pending"]) == (20, 0, 20)
