"""Waiting in tests: poll a condition with a deadline, never sleep for correctness."""

from __future__ import annotations

import time
from typing import Any, Callable


def wait_for(condition: Callable[[], Any], what: str = "condition", *, timeout: float = 20.0,
             interval: float = 0.05) -> Any:
    """Poll *condition* until it is truthy and return its value; fail the test naming *what*."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
