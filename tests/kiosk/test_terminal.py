"""The terminal without a screen: a real outbox, the flow's effects carried out in order, hooks called."""

from __future__ import annotations

import json

import pytest

from kiosk.errors import OutboxFullError
from kiosk.flow import Flow, Question, Screen, Settings
from kiosk.outbox import Outbox
from kiosk.terminal import Terminal

REASON = Question("reason", ("wait_time", "information"), max_score=2)
AGE = Question("age_group", ("30s", "70plus"), key="age")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def parts(tmp_path):
    outbox = Outbox.open(tmp_path / "outbox.db")
    clock = Clock()
    events: list[tuple[str, object]] = []
    flow = Flow(Settings(questions=(REASON, AGE), guard_s=0.5, cooldown_s=0.0, thank_you_s=1.0), clock())
    terminal = Terminal(flow, outbox, monotonic=clock,
                        on_record=lambda rating: events.append(("record", rating.score)),
                        on_release=lambda rating_id: events.append(("release", rating_id)),
                        on_quit=lambda: events.append(("quit", None)))
    yield terminal, outbox, clock, events
    outbox.close()


def stored(outbox: Outbox) -> list[dict]:
    return [{**json.loads(payload), "held": held}
            for payload, held in outbox.conn.execute("SELECT payload, held FROM ratings ORDER BY seq")]


def test_a_visit_with_answers_is_one_rating_held_until_the_last_question(parts):
    terminal, outbox, clock, events = parts
    clock.now += 1
    terminal.press(1)
    rating = terminal.last_rating
    assert terminal.flow.view == "reason" and stored(outbox)[0]["held"] == 1
    clock.now += 1
    terminal.answer("reason", "wait_time")
    assert terminal.flow.view == "age_group" and stored(outbox)[0]["held"] == 1
    clock.now += 1
    terminal.answer("age_group", "70plus")
    assert terminal.flow.screen == Screen.THANKS
    [row] = stored(outbox)
    assert (row["id"], row["score"], row["reason"], row["age_group"], row["held"]) == (
        rating.id, 1, "wait_time", "70plus", 0)
    assert events == [("record", 1), ("release", rating.id)]


@pytest.mark.parametrize("gap", [0.05, 0.25, 0.45])
def test_a_double_tap_records_the_rating_and_no_answer(parts, gap):
    terminal, outbox, clock, events = parts
    clock.now += 1
    terminal.press(2)
    clock.now += gap
    terminal.answer("reason", "information")  # the second tap, where the face was
    terminal.skip()
    clock.now += 30  # nobody answers: the questions time out
    while terminal.tick():
        pass
    [row] = stored(outbox)
    assert (row["score"], row["reason"], row["age_group"], row["held"]) == (2, None, None, 0)
    assert terminal.flow.ignored_taps == 2


def test_a_full_disk_shows_the_error_screen_and_no_thanks(parts, tmp_path):
    terminal, outbox, clock, events = parts
    pages = outbox.conn.execute("PRAGMA page_count").fetchone()[0]
    outbox.conn.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(OutboxFullError):
        for _ in range(10_000):  # fill the last free page
            outbox.record(3)
    events.clear()
    clock.now += 1
    terminal.press(5)
    assert terminal.flow.screen == Screen.ERROR and terminal.last_rating is None
    assert "full" in terminal.record_error and events == []


def test_quit_only_from_the_staff_screen(parts):
    terminal, outbox, clock, events = parts
    terminal.quit()
    assert events == []
    terminal.flow.settings = Settings(pin="2468", guard_s=0.5)
    clock.now += 1
    terminal.open_pin()
    clock.now += 1
    for digit in "2468":
        terminal.pin_digit(digit)
    assert terminal.pin_submit()
    terminal.quit()  # inside the staff screen's guard: a double tap on OK
    assert events == []
    clock.now += 1
    terminal.quit()
    assert events == [("quit", None)]



def test_the_staff_call_hook_fires_when_raised_and_when_it_clears(tmp_path):
    """on_help: raised by the citizen, cleared by staff opening the staff screen or by its time running out."""
    outbox = Outbox.open(tmp_path / "outbox.db")
    clock = Clock()
    calls: list[bool] = []
    flow = Flow(Settings(help_s=60.0), clock())
    terminal = Terminal(flow, outbox, monotonic=clock, on_help=calls.append)
    try:
        terminal.call_help()
        terminal.call_help()  # still raised: no second message
        assert calls == [True]
        terminal.open_pin()  # staff are here
        assert calls == [True, False] and flow.screen == Screen.PIN
        clock.now += flow.settings.pin_timeout_s + 1  # the staff leave the PIN screen unanswered
        terminal.tick()
        assert flow.screen == Screen.RATING
        terminal.call_help()
        clock.now += 30
        terminal.tick()
        assert calls == [True, False, True]
        clock.now += 31
        terminal.tick()
        assert calls == [True, False, True, False]
    finally:
        outbox.close()
