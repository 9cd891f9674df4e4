"""Headless terminals for load and fault tests: the real outbox and uplink, taps from a seeded RNG."""

from __future__ import annotations

import logging
import random
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from kiosk import protocol
from kiosk.errors import KioskError
from kiosk.outbox import Outbox
from kiosk.uplink import Uplink

log = logging.getLogger(__name__)

# Roughly what counters see: most citizens are satisfied.
SCORE_WEIGHTS = (5, 7, 15, 33, 40)
LANGS = ("ko", "ko", "ko", "ko", "en", "zh", "vi")
FOLLOW_UP_SHARE = 0.5  # of 1- and 2-star taps: they answer "why?"


def terminal_ids(count: int) -> list[str]:
    return [f"sim-{n:03d}" for n in range(1, count + 1)]


def outbox_path(data_dir: Path, site: str, terminal: str) -> Path:
    # "." is not allowed in identifiers, so the name is unambiguous.
    return Path(data_dir) / f"{site}.{terminal}.db"


@dataclass
class Result:
    taps: int
    confirmed: int
    pending: int
    seconds: float
    errors: list[str]

    def to_dict(self) -> dict:
        return {"taps": self.taps, "confirmed": self.confirmed, "pending": self.pending,
                "seconds": round(self.seconds, 3)}


class _Terminal:
    def __init__(self, terminal: str, path: Path, uplink: Uplink, taps: int,
                 rate: float | None, seed: str):
        self.terminal = terminal
        self.path = path
        self.uplink = uplink
        self.goal = taps
        self.rate = rate
        self.seed = seed
        self.error: str | None = None
        self.thread = threading.Thread(target=self._tap, name=f"taps-{terminal}", daemon=True)

    def _tap(self) -> None:
        try:
            outbox = Outbox.open(self.path)
        except KioskError as exc:
            self.error = f"{self.terminal}: {exc}"
            return
        try:
            done = outbox.stats().last_seq
            rng = random.Random(f"{self.seed}/{done}")
            interval = 1.0 / self.rate if self.rate else 0.0
            next_at = time.monotonic()
            while done < self.goal:
                if interval:
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    next_at += interval
                score = rng.choices(protocol.SCORES, SCORE_WEIGHTS)[0]
                lang = rng.choice(LANGS)
                if score <= 2 and rng.random() < FOLLOW_UP_SHARE:
                    rating = outbox.record(score, lang=lang, hold=True)
                    outbox.annotate(rating.id, reason=rng.choice(protocol.DEFAULT_REASONS),
                                    age_group=rng.choice(protocol.AGE_GROUPS))
                    outbox.release(rating.id)
                else:
                    rating = outbox.record(score, lang=lang)
                done = rating.seq
                self.uplink.notify()
        except KioskError as exc:
            self.error = f"{self.terminal}: {exc}"
            log.error("simulated terminal %s stopped tapping: %s", self.terminal, exc)
        finally:
            outbox.close()


def simulate(
    *,
    broker: str,
    site: str,
    terminals: int,
    taps: int,
    data_dir: Path,
    rate: float | None = None,
    timeout: float = 30.0,
    username: str | None = None,
    password: str | None = None,
    ack_timeout: float = 10.0,
    reconnect_max_delay: float = 5.0,
    mqtt_protocol: str = "5",
    progress: TextIO = sys.stderr,
) -> Result:
    """Run *terminals* headless terminals until each has recorded *taps* taps.

    Taps already recorded in *data_dir* (an earlier, interrupted run) count
    toward the goal. After the last tap, waits up to *timeout* seconds for
    the server's Acks, then stops every uplink gracefully.
    """
    protocol.check_identifier("site", site)
    if terminals < 1:
        raise ValueError("--terminals must be at least 1")
    if taps < 0:
        raise ValueError("--taps must be >= 0")
    if rate is not None and rate <= 0:
        raise ValueError("--rate must be > 0")
    started = time.monotonic()
    data_dir = Path(data_dir)
    ids = terminal_ids(terminals)
    watchers: dict[str, Outbox] = {}
    sims: list[_Terminal] = []
    try:
        for terminal in ids:
            path = outbox_path(data_dir, site, terminal)
            watcher = Outbox.open(path)
            watchers[terminal] = watcher
            # A follow-up cut short by a crash: send the tap as it is.
            watcher.release_all_held()
            uplink = Uplink(
                (lambda p=path: Outbox.open(p)),
                site=site, terminal=terminal, broker_url=broker,
                username=username, password=password,
                ack_timeout=ack_timeout, reconnect_delay=(0.5, reconnect_max_delay),
                mqtt_protocol=mqtt_protocol,
            )
            sims.append(_Terminal(terminal, path, uplink, taps, rate, seed=f"{site}/{terminal}"))
        for sim in sims:
            sim.uplink.start()
        for sim in sims:
            sim.thread.start()

        def totals() -> tuple[int, int]:
            recorded = pending = 0
            for watcher in watchers.values():
                stats = watcher.stats()
                recorded += stats.last_seq
                pending += stats.backlog
            return recorded, pending

        last_report = 0.0
        deadline: float | None = None
        while True:
            tapping = any(sim.thread.is_alive() for sim in sims)
            recorded, pending = totals()
            now = time.monotonic()
            if not tapping and deadline is None:
                deadline = now + timeout
            if now - last_report >= 1.0:
                print(
                    f"simulate: {recorded} taps, {recorded - pending} confirmed, {pending} pending, "
                    f"{sum(s.uplink.connected for s in sims)}/{len(sims)} connected",
                    file=progress, flush=True,
                )
                last_report = now
            if deadline is not None and (pending == 0 or now >= deadline):
                break
            time.sleep(0.05)
    finally:
        for sim in sims:
            sim.uplink.stop(timeout=2.0)
    recorded, pending = totals()
    for watcher in watchers.values():
        watcher.close()
    errors = [sim.error for sim in sims if sim.error]
    errors.extend(
        f"{sim.terminal}: uplink failed: {sim.uplink.failure}" for sim in sims if sim.uplink.failure
    )
    return Result(recorded, recorded - pending, pending, time.monotonic() - started, errors)
