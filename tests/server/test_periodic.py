"""Periodic tasks: run at start and again, survive a failing store, close their connection."""

import threading

from server.errors import StoreError
from server.periodic import Periodic


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
