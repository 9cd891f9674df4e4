"""Child processes: ending one, politely first, and always reaping it."""

from __future__ import annotations

import subprocess


def stop_process(process: subprocess.Popen | None, timeout: float = 5.0) -> None:
    """SIGTERM *process*; SIGKILL it if it has not ended within *timeout* seconds.

    Returns once the process is reaped (no zombie is left behind), whatever
    state it was in; None or an ended process is fine.
    """
    if process is None:
        return
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
            return
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()


def kill_process(process: subprocess.Popen | None) -> None:
    """SIGKILL *process* without warning (a crash, a power cut) and reap it."""
    if process is None:
        return
    if process.poll() is None:
        process.kill()
    process.wait()
