"""Physical buttons with gpiozero's MockFactory: a press records a score, bounces count once, LEDs show state."""

from __future__ import annotations


import pytest

pytest.importorskip("gpiozero")
from gpiozero.pins.mock import MockFactory  # noqa: E402

from kiosk.buttons import BUFFERING, CONNECTED, ERROR, Buttons, Debouncer, status_light  # noqa: E402
from kiosk.config import ButtonsConfig  # noqa: E402
from kiosk.flow import Flow, Screen, Settings  # noqa: E402
from kiosk.outbox import Outbox  # noqa: E402
from kiosk.terminal import Terminal  # noqa: E402
from tests.waiting import wait_for


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def factory():
    factory = MockFactory()
    yield factory
    factory.reset()


def make(factory, presses, clock, **kw):
    cfg = ButtonsConfig(pins=(5, 6, 13, 19, 26), leds=(17, 27, 22, 10, 9),
                        led_connected=16, led_buffering=20, led_error=21, **kw)
    return Buttons.from_config(cfg, presses.append, pin_factory=factory, monotonic=clock)


def test_a_press_goes_through_the_terminal_into_the_outbox(factory, tmp_path):
    clock = FakeClock()
    outbox = Outbox.open(tmp_path / "outbox.db")
    terminal = Terminal(Flow(Settings(guard_s=0.5), now=clock()), outbox, monotonic=clock)
    # What the app schedules on its own thread for each press.
    buttons = Buttons({19: 4, 26: 5}, lambda score: terminal.press(score, "button"),
                      pin_factory=factory, monotonic=clock)
    try:
        factory.pin(26).drive_low()  # the screen just appeared: inside its guard
        factory.pin(26).drive_high()
        assert terminal.last_rating is None and terminal.flow.ignored_taps == 1
        clock.now += 0.5
        factory.pin(19).drive_low()
        factory.pin(19).drive_high()
    finally:
        buttons.close()
    rating = terminal.last_rating
    assert rating is not None and terminal.flow.screen == Screen.THANKS
    row = outbox.conn.execute("SELECT score, payload, held FROM ratings").fetchone()
    assert row[0] == 4 and '"input":"button"' in row[1] and rating.input == "button"
    assert row[2] == 0  # released: no question follows, so it may be sent


def test_each_pin_maps_to_its_score(factory):
    presses, clock = [], FakeClock()
    buttons = make(factory, presses, clock)
    try:
        for pin in (5, 6, 13, 19, 26):
            factory.pin(pin).drive_low()
            factory.pin(pin).drive_high()
    finally:
        buttons.close()
    assert presses == [1, 2, 3, 4, 5]


def test_bounce_within_the_window_counts_once(factory):
    presses, clock = [], FakeClock()
    buttons = make(factory, presses, clock, debounce_ms=50)
    pin = factory.pin(13)
    try:
        for _ in range(5):  # contact bounce: edges 5 ms apart
            pin.drive_low()
            clock.now += 0.005
            pin.drive_high()
            clock.now += 0.005
        assert presses == [3] and buttons.bounces == 4
        clock.now += 0.3  # a real second press after quiet
        pin.drive_low()
        pin.drive_high()
        assert presses == [3, 3]
    finally:
        buttons.close()


def test_debouncer_is_per_pin():
    debouncer = Debouncer(0.05)
    assert debouncer.press(1, 0.0) and debouncer.press(2, 0.01)
    assert not debouncer.press(1, 0.02)
    debouncer.release(1, 0.03)
    assert not debouncer.press(1, 0.07)
    assert debouncer.press(1, 0.2)


def test_leds_flash_on_a_recorded_press_and_show_status(factory):
    presses, clock = [], FakeClock()
    buttons = make(factory, presses, clock)
    try:
        buttons.flash(2)
        led = factory.pin(27)
        wait_for(lambda: any(s.state for s in led.states), "the LED to light", timeout=10)
        wait_for(lambda: not led.state, "the LED to go out", timeout=10)
        assert not factory.pin(17).state and len(factory.pin(17).states) <= 1
        buttons.show_status(CONNECTED)
        assert factory.pin(16).state and not factory.pin(20).state
        buttons.show_status(BUFFERING)
        assert factory.pin(20).state and not factory.pin(16).state
        buttons.show_status(ERROR)
        wait_for(lambda: factory.pin(21).state, "the error LED", timeout=10)
        assert not factory.pin(20).state
    finally:
        buttons.close()


def test_status_light():
    assert status_light(True, 0, None) == CONNECTED
    assert status_light(True, 3, None) == BUFFERING
    assert status_light(False, 0, None) == BUFFERING
    assert status_light(True, 0, "disk full") == ERROR


def test_a_failing_handler_does_not_break_the_button(factory):
    calls = []

    def handler(score):
        calls.append(score)
        raise RuntimeError("boom")

    clock = FakeClock()
    buttons = Buttons({5: 1}, handler, pin_factory=factory, monotonic=clock)
    try:
        factory.pin(5).drive_low()
        factory.pin(5).drive_high()
        clock.now += 1
        factory.pin(5).drive_low()
    finally:
        buttons.close()
    assert calls == [1, 1]


def test_keypad_buttons_move_the_focus_and_choose_into_the_outbox(factory, tmp_path):
    """GPIO ◀ ▶ 선택 (no score buttons at all): a rating chosen by focus, stored with input "keypad"."""
    clock = FakeClock()
    outbox = Outbox.open(tmp_path / "outbox.db")
    terminal = Terminal(Flow(Settings(guard_s=0.0), now=clock()), outbox, monotonic=clock)
    cfg = ButtonsConfig(left=17, right=27, select=22)
    assert cfg.key_map == {17: "left", 27: "right", 22: "select"}
    buttons = Buttons.from_config(cfg, lambda score: terminal.press(score, "button"),
                                  on_key=terminal.key, pin_factory=factory, monotonic=clock)
    try:
        for pin in (22, 27, 27, 27, 17, 22):  # wake, ▶▶▶ to 4, ◀ to 3, 선택
            clock.now += 0.2
            factory.pin(pin).drive_low()
            factory.pin(pin).drive_high()
    finally:
        buttons.close()
    rating = terminal.last_rating
    assert rating is not None and (rating.score, rating.input) == (3, "keypad")


def test_a_keypad_pin_may_not_share_a_score_pin():
    from kiosk.config import ConfigError

    with pytest.raises((ConfigError, ValueError), match="used twice"):
        ButtonsConfig(pins=(5, 6, 13, 19, 26), select=26)
