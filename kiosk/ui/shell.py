"""The app shell: runs the visit flow on Kivy's thread, carries out its effects on the outbox, draws screens.

Threads: Kivy's main thread owns every widget, the flow and its own Outbox.
The uplink's thread and gpiozero's thread only Clock.schedule_once onto it.
"""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path
from typing import Any

from kivy.app import App
from kivy.clock import Clock
from kivy.core.window import Window
from kivy.uix.floatlayout import FloatLayout

import kiosk
from kiosk import clock, survey as survey_mod
from kiosk.buttons import Buttons, status_light
from kiosk.catalog import load_catalogs
from kiosk.config import KioskConfig, parse_broker_url
from kiosk.errors import OutboxError
from kiosk.flow import Flow, Screen, Settings
from kiosk.outbox import Outbox
from kiosk.protocol import Rating, SurveyConfig
from kiosk.terminal import Terminal
from kiosk.ui import fonts, theme as theme_mod
from kiosk.ui.screens import FollowupPage, MaintenancePage, MessagePage, PinPage, RatingPage
from kiosk.uplink import Uplink

log = logging.getLogger(__name__)

TICK_S = 0.1
HOURS_CHECK_S = 15.0
LED_CHECK_S = 2.0
MAINTENANCE_REFRESH_S = 1.0
CORNER = 0.12  # the hidden corner's side, as a fraction of the window height


def base_settings(cfg: KioskConfig) -> Settings:
    ui = cfg.ui
    return Settings(
        questions=survey_mod.questions(reason_threshold=ui.reason_threshold, age_group=ui.age_group),
        guard_s=ui.guard_ms / 1000, cooldown_s=ui.cooldown_s,
        followup_timeout_s=ui.followup_timeout_s, thank_you_s=ui.thank_you_s,
        count_when_closed=ui.count_when_closed, default_lang=ui.language,
        languages=tuple(ui.languages), pin=ui.maintenance_pin,
    )


def local_ip(host: str) -> str:
    """The address this terminal uses towards *host* (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect((host, 9))
            return sock.getsockname()[0]
    except OSError:
        return "?"


class Root(FloatLayout):
    """Holds the current screen; a long press in the bottom-left corner asks for the staff PIN."""

    def __init__(self, shell: "Shell", **kw):
        super().__init__(**kw)
        self.shell = shell
        self._hold = None

    def _in_corner(self, touch) -> bool:
        side = self.height * CORNER
        return touch.x <= self.x + side and touch.y <= self.y + side

    def on_touch_down(self, touch):
        if self._in_corner(touch):
            self._cancel_hold()
            self._hold = Clock.schedule_once(lambda _dt: self.shell.open_pin(),
                                             self.shell.cfg.ui.maintenance_hold_s)
            touch.ud["onetap_corner"] = True
        return super().on_touch_down(touch)

    def on_touch_move(self, touch):
        if touch.ud.get("onetap_corner") and not self._in_corner(touch):
            self._cancel_hold()
        return super().on_touch_move(touch)

    def on_touch_up(self, touch):
        if touch.ud.get("onetap_corner"):
            self._cancel_hold()
        return super().on_touch_up(touch)

    def _cancel_hold(self):
        if self._hold is not None:
            self._hold.cancel()
            self._hold = None


class Shell:
    """The terminal (flow and outbox) and its screens, on Kivy's thread."""

    def __init__(self, cfg: KioskConfig, outbox: Outbox, survey: survey_mod.Survey,
                 monotonic=time.monotonic):
        self.cfg = cfg
        self.survey = survey
        self.monotonic = monotonic
        self.uplink: Uplink | None = None
        self.buttons: Buttons | None = None
        self.catalogs = load_catalogs(cfg.ui.languages)
        self.theme = theme_mod.theme(cfg.ui.high_contrast, cfg.ui.large_text)
        self.layout = theme_mod.Layout(*Window.size)
        self._base = base_settings(cfg)
        flow = Flow(survey_mod.merge(self._base, survey.current), monotonic(), open=self._open_now())
        self.terminal = Terminal(flow, outbox, monotonic=monotonic, on_record=self._recorded,
                                 on_release=self._released, on_quit=lambda: App.get_running_app().stop())
        self.root = Root(self)
        self.pages: dict[str, Any] = {}
        self._page = None
        self._fonts: dict[tuple[str, str], str] = {}
        self._sound = None
        #: Screens shown (for tests and the benchmark): (view, monotonic time).
        self.shown: list[tuple[str, float]] = []
        Window.bind(size=self._on_resize)

    @property
    def flow(self) -> Flow:
        return self.terminal.flow

    @property
    def outbox(self) -> Outbox:
        return self.terminal.outbox

    @property
    def last_rating(self) -> Rating | None:
        return self.terminal.last_rating

    # -- state the screens read ----------------------------------------------

    @property
    def catalog(self):
        return self.catalogs[self.flow.lang]

    def font_for_lang(self, lang: str | None = None) -> str:
        return fonts.font_name(lang or self.flow.lang)

    def font_for_text(self, text: str) -> str:
        """Fonts for text from the server, which the bundled subsets may lack."""
        key = (self.flow.lang, text)
        if key not in self._fonts:
            self._fonts[key] = fonts.font_for(self.flow.lang, text)
        return self._fonts[key]

    def question_text(self) -> str:
        current = self.survey.current
        return self.catalog.question(current.question if current is not None else None)

    def hours_lines(self) -> tuple[str, ...]:
        return survey_mod.hours(tuple(self.cfg.ui.hours), self.survey.current)

    def _open_now(self) -> bool:
        return survey_mod.is_open(self.hours_lines(), clock.local_now())

    def time_left_fraction(self) -> float:
        deadline = self.flow.deadline
        if deadline is None:
            return 0.0
        total = self.flow.settings.followup_timeout_s
        return (deadline - self.monotonic()) / total if total else 0.0

    def status_extra(self) -> dict[str, Any]:
        """Status fields only the UI knows (called on the uplink's thread: plain reads)."""
        return {"config_version": self.survey.version, "ignored_taps": self.flow.ignored_taps}

    def uplink_problem(self) -> str | None:
        """Why ratings cannot leave: the uplink failed, or the broker refuses this terminal."""
        uplink = self.uplink
        if uplink is None:
            return None
        return str(uplink.failure) if uplink.failure else uplink.refusal

    def maintenance_info(self) -> dict[str, str]:
        catalog = self.catalog
        try:
            stats = self.outbox.stats()
        except OutboxError as exc:
            return {"error": str(exc)}
        _, host, port = parse_broker_url(self.cfg.broker)
        connected = self.uplink is not None and self.uplink.connected
        none = catalog["maint.none"]
        return {
            "terminal": self.cfg.terminal,
            "site": self.cfg.site,
            "broker": f"{self.cfg.broker}  ({catalog['maint.connected' if connected else 'maint.disconnected']})",
            "backlog": str(stats.backlog),
            "oldest_pending": stats.oldest_pending_at or none,
            "last_ack": stats.last_ack_at or none,
            "clock": catalog["maint.yes" if clock.clock_synced() else "maint.no"],
            "config_version": self.survey.version or none,
            "software": kiosk.__version__,
            "ip": local_ip(host),
            "ignored_taps": str(self.flow.ignored_taps),
            "error": stats.error or self.uplink_problem() or none,
        }

    # -- screens ----------------------------------------------------------------

    def _page_for(self, flow: Flow):
        view = flow.view
        page = self.pages.get(view)
        if page is None:
            screen = flow.screen
            if screen == Screen.RATING:
                page = RatingPage(self)
            elif screen == Screen.QUESTION:
                page = FollowupPage(self, view)
            elif screen == Screen.PIN:
                page = PinPage(self)
            elif screen == Screen.MAINTENANCE:
                page = MaintenancePage(self)
            else:
                page = MessagePage(self, view)
            self.pages[view] = page
        return page

    def render(self) -> None:
        page = self._page_for(self.flow)
        if page is not self._page:
            self.root.clear_widgets()
            self.root.add_widget(page)
            # The page's size now, so that its refresh lays it out for real.
            self.root.do_layout()
            page.do_layout()
            self._page = page
            self.shown.append((self.flow.view, self.monotonic()))
        page.refresh()

    def _on_resize(self, _window, size) -> None:
        self.layout = theme_mod.Layout(*size)
        self.render()

    # -- touches, buttons, time ---------------------------------------------------

    def press(self, score: int, input: str = "touch") -> None:
        self.terminal.press(score, input)
        self.render()

    def answer(self, field: str, code: str) -> None:
        self.terminal.answer(field, code)
        self.render()

    def skip(self) -> None:
        self.terminal.skip()
        self.render()

    def stray_tap(self) -> None:
        self.terminal.stray_tap()

    def set_language(self, lang: str) -> None:
        self.terminal.set_language(lang)
        self.render()

    def wake(self) -> None:
        self.terminal.wake()
        self.render()

    def open_pin(self) -> None:
        self.terminal.open_pin()
        self.render()

    def pin_digit(self, digit: str) -> None:
        self.terminal.pin_digit(digit)
        self.render()

    def pin_clear(self) -> None:
        self.terminal.pin_clear()
        self.render()

    def pin_submit(self) -> None:
        if not self.terminal.pin_submit() and self.flow.pin_error:
            log.warning("maintenance: wrong PIN entered")
        self.render()

    def close_maintenance(self) -> None:
        self.terminal.close_maintenance()
        self.render()

    def quit(self) -> None:
        self.terminal.quit()

    def tick(self, _dt: float = 0.0) -> None:
        if self.terminal.tick():
            self.render()
        elif self.flow.screen == Screen.QUESTION and self._page is not None:
            self._page.tick()

    def check_hours(self, _dt: float = 0.0) -> None:
        before = self.flow.screen
        self.terminal.set_open(self._open_now())
        if self.flow.screen != before:
            self.render()

    def refresh_maintenance(self, _dt: float = 0.0) -> None:
        if self.flow.screen == Screen.MAINTENANCE:
            self.render()

    def update_leds(self, _dt: float = 0.0) -> None:
        if self.buttons is None:
            return
        try:
            stats = self.outbox.stats()
            error = stats.error or self.uplink_problem()
            backlog = stats.backlog
        except OutboxError as exc:
            error, backlog = str(exc), 0
        self.buttons.show_status(status_light(bool(self.uplink and self.uplink.connected), backlog, error))

    def apply_survey(self, config: SurveyConfig) -> None:
        """A new survey config (already validated and cached): in force from now on."""
        self.terminal.configure(survey_mod.merge(self._base, config))
        self.terminal.set_open(self._open_now())
        self.render()

    # -- the terminal's hooks ----------------------------------------------------------

    def _recorded(self, rating: Rating) -> None:
        self._chime(rating.score)

    def _released(self, _rating_id: str) -> None:
        if self.uplink is not None:
            self.uplink.notify()

    def _chime(self, score: int) -> None:
        if self.buttons is not None:
            self.buttons.flash(score)
        if not self.cfg.ui.sound:
            return
        if self._sound is None:
            from kivy.core.audio import SoundLoader

            self._sound = SoundLoader.load(str(Path(__file__).with_name("chime.wav"))) or False
            if not self._sound:
                log.warning("no audio output: the tap chime is off")
        if self._sound:
            self._sound.stop()
            self._sound.play()


class OnetapApp(App):
    """The kiosk app: opens the outbox (this thread), the uplink (its own thread) and the buttons."""

    title = "onetap"

    def __init__(self, cfg: KioskConfig, **kw):
        super().__init__(**kw)
        self.cfg = cfg
        self.shell: Shell | None = None
        self.exit_code = 0
        self.started_at = time.monotonic()
        self.first_frame_at: float | None = None

    def build(self):
        fonts.register()
        cfg = self.cfg
        outbox = Outbox.open(cfg.outbox_path, retention_days=cfg.outbox.retention_days,
                             chain_seed=cfg.chain_seed)
        # A crash mid-follow-up left ratings held: they are complete, send them.
        outbox.release_all_held()
        survey = survey_mod.Survey(cfg.data_dir / survey_mod.CACHE_FILE)
        shell = Shell(cfg, outbox, survey)
        self.shell = shell
        survey.on_change = lambda config: Clock.schedule_once(lambda _dt: shell.apply_survey(config))
        shell.uplink = Uplink.from_config(cfg, status_extra=shell.status_extra, on_config=survey.offer)
        shell.uplink.start()
        if cfg.buttons.pins:
            try:
                shell.buttons = Buttons.from_config(
                    cfg.buttons,
                    lambda score: Clock.schedule_once(lambda _dt: shell.press(score, "button")),
                )
            except Exception:  # noqa: BLE001 - the touchscreen works without its buttons
                log.exception("GPIO buttons unavailable; touch only")
        if cfg.ui.maintenance_pin == "0000":
            log.warning("the maintenance PIN is the default 0000: set [ui] maintenance_pin")
        Window.bind(on_request_close=self._on_request_close)
        Clock.schedule_interval(shell.tick, TICK_S)
        Clock.schedule_interval(shell.check_hours, HOURS_CHECK_S)
        Clock.schedule_interval(shell.refresh_maintenance, MAINTENANCE_REFRESH_S)
        Clock.schedule_interval(shell.update_leds, LED_CHECK_S)
        shell.render()
        Clock.schedule_once(self._first_frame, 0)
        return shell.root

    def _first_frame(self, _dt) -> None:
        self.first_frame_at = time.monotonic()
        log.info("kiosk %s/%s ready in %.2fs", self.cfg.site, self.cfg.terminal,
                 self.first_frame_at - self.started_at)

    def _on_request_close(self, *_args, **_kw) -> bool:
        # Escape, Alt+F4, the window manager: only the staff screen quits.
        return True

    def on_stop(self) -> None:
        shell = self.shell
        if shell is None:
            return
        if shell.uplink is not None:
            shell.uplink.stop()
        if shell.buttons is not None:
            shell.buttons.close()
        shell.outbox.close()
