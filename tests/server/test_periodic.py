"""Periodic tasks: run at start and again, survive a failing store, close their connection."""

import re
import threading

from server.errors import StoreError
from server.periodic import Periodic
from tests.waiting import wait_for


class FakeStore:
    def __init__(self):
        self.closed = False

    def close(self):
        self.closed = True


class Counting(Periodic):
    name = "test-periodic"

    def __init__(self, fail_first: int):
        self.stores = []
        super().__init__(self.open_store, interval_s=0.01)
        self.fail_first = fail_first
        self.ticks = 0
        self.enough = threading.Event()

    def open_store(self):
        self.stores.append(FakeStore())
        return self.stores[-1]

    def tick(self, store):
        self.ticks += 1
        if self.ticks <= self.fail_first:
            raise StoreError("database is locked")
        if self.ticks >= self.fail_first + 3:
            self.enough.set()


def test_a_failing_store_is_retried_and_the_connection_closed_at_stop():
    runner = Counting(fail_first=2).start()
    try:
        assert runner.enough.wait(10), "the task stopped after the store failed"
    finally:
        runner.stop()
    assert runner.passes >= 5
    assert len(runner.stores) == 1 and runner.stores[0].closed


class Raising(Counting):
    name = "test-raising"

    def tick(self, store):
        self.ticks += 1
        if self.ticks <= self.fail_first:
            raise OverflowError("date value out of range")
        if self.ticks >= self.fail_first + 2:
            self.enough.set()


def test_an_unexpected_exception_is_logged_with_its_traceback_and_the_task_goes_on(caplog):
    from server.supervisor import Supervisor

    supervisor = Supervisor()
    with caplog.at_level("ERROR", logger="server.periodic"):
        runner = Raising(fail_first=2).start(supervisor)
        try:
            assert runner.enough.wait(10), "the task died with its first exception"
            assert supervisor.threads() == {"test-raising": "running"} and supervisor.problems() == []
        finally:
            assert runner.stop()
    logged = [r for r in caplog.records if "test-raising failed" in r.getMessage()]
    assert len(logged) == 2 and all(r.exc_info[0] is OverflowError for r in logged)
    # A pass that raised may have left its connection mid-way: the next one opens another.
    assert len(runner.stores) == 3 and all(s.closed for s in runner.stores)


def test_a_task_failing_every_time_makes_the_process_unhealthy():
    from server.supervisor import MAX_FAILURES, Supervisor

    supervisor = Supervisor()
    runner = Raising(fail_first=10 ** 6).start(supervisor)
    try:
        wait_for(lambda: supervisor.problems(), "the failures to be reported")
        [problem] = supervisor.problems()
        # The thread goes on failing while the test reads: at least MAX_FAILURES by then.
        failed = re.match(r"thread test-raising failed (\d+) times in a row \(OverflowError", problem.reason)
        assert failed and int(failed.group(1)) >= MAX_FAILURES, problem.reason
        assert not problem.restart
    finally:
        assert runner.stop()
