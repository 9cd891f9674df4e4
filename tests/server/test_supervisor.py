"""The supervisor: failures are logged and survived, a dead, ended or stuck thread makes the process unhealthy."""

import logging
import threading
from pathlib import Path

from server.supervisor import COMM_BYTES, MAX_FAILURES, MAX_RESTARTS, Problem, Supervisor, name_os_thread
from tests.waiting import wait_for


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_loop_that_keeps_raising_is_restarted_then_declared_dead(caplog):
    supervisor = Supervisor(restart_pause_s=0.01)
    runs = []

    def loop(thread):
        runs.append(1)
        raise RuntimeError(f"boom {len(runs)}")

    with caplog.at_level(logging.ERROR, logger="server.supervisor"):
        supervisor.start("test-boom", loop)
        wait_for(lambda: supervisor.threads()["test-boom"] == "dead", "the thread to be given up")
    assert len(runs) == MAX_RESTARTS
    failures = [r for r in caplog.records if r.getMessage() == "thread test-boom failed"]
    assert len(failures) == MAX_RESTARTS and all(r.exc_info for r in failures), "no traceback logged"
    assert supervisor.problems() == [Problem(f"thread test-boom is dead (RuntimeError: boom {MAX_RESTARTS})",
                                             restart=True)]


def test_a_loop_that_fails_once_goes_on_and_the_process_stays_healthy():
    supervisor = Supervisor(restart_pause_s=0.01)
    runs = []
    running = threading.Event()

    def loop(thread):
        runs.append(1)
        if len(runs) == 1:
            raise ValueError("once")
        running.set()
        thread.wait(60)

    handle = supervisor.start("test-once", loop)
    assert running.wait(10)
    assert supervisor.threads() == {"test-once": "running"} and supervisor.problems() == []
    handle.request_stop()
    assert handle.join(5)
    assert supervisor.threads() == {"test-once": "stopped"} and supervisor.problems() == []


def test_a_loop_that_ends_unasked_is_a_problem():
    supervisor = Supervisor()
    handle = supervisor.start("test-quits", lambda thread: None)
    assert handle.join(5)
    assert supervisor.problems() == [Problem("thread test-quits ended", restart=True)]


def test_a_step_busy_longer_than_its_stall_time_is_stuck():
    clock = Clock()
    supervisor = Supervisor(clock=clock)
    inside, release = threading.Event(), threading.Event()

    def loop(thread):
        with thread.busy():
            inside.set()
            release.wait(30)
        thread.wait(60)

    handle = supervisor.start("test-slow", loop, stall_s=20)
    try:
        assert inside.wait(10)
        clock.now += 20
        assert supervisor.problems() == []
        clock.now += 1
        assert supervisor.problems() == [Problem("thread test-slow is stuck: busy for 21 s", restart=True)]
        assert supervisor.threads() == {"test-slow": "stuck"}
        release.set()
        wait_for(lambda: supervisor.problems() == [], "the step to end")
        clock.now += 100  # idle between steps is not stuck
        assert supervisor.problems() == []
    finally:
        release.set()
        handle.request_stop()
        handle.join(5)


def test_repeated_failed_steps_are_reported_until_one_succeeds():
    supervisor = Supervisor()
    step = threading.Semaphore(0)
    done = threading.Semaphore(0)
    outcomes = [False] * MAX_FAILURES + [True]

    def loop(thread):
        for ok in outcomes:
            step.acquire()
            if ok:
                thread.succeeded()
            else:
                thread.failed(KeyError("bad"))
            done.release()
        thread.wait(60)

    handle = supervisor.start("test-flaky", loop)
    try:
        for _ in range(MAX_FAILURES - 1):
            step.release()
            done.acquire()
        assert supervisor.problems() == []
        step.release()
        done.acquire()
        assert supervisor.problems() == [Problem(
            f"thread test-flaky failed {MAX_FAILURES} times in a row (KeyError: 'bad')", restart=False)]
        assert supervisor.threads() == {"test-flaky": "failing"}
        step.release()
        done.acquire()
        assert supervisor.problems() == []
    finally:
        handle.request_stop()
        handle.join(5)


def test_checks_add_their_problems():
    supervisor = Supervisor()
    verdict = [None]
    supervisor.add_check(lambda: verdict[0])
    assert supervisor.problems() == []
    verdict[0] = Problem("ingest is stuck", restart=True)
    assert supervisor.problems() == [verdict[0]]


def os_name(thread: threading.Thread) -> str:
    return Path(f"/proc/self/task/{thread.native_id}/comm").read_text().rstrip("\n")


def test_a_supervised_thread_has_its_name_in_the_operating_system_too():
    supervisor = Supervisor(restart_pause_s=0.01)
    running = threading.Event()

    def loop(thread):
        running.set()
        thread.wait(60)

    handle = supervisor.start("onetap-test", loop)
    try:
        assert running.wait(10)
        # What top -H and ps -L show; Python alone leaves every thread "python".
        assert os_name(handle.thread) == "onetap-test"
    finally:
        handle.request_stop()
        handle.thread.join(10)


def test_a_long_name_is_cut_to_what_the_kernel_keeps_and_a_refusal_is_survived(tmp_path):
    names = {}

    def named(name, comm=None):
        names["took"] = name_os_thread(name) if comm is None else name_os_thread(name, comm)
        names["os"] = os_name(threading.current_thread())

    worker = threading.Thread(target=named, args=("onetap-retention-and-more",))
    worker.start()
    worker.join(10)
    assert names == {"took": True, "os": "onetap-retention-and-more"[:COMM_BYTES]}
    # No /proc (another system): the thread goes on under the name it had.
    worker = threading.Thread(target=named, args=("onetap-x", tmp_path / "no" / "comm"), name="plain")
    worker.start()
    worker.join(10)
    assert names["took"] is False and names["os"] != "onetap-x"
