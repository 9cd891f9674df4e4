"""systemd notifications: READY, then WATCHDOG only while no problem needs a restart, STOPPING at the end."""

import os
import shutil
import socket
import tempfile
import threading
from pathlib import Path

import pytest

from server.supervisor import Problem, Supervisor
from server.watchdog import Watchdog, notify, starting, watchdog_interval


@pytest.fixture
def listener():
    directory = Path(tempfile.mkdtemp(prefix="wd-", dir="/tmp"))  # sun_path holds 108 bytes
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(directory / "notify"))
    sock.settimeout(5)
    yield sock, str(directory / "notify")
    sock.close()
    shutil.rmtree(directory, ignore_errors=True)


def receive(sock, count=1):
    return [sock.recv(4096).decode() for _ in range(count)]


def test_notify_sends_one_datagram_and_is_quiet_without_systemd(listener):
    sock, path = listener
    assert notify("READY=1", {"NOTIFY_SOCKET": path})
    assert receive(sock) == ["READY=1"]
    assert not notify("READY=1", {})


def test_notify_reaches_an_abstract_socket():
    name = f"onetap-test-{os.getpid()}-{threading.get_ident()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert notify("WATCHDOG=1", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(100) == b"WATCHDOG=1"


def test_a_missing_socket_is_a_warning_not_a_crash(tmp_path, caplog):
    assert not notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert "could not notify systemd (READY)" in caplog.text


def test_watchdog_interval_is_a_third_of_watchdog_sec_and_only_for_this_process():
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 10
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 10
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({}) is None


def test_pets_only_while_no_problem_needs_a_restart(listener):
    sock, path = listener
    supervisor = Supervisor()
    problems = []
    supervisor.add_check(lambda: problems[0] if problems else None)
    ready = threading.Event()
    watchdog = Watchdog(supervisor, ready=ready.is_set,
                        env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "150000"}).start()
    try:
        sock.settimeout(0.5)
        with pytest.raises(socket.timeout):
            sock.recv(100)  # nothing before ready
        ready.set()
        sock.settimeout(5)
        assert receive(sock, 3) == ["READY=1\nSTATUS=running", "WATCHDOG=1", "WATCHDOG=1"]
        # Failing but not cured by a restart (a full disk): still petted.
        problems.append(Problem("ingest cannot store for 30 s: disk full", restart=False))
        assert "WATCHDOG=1" in receive(sock, 4)
        problems[0] = Problem("ingest is stuck: 4 messages waiting, none processed for 21 s", restart=True)
        lines = []
        while "STATUS=unhealthy: ingest is stuck: 4 messages waiting, none processed for 21 s" not in lines:
            lines += receive(sock)
        sock.settimeout(0.5)
        with pytest.raises(socket.timeout):
            sock.recv(100)  # no WATCHDOG=1 any more
        problems.clear()
        sock.settimeout(5)
        assert receive(sock, 2) == ["WATCHDOG=1", "STATUS=running"]
        assert supervisor.threads() == {"onetap-watchdog": "running"}
        watchdog.stopping()
        while receive(sock) != ["STOPPING=1"]:
            pass
        sock.settimeout(0.5)
        with pytest.raises(socket.timeout):
            sock.recv(100)  # stopped: no more petting
        assert supervisor.threads() == {"onetap-watchdog": "stopped"} and supervisor.problems() == []
    finally:
        watchdog.stopping()


def test_without_notify_socket_there_is_no_thread():
    supervisor = Supervisor()
    Watchdog(supervisor, env={}).start()
    assert supervisor.threads() == {}


def test_a_long_start_keeps_asking_systemd_for_time_and_stops_when_it_ends(listener):
    sock, path = listener
    with starting("migrating", {"NOTIFY_SOCKET": path}, every_s=0.05):
        first, second = receive(sock, 2)
    assert first == second == "EXTEND_TIMEOUT_USEC=120000000\nSTATUS=migrating"
    sock.settimeout(0.3)
    late = 0
    with pytest.raises(socket.timeout):  # at most one sent as the block ended, then silence
        while late < 5:
            sock.recv(4096)
            late += 1
    assert late <= 1


def test_a_start_without_systemd_starts_no_thread():
    before = threading.active_count()
    with starting("migrating", {}):
        assert threading.active_count() == before
