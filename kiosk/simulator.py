"""Headless terminals for load and fault tests: the real flow, outbox and uplink, taps from a seeded RNG."""

from __future__ import annotations

import logging
import random
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from kiosk import protocol, survey as survey_mod
from kiosk.config import KioskConfig
from kiosk.errors import KioskError
from kiosk.flow import Flow, Screen, Settings
from kiosk.outbox import Outbox
from kiosk.terminal import Terminal
from kiosk.uplink import Uplink

log = logging.getLogger(__name__)

# Roughly what counters see: most citizens are satisfied.
SCORE_WEIGHTS = (5, 7, 15, 33, 40)
LANGS = ("ko", "ko", "ko", "ko", "en", "zh", "vi")
ANSWER_SHARE = 0.5  # of follow-up questions shown: answered, the others skipped
#: A simulated citizen reads a question this long (simulated seconds) before answering.
READ_S = 1.0
#: The kiosk's own visit settings before a site's survey config arrives: ask why
#: after 1 and 2, and the age group after every score.
BASE_SETTINGS = Settings(questions=survey_mod.questions(age_group=True))


class SimulatedClock:
    """The flow's monotonic clock, moved by the simulated citizens (no real waiting)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


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
                 rate: float | None, seed: str, survey: survey_mod.Survey):
        self.terminal = terminal
        self.path = path
        self.uplink = uplink
        self.goal = taps
        self.rate = rate
        self.seed = seed
        self.survey = survey
        self.error: str | None = None
        self.thread = threading.Thread(target=self._tap, name=f"taps-{terminal}", daemon=True)

    def _visit(self, terminal: Terminal, clock: SimulatedClock, rng: random.Random) -> None:
        """One citizen: a language, a face, then each follow-up question answered or skipped."""
        flow = terminal.flow
        settings = flow.settings
        clock.now += settings.cooldown_s + settings.thank_you_s + 1.0
        terminal.tick()  # the last visit's thank-you closes
        clock.now += settings.guard_s + READ_S
        lang = rng.choice(LANGS)
        if lang in settings.languages:
            terminal.set_language(lang)
        terminal.press(rng.choices(protocol.SCORES, SCORE_WEIGHTS)[0])
        if flow.screen == Screen.ERROR:
            raise KioskError(f"tap not recorded: {terminal.record_error}")
        while flow.screen == Screen.QUESTION and flow.question is not None:
            clock.now += settings.guard_s + READ_S
            if rng.random() < ANSWER_SHARE:
                terminal.answer(flow.question.field, rng.choice(flow.question.codes))
            else:
                terminal.skip()

    def _tap(self) -> None:
        try:
            outbox = Outbox.open(self.path)
        except KioskError as exc:
            self.error = f"{self.terminal}: {exc}"
            return
        try:
            clock = SimulatedClock()
            applied = self.survey.current
            flow = Flow(survey_mod.merge(BASE_SETTINGS, applied), clock())
            terminal = Terminal(flow, outbox, monotonic=clock,
                                on_release=lambda _id: self.uplink.notify())
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
                current = self.survey.current
                if current is not applied:
                    # The site's survey config arrived (on the uplink's thread): next visit on.
                    applied = current
                    terminal.configure(survey_mod.merge(BASE_SETTINGS, current))
                self._visit(terminal, clock, rng)
                done = terminal.last_rating.seq if terminal.last_rating else done
        except KioskError as exc:
            self.error = f"{self.terminal}: {exc}"
            log.error("simulated terminal %s stopped tapping: %s", self.terminal, exc)
        finally:
            outbox.close()


#: Why a provisioned account simulates one terminal only.
ONE_ACCOUNT_ONE_TERMINAL = (
    "--config is one provisioned terminal ({site}/{terminal}): its broker account may speak only "
    "on that terminal's topics, and a broker with use_username_as_clientid gives every connection "
    "of the account the same client id, so a second simulated terminal would take the first one's "
    "session over. Provision one account per terminal and run one simulate per kiosk.toml "
    "(or use --broker and --site on a test broker for sim-NNN terminals)"
)


def simulate(
    *,
    broker: str | None = None,
    site: str | None = None,
    terminals: int = 1,
    taps: int,
    data_dir: Path,
    rate: float | None = None,
    timeout: float = 30.0,
    username: str | None = None,
    password: str | None = None,
    ack_timeout: float = 10.0,
    reconnect_max_delay: float = 5.0,
    mqtt_protocol: str = "5",
    config: KioskConfig | None = None,
    progress: TextIO = sys.stderr,
) -> Result:
    """Run *terminals* headless terminals until each has recorded *taps* taps.

    With *config* (a provisioned kiosk.toml), one terminal with its site,
    name, broker account and TLS settings; otherwise sim-001.. at *site* on
    *broker*. Taps already recorded in *data_dir* (an earlier, interrupted
    run) count toward the goal. After the last tap, waits up to *timeout*
    seconds for the server's Acks, then stops every uplink gracefully. When
    the broker refuses a terminal, says why on *progress* at once.
    """
    if terminals < 1:
        raise ValueError("--terminals must be at least 1")
    if config is not None:
        if terminals != 1:
            raise ValueError(ONE_ACCOUNT_ONE_TERMINAL.format(site=config.site, terminal=config.terminal))
        site, ids = config.site, [config.terminal]
    else:
        if broker is None or site is None:
            raise ValueError("give --config FILE, or --broker URL and --site S")
        protocol.check_identifier("site", site)
        ids = terminal_ids(terminals)
    if taps < 0:
        raise ValueError("--taps must be >= 0")
    if rate is not None and rate <= 0:
        raise ValueError("--rate must be > 0")
    started = time.monotonic()
    data_dir = Path(data_dir)
    watchers: dict[str, Outbox] = {}
    sims: list[_Terminal] = []
    try:
        for terminal in ids:
            path = outbox_path(data_dir, site, terminal)
            # The seed is kept in the outbox file: every Outbox on it chains.
            seed = config.chain_seed if config is not None else protocol.default_chain_seed(site, terminal)
            watcher = Outbox.open(path, chain_seed=seed)
            watchers[terminal] = watcher
            # A follow-up cut short by a crash: send the tap as it is.
            watcher.release_all_held()
            survey = survey_mod.Survey(path.with_suffix(".survey.json"))
            if config is not None:
                # The terminal's own account and TLS; its outbox here, not the kiosk's.
                uplink = Uplink.from_config(
                    config, outbox_factory=lambda p=path: Outbox.open(p),
                    reconnect_delay=(0.5, reconnect_max_delay), on_config=survey.offer,
                )
            else:
                uplink = Uplink(
                    (lambda p=path: Outbox.open(p)),
                    site=site, terminal=terminal, broker_url=broker,
                    username=username, password=password,
                    ack_timeout=ack_timeout, reconnect_delay=(0.5, reconnect_max_delay),
                    mqtt_protocol=mqtt_protocol, on_config=survey.offer,
                )
            sims.append(_Terminal(terminal, path, uplink, taps, rate, seed=f"{site}/{terminal}",
                                  survey=survey))
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
        told: dict[str, str | None] = {}
        while True:
            for sim in sims:
                refusal = sim.uplink.refusal
                if refusal is not None and told.get(sim.terminal) != refusal:
                    # At once, not at the end: taps pending silently explain nothing.
                    print(f"simulate: {site}/{sim.terminal}: {refusal}", file=progress, flush=True)
                told[sim.terminal] = refusal
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
    errors.extend(f"{site}/{sim.terminal}: {sim.uplink.refusal}" for sim in sims if sim.uplink.refusal)
    return Result(recorded, recorded - pending, pending, time.monotonic() - started, errors)
