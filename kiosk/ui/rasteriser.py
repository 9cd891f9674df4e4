"""Software GL's rasteriser threads, niced below the UI thread so a tap's commit never waits for a core."""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

# Mesa llvmpipe names its rasteriser threads llvmpipe-0, llvmpipe-1, … (one per core). A GPU
# driver (a Pi's V3D) has none, so there nothing is found and nothing changes.
PREFIX = "llvmpipe"
TASKS = Path("/proc/self/task")


def threads(prefix: str = PREFIX) -> list[int]:
    """The ids of this process's threads whose name starts with *prefix*."""
    found = []
    for task in TASKS.iterdir():
        try:
            name = (task / "comm").read_text(encoding="utf-8", errors="replace").strip()
        except OSError:  # the thread ended since the listing
            continue
        if name.startswith(prefix) and task.name.isdigit():
            found.append(int(task.name))
    return sorted(found)


def lower(niceness: int, prefix: str = PREFIX) -> list[int]:
    """Set the rasteriser threads' nice value to *niceness* where it is lower; returns the threads changed.

    Linux applies PRIO_PROCESS with a thread id to that thread alone, and raising one's own
    threads' nice value needs no privilege. The rasteriser still gets every core the UI thread
    leaves idle; it only stops taking the core from a commit or a touch.
    """
    changed = []
    for tid in threads(prefix):
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) >= niceness:
                continue
            os.setpriority(os.PRIO_PROCESS, tid, niceness)
        except OSError as exc:  # ended meanwhile, or a sandbox refuses: frames are drawn either way
            log.warning("could not nice rasteriser thread %s: %s", tid, exc)
            continue
        changed.append(tid)
    if changed:
        log.info("rasteriser threads %s niced to %s", changed, niceness)
    return changed
