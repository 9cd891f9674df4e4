"""Physical buttons and LEDs over GPIO (the only module importing gpiozero): pins -> scores, our own debounce.

gpiozero calls back on its own thread: a press is only debounced here and
handed to *on_press*, which must merely schedule work on the UI thread.
gpiozero's own ``bounce_time`` is not used (its mock pins ignore it, and the
debounce must be tested).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Mapping

log = logging.getLogger(__name__)

CONNECTED = "connected"
BUFFERING = "buffering"
ERROR = "error"
FLASH_S = 0.25


def status_light(connected: bool, backlog: int, error: str | None) -> str:
    """Which status LED is lit: error, else connected with nothing waiting, else buffering."""
    if error:
        return ERROR
    if connected and backlog == 0:
        return CONNECTED
    return BUFFERING


class Debouncer:
    """Counts a press only after *window_s* of quiet on that pin (any edge restarts the quiet)."""

    def __init__(self, window_s: float):
        self.window_s = window_s
        self._last_edge: dict[int, float] = {}
        self._lock = threading.Lock()

    def press(self, pin: int, now: float) -> bool:
        with self._lock:
            last = self._last_edge.get(pin)
            self._last_edge[pin] = now
            return last is None or now - last >= self.window_s

    def release(self, pin: int, now: float) -> None:
        with self._lock:
            self._last_edge[pin] = now


class Buttons:
    """Score buttons, their LEDs, and the status LEDs."""

    def __init__(
        self,
        score_map: Mapping[int, int],
        on_press: Callable[[int], None],
        *,
        leds: Mapping[int, int] | None = None,
        status_leds: Mapping[str, int | None] | None = None,
        debounce_ms: int = 50,
        pull_up: bool = True,
        pin_factory: Any = None,
        monotonic: Callable[[], float] = time.monotonic,
        key_map: Mapping[int, str] | None = None,
        on_key: Callable[[str], None] | None = None,
    ):
        from gpiozero import LED, Button

        self.on_press = on_press
        self.score_map = dict(score_map)
        #: Keypad buttons ◀ ▶ 선택: pin -> action ("left", "right", "select").
        self.key_map = dict(key_map or {})
        self.on_key = on_key
        self.debouncer = Debouncer(debounce_ms / 1000)
        self._monotonic = monotonic
        self.presses = 0
        self.bounces = 0
        self.state: str | None = None
        self._buttons = {}
        self._leds = {}
        self._status = {}
        try:
            for pin in [*self.score_map, *self.key_map]:
                button = Button(pin, pull_up=pull_up, bounce_time=None, pin_factory=pin_factory)
                button.when_pressed = lambda _dev=None, pin=pin: self._pressed(pin)
                button.when_released = lambda _dev=None, pin=pin: self.debouncer.release(pin, self._monotonic())
                self._buttons[pin] = button
            for button_pin, led_pin in (leds or {}).items():
                self._leds[self.score_map[button_pin]] = LED(led_pin, pin_factory=pin_factory)
            for state, led_pin in (status_leds or {}).items():
                if led_pin is not None:
                    self._status[state] = LED(led_pin, pin_factory=pin_factory)
        except Exception:
            self.close()
            raise

    @classmethod
    def from_config(cls, cfg: Any, on_press: Callable[[int], None], **kw: Any) -> "Buttons":
        """From a ``[buttons]`` table (kiosk.config.ButtonsConfig); *on_key* in *kw* for ◀ ▶ 선택."""
        return cls(
            cfg.score_map, on_press, key_map=cfg.key_map,
            leds=dict(zip(cfg.pins, cfg.leds)),
            status_leds={CONNECTED: cfg.led_connected, BUFFERING: cfg.led_buffering, ERROR: cfg.led_error},
            debounce_ms=cfg.debounce_ms, pull_up=cfg.pull_up, **kw,
        )

    def _pressed(self, pin: int) -> None:
        if not self.debouncer.press(pin, self._monotonic()):
            self.bounces += 1
            return
        self.presses += 1
        try:
            if pin in self.key_map:
                if self.on_key is not None:
                    self.on_key(self.key_map[pin])
                return
            self.on_press(self.score_map[pin])
        except Exception:  # noqa: BLE001 - gpiozero's thread must survive a failing handler
            log.exception("button on GPIO %s: press handler failed", pin)

    def flash(self, score: int) -> None:
        """Flash the LED of the button for *score* (a press was recorded)."""
        led = self._leds.get(score)
        if led is not None:
            led.blink(on_time=FLASH_S, off_time=0, n=1, background=True)

    def show_status(self, state: str) -> None:
        """Light the LED for *state* (connected / buffering / error), the others off."""
        if state == self.state:
            return
        self.state = state
        for name, led in self._status.items():
            if name == state:
                if state == ERROR:
                    led.blink(on_time=0.5, off_time=0.5, background=True)
                else:
                    led.on()
            else:
                led.off()

    def close(self) -> None:
        for device in [*self._buttons.values(), *self._leds.values(), *self._status.values()]:
            try:
                device.close()
            except Exception:  # noqa: BLE001 - closing is best effort at shutdown
                log.exception("cannot close GPIO device %s", device)
        self._buttons.clear()
        self._leds.clear()
        self._status.clear()
