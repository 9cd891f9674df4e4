"""The clock's sync decision, with the system's answers injected."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import datetime

import pytest

from kiosk import clock


@pytest.mark.parametrize("result, status, synced", [
    (0, 0x2001, True),            # TIME_OK, PLL on
    (1, 0x0001, True),            # TIME_INS: leap second pending, still synced
    (clock.TIME_ERROR, 0x0001, False),
    (0, clock.STA_UNSYNC, False),
    (0, clock.STA_UNSYNC | 0x2000, False),
])
def test_decide_adjtimex(result, status, synced):
    assert clock.decide_adjtimex(result, status) is synced


def test_decide_adjtimex_failure_raises():
    with pytest.raises(OSError):
        clock.decide_adjtimex(-1, 0)


@pytest.mark.parametrize("output, answer", [
    ("yes\n", True), ("no\n", False), ("", None), ("Failed to connect to bus", None),
])
def test_parse_timedatectl(output, answer):
    assert clock.parse_timedatectl(output) is answer


def test_cache_asks_once_per_ttl():
    calls = []
    now = [100.0]
    cache = clock.SyncCache(lambda: calls.append(1) or len(calls) % 2 == 1, ttl=10,
                            monotonic=lambda: now[0])
    assert cache() is True
    now[0] += 9.9
    assert cache() is True and len(calls) == 1
    now[0] += 0.1
    assert cache() is False and len(calls) == 2


def test_cache_treats_a_failing_query_as_unsynced():
    def broken():
        raise OSError("no adjtimex here")
    assert clock.SyncCache(broken)() is False


def test_cache_is_thread_safe():
    calls = []
    cache = clock.SyncCache(lambda: calls.append(1) or True, ttl=60)
    threads = [threading.Thread(target=cache) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1


def test_real_query_answers_a_bool():
    assert clock.query_synced() in (True, False)
    assert clock.clock_synced() in (True, False)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="adjtimex is Linux's")
def test_real_query_starts_no_process(monkeypatch):
    # It runs inside a tap's record every CACHE_SECONDS: a child process (ctypes.util.find_library
    # runs `ldconfig -p`) cost the tap 1.5-2 ms.
    def no_process(*_args, **_kw):
        raise AssertionError("the clock query started a process")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    monkeypatch.setattr(os, "posix_spawn", no_process, raising=False)
    monkeypatch.setattr(os, "fork", no_process)
    clock._libc.cache_clear()
    assert clock.decide_adjtimex(*clock._adjtimex()) in (True, False)


def test_local_now_is_aware():
    now = clock.local_now()
    assert now.tzinfo is not None and now.utcoffset() == datetime.now().astimezone().utcoffset()
