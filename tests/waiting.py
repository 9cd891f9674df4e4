"""Waiting in tests: poll a condition with a deadline, never sleep for correctness."""

from __future__ import annotations

import time
from typing import Any, Callable


def within(condition: Callable[[], Any], timeout: float, *, interval: float = 0.05) -> Any:
    """Poll *condition* until it is truthy and return its value, or its last falsy value
    after *timeout* seconds (so that a test can also assert that something does not happen)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def wait_for(condition: Callable[[], Any], what: str = "condition", *, timeout: float = 20.0,
             interval: float = 0.05) -> Any:
    """Poll *condition* until it is truthy and return its value; fail the test naming *what*."""
    value = within(condition, timeout, interval=interval)
    if not value:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")
    return value
