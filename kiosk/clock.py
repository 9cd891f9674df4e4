"""The kiosk's clock: local time and whether the system says it is NTP-synchronised."""

from __future__ import annotations

import ctypes
import functools
import logging
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime
from typing import Callable

log = logging.getLogger(__name__)

# <sys/timex.h>
TIME_ERROR = 5
STA_UNSYNC = 0x0040
# A Pi has no RTC: until NTP answers, its clock may be days off. The answer
# changes rarely, and taps are frequent, so it is asked at most this often.
CACHE_SECONDS = 10.0


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    # Linux struct timex up to `status`, then room to spare for the rest (the
    # kernel writes the whole struct; 512 bytes is well beyond its size).
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("_rest", ctypes.c_char * 512),
    ]


def decide_adjtimex(result: int, status: int) -> bool:
    """Synchronised unless the kernel says TIME_ERROR or has STA_UNSYNC set."""
    if result < 0:
        raise OSError("adjtimex failed")
    return result != TIME_ERROR and not status & STA_UNSYNC


def parse_timedatectl(output: str) -> bool | None:
    """``timedatectl show -p NTPSynchronized --value`` prints yes or no; else unknown."""
    answer = output.strip().lower()
    if answer == "yes":
        return True
    if answer == "no":
        return False
    return None


@functools.cache
def _libc() -> ctypes.CDLL:
    # The process's own symbols (dlopen(NULL)), libc's among them, loaded once. Not
    # ctypes.util.find_library("c") per query: it runs `ldconfig -p` in a child process,
    # 1.5-2 ms in the running kiosk, inside the record of the first tap after each quiet
    # spell (about as long again as the tap's commit).
    return ctypes.CDLL(None, use_errno=True)


def _adjtimex() -> tuple[int, int]:
    libc = _libc()
    call = getattr(libc, "adjtimex", None) or getattr(libc, "ntp_adjtime")
    buf = _Timex()
    buf.modes = 0  # read only; needs no privilege
    result = call(ctypes.byref(buf))
    if result < 0:
        raise OSError(ctypes.get_errno(), "adjtimex failed")
    return result, buf.status


def _timedatectl() -> bool | None:
    exe = shutil.which("timedatectl")
    if exe is None:
        return None
    done = subprocess.run(
        [exe, "show", "-p", "NTPSynchronized", "--value"],
        capture_output=True, text=True, timeout=2, check=False,
    )
    if done.returncode != 0:
        return None
    return parse_timedatectl(done.stdout)


def query_synced() -> bool:
    """Ask the system now (no cache): False when it cannot be known."""
    if sys.platform.startswith("linux"):
        try:
            return decide_adjtimex(*_adjtimex())
        except (OSError, AttributeError) as exc:
            log.debug("adjtimex unavailable: %s", exc)
    try:
        answer = _timedatectl()
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("timedatectl failed: %s", exc)
        answer = None
    return bool(answer)


class SyncCache:
    """Caches a sync query for *ttl* seconds; thread-safe; inject query/monotonic in tests."""

    def __init__(self, query: Callable[[], bool] = query_synced, ttl: float = CACHE_SECONDS,
                 monotonic: Callable[[], float] = time.monotonic):
        self._query = query
        self._ttl = ttl
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._value = False
        self._expires: float | None = None

    def __call__(self) -> bool:
        with self._lock:
            now = self._monotonic()
            if self._expires is None or now >= self._expires:
                try:
                    self._value = bool(self._query())
                except Exception:  # noqa: BLE001 - an unknown clock is "not synced", never a lost tap
                    log.exception("cannot tell whether the clock is synchronised")
                    self._value = False
                self._expires = now + self._ttl
            return self._value


_cache = SyncCache()


def clock_synced() -> bool:
    """Whether the system clock is NTP-synchronised (cached for a few seconds)."""
    return _cache()


def local_now() -> datetime:
    """An aware datetime in the system's current local offset."""
    return datetime.now().astimezone()
