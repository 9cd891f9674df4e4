"""The rasteriser threads' nice value, on real threads of this process named as Mesa names its own."""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

from kiosk.ui import rasteriser


@contextmanager
def named_threads(*names: str):
    """Real threads, each renamed (its /proc comm, as pthread_setname_np does) and waiting until the block ends."""
    done = threading.Event()
    ready = []
    threads = [threading.Thread(target=done.wait, daemon=True) for _ in names]
    try:
        for thread, name in zip(threads, names):
            thread.start()
            Path(f"/proc/self/task/{thread.native_id}/comm").write_text(name, encoding="utf-8")
            ready.append(thread.native_id)
        yield ready
    finally:
        done.set()
        for thread in threads:
            thread.join()


def nice(tid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


@pytest.fixture
def base() -> int:
    level = os.getpriority(os.PRIO_PROCESS, 0)
    if level > 14:
        pytest.skip(f"the tests run at nice {level}: no room above it")
    return level


def test_only_the_named_threads_are_niced(base):
    with named_threads("lptest-0", "lptest-1", "other-0") as (first, second, other):
        assert rasteriser.threads("lptest") == sorted([first, second])
        assert sorted(rasteriser.lower(base + 5, "lptest")) == sorted([first, second])
        assert (nice(first), nice(second)) == (base + 5, base + 5)
        # The UI thread and any other thread keep the process's priority.
        assert nice(other) == base
        assert nice(threading.get_native_id()) == base


def test_a_second_call_changes_nothing_and_never_raises_a_priority(base):
    with named_threads("lptest-0", "lptest-1") as (first, second):
        os.setpriority(os.PRIO_PROCESS, second, base + 5)
        assert rasteriser.lower(base + 3, "lptest") == [first]
        assert (nice(first), nice(second)) == (base + 3, base + 5)
        assert rasteriser.lower(base + 3, "lptest") == []


def test_no_such_threads_no_change(base):
    # A GPU driver (a Pi's V3D) starts no llvmpipe threads.
    assert rasteriser.threads("no-such-thread") == []
    assert rasteriser.lower(base + 5, "no-such-thread") == []
    assert nice(threading.get_native_id()) == base
