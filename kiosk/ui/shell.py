"""The app shell: runs the visit flow on Kivy's thread, carries out its effects on the outbox, draws screens.

Threads: Kivy's main thread owns every widget, the flow and its own Outbox.
The uplink's thread and gpiozero's thread only Clock.schedule_once onto it.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any

from kivy.app import App
from kivy.clock import Clock
from kivy.core.window import Window
from kivy.uix.floatlayout import FloatLayout
from kivy.uix.scrollview import ScrollView

import kiosk
from kiosk import clock, survey as survey_mod, voice as voice_mod
from kiosk.buttons import Buttons, status_light
from kiosk.catalog import load_catalogs
from kiosk.config import KioskConfig, parse_broker_url
from kiosk.errors import OutboxError
from kiosk.flow import BACK, LEFT, OTHER, RIGHT, SELECT, Flow, Screen, Settings
from kiosk.outbox import Outbox
from kiosk.protocol import Rating, SurveyConfig
from kiosk.terminal import Terminal
from kiosk.ui import fonts, rasteriser, theme as theme_mod
from kiosk.ui.screens import (AccessPanel, AccessButton, FollowupPage, MaintenancePage, MessagePage,
                              PinPage, RatingPage, draw_focus)
from kiosk.ui.speaker import Speaker
from kiosk.uplink import Uplink

log = logging.getLogger(__name__)

TICK_S = 0.1
HOURS_CHECK_S = 15.0
LED_CHECK_S = 2.0
MAINTENANCE_REFRESH_S = 1.0
CORNER = 0.12  # the hidden corner's side, as a fraction of the window height
#: Low screen mode: every target within this lower part of the window (wheelchair reach).
LOW_SCREEN = 0.62
#: Kivy key codes of a USB keypad (and a keyboard): arrows, Enter, keypad Enter, Escape, keypad digits.
KEYS = {276: LEFT, 273: LEFT, 260: LEFT, 264: LEFT, 275: RIGHT, 274: RIGHT, 262: RIGHT, 258: RIGHT,
        13: SELECT, 271: SELECT, 261: SELECT, 27: BACK, 8: BACK}
#: Citizen screens the accessibility control is on.
CITIZEN_SCREENS = (Screen.RATING, Screen.QUESTION, Screen.THANKS, Screen.ERROR, Screen.SLEEP)


def base_settings(cfg: KioskConfig) -> Settings:
    ui = cfg.ui
    modes = {mode for mode, on in (("large", ui.large_text), ("contrast", ui.high_contrast),
                                   ("voice", ui.voice), ("low", ui.low_screen)) if on}
    return Settings(
        modes=frozenset(modes),
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
        self._bg = None

    def set_background(self, rgb) -> None:
        """Behind the page: the empty upper part in low screen mode."""
        if rgb == self._bg:
            return
        self._bg = rgb
        from kivy.graphics import Color, Rectangle

        self.canvas.before.clear()
        with self.canvas.before:
            Color(*rgb, 1)
            self._bg_rect = Rectangle(pos=self.pos, size=self.size)
        self.bind(size=self._resize_bg)

    def _resize_bg(self, *_):
        self._bg_rect.size = self.size

    def _in_corner(self, touch) -> bool:
        side = self.height * CORNER
        return touch.x <= self.x + side and touch.y <= self.y + side

    def on_touch_down(self, touch):
        if self._in_corner(touch):
            self._cancel_hold()
            self._hold = Clock.schedule_once(lambda _dt: self.shell.open_pin(),
                                             self.shell.cfg.ui.maintenance_hold_s)
            touch.ud["onetap_corner"] = True
        # Any touch on a timed screen gives it its full time again.
        self.shell.terminal.more_time()
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
        self._base = base_settings(cfg)
        flow = Flow(survey_mod.merge(self._base, survey.current), monotonic(), open=self._open_now())
        self.terminal = Terminal(flow, outbox, monotonic=monotonic, on_record=self._recorded,
                                 on_release=self._released, on_quit=lambda: App.get_running_app().stop(),
                                 on_help=self._help_changed)
        self.root = Root(self)
        self.speaker = Speaker(voice_mod.Prompts.from_config(cfg), cfg.ui.voice_volume, monotonic)
        #: Spoken before the next screen's announcement (what was just chosen, a timeout).
        self._prefix: list[str] = []
        self._said: tuple | None = None
        self._repeat = False
        self.access = AccessButton(self)
        self.panel = AccessPanel(self)
        #: The open panel: None, "access" (display and voice) or "languages" (the chooser).
        self.panel_open: str | None = None
        #: The page's height: the window's part, or more where it scrolls (large mode, long texts).
        self.page_height = 0.0
        #: The top of the part of the page that holds its targets: the page's height, or in a split
        #: low screen the lower part's.
        self.reach = 0.0
        #: Low screen mode, split: targets in the lower part, the texts no one touches above it.
        self.split = False
        #: Holds the page where it is taller than the window (large mode, or texts a 7" display cannot hold).
        self.scroll = ScrollView(do_scroll_x=False, do_scroll_y=True, scroll_type=["bars", "content"],
                                 size_hint=(1, None), pos=(0, 0))
        self.stage = FloatLayout(size_hint=(None, None))
        self.scroll.add_widget(self.stage)
        self.scroll.bind(scroll_x=self._redraw_focus, scroll_y=self._redraw_focus)
        #: The focus (view, index) the scrolling page was last brought to.
        self._followed: tuple | None = None
        self.pages: dict[str, Any] = {}
        self._page = None
        self._fonts: dict[tuple[str, str], str] = {}
        self._sound = None
        self._voices_lock = threading.Lock()
        #: Why the site's own texts are not voiced, for the status and the maintenance screen.
        self.voice_problem: str | None = None
        #: Finishes each frame before the next touch (software GL), or None (kiosk/ui/rasteriser.py).
        self.frame_finisher: rasteriser.FrameFinisher | None = None
        #: Screens shown (for tests and the benchmark): (view, monotonic time).
        self.shown: list[tuple[str, float]] = []
        Window.bind(size=self._on_resize)
        Window.bind(on_key_down=self._on_key_down)

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
    def theme(self) -> theme_mod.Theme:
        modes = self.flow.modes
        return theme_mod.theme("contrast" in modes, "large" in modes)

    @property
    def low(self) -> bool:
        return "low" in self.flow.modes and self.flow.screen in CITIZEN_SCREENS

    @property
    def layout(self) -> theme_mod.Layout:
        """The page's geometry: the whole window, or its lower part in low screen mode."""
        width, height = Window.size
        zoom = self.theme.zoom if self.flow.screen in CITIZEN_SCREENS else 1.0
        return theme_mod.Layout.for_window(width, round(height * LOW_SCREEN) if self.low else height,
                                           (width, height), zoom)

    @property
    def upper(self) -> int:
        """Low screen mode: the height of the part above the reach range (texts only), else 0."""
        height = Window.size[1]
        return height - round(height * LOW_SCREEN) if self.low else 0

    @property
    def full_layout(self) -> theme_mod.Layout:
        """The whole window's geometry at the default size (a split low screen's texts)."""
        width, height = Window.size
        return theme_mod.Layout.for_window(width, height, (width, height))

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
        total = self.flow.timeout(self.flow.settings.followup_timeout_s)
        return (deadline - self.monotonic()) / total if total else 0.0

    def status_extra(self) -> dict[str, Any]:
        """Status fields only the UI knows (called on the uplink's thread: plain reads)."""
        extra = {"config_version": self.survey.version, "ignored_taps": self.flow.ignored_taps}
        if self.voice_problem:
            extra["error"] = self.voice_problem
        if self.cfg.ui.help_button:
            extra["help_requested"] = self.flow.help_requested(self.monotonic())
        return extra

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
            "error": stats.error or self.uplink_problem() or self.voice_problem or none,
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
        flow = self.flow
        page = self._page_for(flow)
        layout = self.layout
        citizen = flow.screen in CITIZEN_SCREENS
        new = page is not self._page
        if new:
            self.panel_open = None  # a new screen: its own targets, not the panel
            self._followed = None
        # Low screen: the texts above the reach range where that leaves every target in it unscrolled.
        self.split = False
        self.split = (citizen and self.low and layout.zoom == 1 and hasattr(page, "splits")
                      and page.splits(layout))
        wanted = page.wanted_height(layout) if hasattr(page, "wanted_height") else layout.height
        self.page_height = max(layout.height, round(wanted))
        # Larger than the window: the page scrolls (a finger drags it, the keypad's focus brings
        # the focused target into view); else it is the window's, with no scrolling delay on a tap.
        scrolled = citizen and (layout.zoom > 1 or self.page_height > layout.height)
        self.reach = self.page_height
        if self.split:
            self.page_height = Window.size[1]
        host = self.stage if scrolled else self.root
        page.size_hint = (None, None)
        page.size = (layout.width, self.page_height)
        page.pos = (0, 0)
        if new or page.parent is not host:
            self.root.clear_widgets()
            self.stage.clear_widgets()
            host.add_widget(page)
            if scrolled:
                self.root.add_widget(self.scroll)
            self._page = page
            if new:
                self.shown.append((flow.view, self.monotonic()))
        if scrolled:
            width, height = Window.size
            self.scroll.size = (width, round(height * LOW_SCREEN) if self.low else height)
            self.scroll.bar_width = round(8 * layout.zoom)
            self.stage.size = (layout.width, self.page_height)
            if new:
                self.scroll.scroll_x, self.scroll.scroll_y = 0, 1  # from the top left
        # The page's size now, so that its refresh lays it out for real.
        self.root.do_layout()
        page.do_layout()
        page.refresh()
        self.root.set_background(self.theme.background)
        for widget in (self.access, self.panel):
            if widget.parent is not None:
                widget.parent.remove_widget(widget)
        if citizen:
            host.add_widget(self.access)
            self.access.refresh()
            if self.panel_open:
                host.add_widget(self.panel)
                self.panel.refresh()
        self.draw_focus()
        self._announce()

    def draw_focus(self, *_args) -> None:
        """The keypad's focus ring around the focused face or answer (none without a keypad)."""
        target = None
        flow, page = self.flow, self._page
        if flow.keypad and not self.panel_open:
            target = page.focus_target(flow.focus) if hasattr(page, "focus_target") else None
        if target is not None and (flow.view, flow.focus) != self._followed:
            self._followed = (flow.view, flow.focus)
            if hasattr(page, "reveal"):
                page.reveal(target)  # a list of answers that scrolls on its own
            if self.scroll.parent is not None:
                self._bring_into_view(target)
        draw_focus(self.root, target, self.theme)
        if target is not None and not getattr(self, "_focus_again", None):
            # Kivy lays out a new page at the next frame: draw again once it has.
            self._focus_again = Clock.schedule_once(self._redraw_focus, 0)

    def _bring_into_view(self, target, pad: float = 10) -> None:
        """Scroll the page so that *target* is in view; one larger than the window shows its top left."""
        scroll, stage = self.scroll, self.stage
        for effect in (scroll.effect_x, scroll.effect_y):
            if effect is not None:
                effect.velocity = 0  # a glide still under way would carry the page off again
        x, y = target.x - stage.x, target.y - stage.y  # in the page (the stage is the scrolled content)
        room_x, room_y = stage.width - scroll.width, stage.height - scroll.height
        left, bottom = scroll.scroll_x * room_x, scroll.scroll_y * room_y
        if target.width + 2 * pad > scroll.width or x < left + pad:
            left = x - pad
        elif x + target.width + pad > left + scroll.width:
            left = x + target.width + pad - scroll.width
        if target.height + 2 * pad > scroll.height or y + target.height + pad > bottom + scroll.height:
            bottom = y + target.height + pad - scroll.height
        elif y < bottom + pad:
            bottom = y - pad
        scroll.scroll_x = min(1.0, max(0.0, left / room_x)) if room_x > 0 else 0.0
        scroll.scroll_y = min(1.0, max(0.0, bottom / room_y)) if room_y > 0 else 1.0

    def _redraw_focus(self, *_args) -> None:
        self._focus_again = None
        flow, page = self.flow, self._page
        target = page.focus_target(flow.focus) if flow.keypad and hasattr(page, "focus_target") else None
        draw_focus(self.root, None if self.panel_open else target, self.theme)

    def _on_resize(self, _window, size) -> None:
        self.render()

    # -- voice ---------------------------------------------------------------------------

    def _announce(self) -> None:
        """Speak what changed: a new screen (its question, the focused target), else a focus move."""
        flow = self.flow
        if not flow.voice or flow.screen not in CITIZEN_SCREENS:
            if self._said is not None:
                self.speaker.stop()
            self._said = None
            self._prefix = []
            return
        question = flow.question if flow.screen == Screen.QUESTION else None
        qkey = question.catalog_key if question is not None else None
        codes = question.codes if question is not None else ()
        state = (flow.view, flow.lang, flow.focus)
        repeat, self._repeat = self._repeat, False
        if state == self._said and not repeat:
            return
        before, self._said = self._said, state
        focused = voice_mod.option_key(flow.view, qkey, codes, flow.focus) if flow.keypad and flow.targets() else None
        if before is None or before[:2] != state[:2]:
            if before is None:
                self.speaker.preload(flow.lang, voice_mod.spoken_keys(self.catalog)
                                     + list(voice_mod.site_texts(self.survey.current, self.catalog)))
            keys = self._prefix + voice_mod.screen_prompts(flow.view, qkey, focused, flow.keypad)
        else:
            keys = [focused] if focused else []
        self._prefix = []
        keys = voice_mod.as_shown(keys, self.survey.current, self.catalog, self.speaker.prompts)
        self.speaker.say(flow.lang, keys, interrupt=True)

    def _chosen(self, key: str | None) -> None:
        if self.flow.voice and key:
            self._prefix = [key, "voice.chosen"]

    # -- accessibility control -------------------------------------------------------------

    def toggle_panel(self, kind: str = "access") -> None:
        """Open the display-and-voice panel or the language chooser (*kind*), or close it."""
        if self.flow.screen in CITIZEN_SCREENS:
            self.panel_open = None if self.panel_open == kind else kind
            self.terminal.more_time()
            self.render()

    def set_mode(self, mode: str, on: bool) -> None:
        self.terminal.set_mode(mode, on)
        self.render()

    def call_help(self) -> None:
        self.terminal.call_help()
        if self.flow.voice:
            self.speaker.say(self.flow.lang, ["voice.help"], interrupt=True)
        self.render()

    def set_voice_default(self, on: bool) -> None:
        """The staff screen: voice guidance on for every visit, or only when a citizen starts it."""
        modes = set(self._base.modes)
        modes.add("voice") if on else modes.discard("voice")
        import dataclasses

        self._base = dataclasses.replace(self._base, modes=frozenset(modes))
        self.terminal.configure(survey_mod.merge(self._base, self.survey.current))
        self.render()

    def set_volume(self, volume: float) -> None:
        self.speaker.volume = max(0.0, min(1.0, round(volume, 2)))
        self.render()

    # -- touches, buttons, time ---------------------------------------------------

    def press(self, score: int, input: str = "touch") -> None:
        view = self.flow.view
        self.terminal.press(score, input)
        if self.flow.view != view:
            self._chosen(f"score.{score}")
        self.render()

    def answer(self, field: str, code: str) -> None:
        question = self.flow.question
        self.terminal.answer(field, code)
        if question is not None and self.flow.question is not question:
            self._chosen(f"{question.catalog_key}.{code}")
        self.render()

    def key(self, action: str) -> None:
        """A keypad key or a GPIO ◀ ▶ 선택 button."""
        flow = self.flow
        if self.panel_open:
            self.panel_open = None
        view, question = flow.view, flow.question
        chosen = voice_mod.option_key(view, question.catalog_key if question else None,
                                      question.codes if question else (), flow.focus)
        started, focus = flow.keypad, flow.focus
        self.terminal.key(action)
        # At either end the focus stays: say again where it is (a blind citizen hears the end).
        self._repeat = started and action in (LEFT, RIGHT) and flow.focus == focus and flow.view == view
        if started and action == SELECT and flow.view != view:
            self._chosen(chosen)
        self.render()

    def _on_key_down(self, _window, key, _scancode=None, _codepoint=None, _modifiers=None, *_rest) -> bool:
        if self.flow.screen not in CITIZEN_SCREENS:
            return False
        self.key(KEYS.get(key, OTHER))
        return True  # Escape included: never Kivy's own quit

    def skip(self) -> None:
        self.terminal.skip()
        self.render()

    def stray_tap(self) -> None:
        self.terminal.stray_tap()

    def set_language(self, lang: str) -> None:
        self.terminal.set_language(lang)
        self.panel_open = None  # the chooser has done its work
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
        if self.flow.voice and self.speaker.speaking:
            # Not cut off mid-sentence: the screen waits for its announcement.
            self.terminal.hold(TICK_S * 3)
        if self.terminal.tick():
            if self.flow.timed_out:
                self._prefix = ["voice.timeout"]
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
        self.render_site_voices(config)
        self.render()

    def render_site_voices(self, config: SurveyConfig | None) -> None:
        """The site's own texts as voice prompts, rendered on a thread of their own (espeak-ng takes seconds)."""
        if config is None or not (config.question or config.reason_labels):
            self.voice_problem = None  # no site texts to voice
            return
        threading.Thread(target=self._render_site_voices, args=(config,), name="site-voices", daemon=True).start()

    def _render_site_voices(self, config: SurveyConfig) -> None:
        # A thread of its own that nothing waits for: whatever goes wrong is
        # logged and shown (status, maintenance screen) here, or nowhere.
        with self._voices_lock:
            if config is not self.survey.current:
                return  # a newer config came meanwhile: its own thread renders its texts
            try:
                done = voice_mod.render(self.catalogs, self.speaker.prompts.cache, survey=config, site_only=True)
            except voice_mod.VoiceError as exc:
                log.warning("the site's texts are not voiced: %s", exc)
                self.voice_problem = f"the site's texts are not voiced: {exc}"
                return
            except Exception as exc:  # noqa: BLE001 - see above; the kiosk goes on without them
                log.exception("voicing the site's texts failed")
                self.voice_problem = f"the site's texts are not voiced: {exc!r}"
                return
            self.voice_problem = None
        log.info("site texts of survey config %s voiced: %s", config.version, done)
        Clock.schedule_once(lambda _dt: self.speaker.forget(voice_mod.SITE))

    # -- the terminal's hooks ----------------------------------------------------------

    def _recorded(self, rating: Rating) -> None:
        self._chime(rating.score)

    def _help_changed(self, _requested: bool) -> None:
        if self.uplink is not None:
            self.uplink.status_changed()  # the board shows the staff call now, not at the next Status

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
        shell.render_site_voices(survey.current)  # the cached config's, unless rendered before
        survey.on_change = lambda config: Clock.schedule_once(lambda _dt: shell.apply_survey(config))
        shell.uplink = Uplink.from_config(cfg, status_extra=shell.status_extra, on_config=survey.offer)
        shell.uplink.start()
        if cfg.buttons.pins:
            try:
                shell.buttons = Buttons.from_config(
                    cfg.buttons,
                    lambda score: Clock.schedule_once(lambda _dt: shell.press(score, "button")),
                    on_key=lambda action: Clock.schedule_once(lambda _dt: shell.key(action)),
                )
            except Exception:  # noqa: BLE001 - the touchscreen works without its buttons
                log.exception("GPIO buttons unavailable; touch only")
        if cfg.buttons.key_map and shell.buttons is None:
            try:
                shell.buttons = Buttons.from_config(
                    cfg.buttons, lambda score: None,
                    on_key=lambda action: Clock.schedule_once(lambda _dt: shell.key(action)))
            except Exception:  # noqa: BLE001 - the touchscreen works without its buttons
                log.exception("GPIO keypad buttons unavailable; touch only")
        if cfg.ui.maintenance_pin == "0000":
            log.warning("the maintenance PIN is the default 0000: set [ui] maintenance_pin")
        Window.bind(on_request_close=self._on_request_close)
        shell.frame_finisher = rasteriser.bind(Window, cfg.ui.finish_frames)
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
        shell.speaker.stop()
        if shell.uplink is not None:
            shell.uplink.stop()
        if shell.buttons is not None:
            shell.buttons.close()
        shell.outbox.close()
