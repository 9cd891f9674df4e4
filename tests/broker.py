"""A private mosquitto for tests (server.broker's, with the deploy settings) and waiting for ports."""

from __future__ import annotations

from server.broker import Mosquitto, free_port  # noqa: F401 - tests import them from here
from server.broker import wait_for_port as listening


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    """server.broker's wait, raising for tests instead of answering False."""
    if not listening(port, timeout, host):
        raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")
