"""Stopping child processes: SIGTERM first, SIGKILL after the grace, always reaped."""

import signal
import subprocess
import sys
import time

from server.process import kill_process, stop_process

IGNORES_SIGTERM = ("import signal, sys, time\n"
                   "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                   "print('ready', flush=True)\n"
                   "time.sleep(60)\n")


def child(code: str) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "ready\n"
    return process


def test_a_process_that_obeys_sigterm_ends_by_it():
    process = child("import time\nprint('ready', flush=True)\ntime.sleep(60)\n")
    stop_process(process, timeout=30)
    assert process.returncode == -signal.SIGTERM


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace():
    process = child(IGNORES_SIGTERM)
    started = time.monotonic()
    stop_process(process, timeout=0.5)
    assert process.returncode == -signal.SIGKILL
    assert time.monotonic() - started < 30


def test_kill_and_stop_take_ended_and_missing_processes():
    process = child(IGNORES_SIGTERM)
    kill_process(process)
    assert process.returncode == -signal.SIGKILL
    stop_process(process)  # already reaped: nothing happens
    kill_process(process)
    assert process.returncode == -signal.SIGKILL
    stop_process(None)
    kill_process(None)
