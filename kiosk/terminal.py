"""A terminal without a screen: the visit flow's effects carried out on the outbox, for every front end."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Callable

from kiosk.errors import OutboxError
from kiosk.flow import Annotate, Effect, Flow, Quit, Record, Release, Settings
from kiosk.protocol import Rating

if TYPE_CHECKING:  # given, never opened here: the core stays free of SQLite
    from kiosk.outbox import Outbox

log = logging.getLogger(__name__)


class Terminal:
    """One terminal's flow and outbox: input in, effects carried out in order, hooks called.

    The Kivy shell, the GPIO buttons, the simulator and the tests all drive
    this; none of them carries out a flow effect itself. *monotonic* is the
    clock the flow is given (the simulator passes a simulated one). Hooks:
    *on_record(rating)* once a tap is on disk (chime, LED), *on_release(id)*
    when a rating may be sent (wake the uplink), *on_quit()* from the staff
    screen, *on_help(requested)* when the staff call is raised or clears
    (staff opened the staff screen, or its time ran out): the uplink tells
    the server at once.
    """

    def __init__(
        self,
        flow: Flow,
        outbox: "Outbox",
        *,
        monotonic: Callable[[], float] = time.monotonic,
        on_record: Callable[[Rating], None] | None = None,
        on_release: Callable[[str], None] | None = None,
        on_quit: Callable[[], None] | None = None,
        on_help: Callable[[bool], None] | None = None,
    ):
        self.flow = flow
        self.outbox = outbox
        self.monotonic = monotonic
        self.on_record = on_record
        self.on_release = on_release
        self.on_quit = on_quit
        self.on_help = on_help
        self._help = False
        #: The last rating recorded (for the staff screen and tests).
        self.last_rating: Rating | None = None
        #: Why the last tap could not be recorded (None once one is).
        self.record_error: str | None = None

    # -- input ------------------------------------------------------------------

    def press(self, score: int, input: str = "touch") -> None:
        now = self.monotonic()
        self.run(self.flow.press(score, now, input), now)

    def answer(self, field: str, code: str) -> None:
        now = self.monotonic()
        self.run(self.flow.answer(field, code, now), now)

    def skip(self) -> None:
        now = self.monotonic()
        self.run(self.flow.skip(now), now)

    def stray_tap(self) -> None:
        self.flow.stray_tap(self.monotonic())

    def more_time(self) -> None:
        self.flow.more_time(self.monotonic())

    def key(self, action: str) -> None:
        """A keypad key or a GPIO ◀ ▶ 선택 button (kiosk.flow.LEFT, RIGHT, SELECT, BACK, OTHER)."""
        now = self.monotonic()
        self.run(self.flow.key(action, now), now)

    def hold(self, seconds: float) -> None:
        self.flow.hold(self.monotonic() + seconds)

    def set_mode(self, mode: str, on: bool) -> None:
        self.flow.set_mode(mode, on, self.monotonic())

    def call_help(self) -> None:
        now = self.monotonic()
        self.flow.call_help(now)
        self._check_help(now)

    def _check_help(self, now: float) -> None:
        requested = self.flow.help_requested(now)
        if requested != self._help:
            self._help = requested
            if self.on_help is not None:
                self.on_help(requested)

    def set_language(self, lang: str) -> None:
        self.flow.set_language(lang, self.monotonic())

    def wake(self) -> None:
        self.flow.wake(self.monotonic())

    def open_pin(self) -> None:
        now = self.monotonic()
        self.flow.open_pin(now)
        self._check_help(now)

    def pin_digit(self, digit: str) -> None:
        self.flow.pin_digit(digit, self.monotonic())

    def pin_clear(self) -> None:
        self.flow.pin_clear(self.monotonic())

    def pin_submit(self) -> bool:
        return self.flow.pin_submit(self.monotonic())

    def close_maintenance(self) -> None:
        self.flow.close_maintenance(self.monotonic())

    def quit(self) -> None:
        now = self.monotonic()
        self.run(self.flow.quit(now), now)

    # -- time and settings ------------------------------------------------------------

    def tick(self) -> bool:
        """Time passes; True when the screen changed (a timeout closed one)."""
        now = self.monotonic()
        before = (self.flow.screen, self.flow.question)
        self.run(self.flow.tick(now), now)
        self._check_help(now)
        return (self.flow.screen, self.flow.question) != before

    def configure(self, settings: Settings) -> None:
        self.flow.configure(settings, self.monotonic())

    def set_open(self, open: bool) -> None:
        self.flow.set_open(open, self.monotonic())

    # -- effects --------------------------------------------------------------------

    def run(self, effects: list[Effect], now: float) -> None:
        """Carry out the flow's effects in order (a Record first commits the tap to disk)."""
        for effect in effects:
            if isinstance(effect, Record):
                try:
                    rating = self.outbox.record(effect.score, hold=True, lang=effect.lang, input=effect.input)
                except (OutboxError, ValueError) as exc:
                    log.error("tap %s NOT recorded: %s", effect.score, exc)
                    self.record_error = str(exc)
                    self.run(self.flow.record_failed(now), now)
                    continue
                self.last_rating = rating
                self.record_error = None
                if self.on_record is not None:
                    self.on_record(rating)
                self.run(self.flow.recorded(rating.id, now), now)
            elif isinstance(effect, Annotate):
                try:
                    self.outbox.annotate(effect.rating_id, **{effect.field: effect.code})
                except (OutboxError, ValueError) as exc:
                    log.error("follow-up answer for %s not stored: %s", effect.rating_id, exc)
            elif isinstance(effect, Release):
                try:
                    self.outbox.release(effect.rating_id)
                except OutboxError as exc:
                    # Still held: release_all_held() at the next start frees it.
                    log.error("rating %s not released: %s", effect.rating_id, exc)
                if self.on_release is not None:
                    self.on_release(effect.rating_id)
            elif isinstance(effect, Quit):
                log.info("maintenance: quit from the staff screen")
                if self.on_quit is not None:
                    self.on_quit()
                return
