"""The visit flow state machine: every path from a tap to the first screen again, with `now` given."""

from __future__ import annotations

import pytest

from kiosk import protocol
from kiosk.flow import Annotate, Flow, Question, Quit, Record, Release, Screen, Settings
from kiosk.survey import questions


def settings(reasons=protocol.DEFAULT_REASONS, reason_threshold=2, age_group=False, **kw) -> Settings:
    """Settings with the questions a survey config of these values asks."""
    return Settings(questions=questions(reasons, reason_threshold, age_group), **kw)


def tap(flow: Flow, score: int, now: float, rating_id: str = "r1", input: str = "touch"):
    """Press, then (as the app does once the outbox committed) report the id."""
    effects = flow.press(score, now, input)
    if not effects:
        return None, []
    (record,) = effects
    assert isinstance(record, Record)
    return record, flow.recorded(rating_id, now)


@pytest.mark.parametrize("score", [1, 2, 3, 4, 5])
def test_each_score_is_recorded_first_with_language_and_input(score):
    flow = Flow(settings(reason_threshold=0), now=0.0)
    record, after = tap(flow, score, 1.0, input="button")
    assert record == Record(score, "ko", "button")
    assert after == [Release("r1")]
    assert flow.screen == Screen.THANKS and flow.score == score


@pytest.mark.parametrize("score,asks", [(1, True), (2, True), (3, False), (4, False), (5, False)])
def test_reasons_are_asked_at_or_below_the_threshold(score, asks):
    flow = Flow(settings(reason_threshold=2), now=0.0)
    _, after = tap(flow, score, 1.0)
    if asks:
        assert after == [] and flow.view == "reason" and flow.deadline == 11.0
    else:
        assert after == [Release("r1")] and flow.screen == Screen.THANKS


def test_follow_up_answered_annotates_the_same_rating_then_releases_it():
    flow = Flow(settings(reason_threshold=3, age_group=True), now=0.0)
    tap(flow, 2, 1.0, "abc")
    assert flow.answer("reason", "wait_time", 2.0) == [Annotate("abc", "reason", "wait_time")]
    assert flow.view == "age_group" and flow.deadline == 12.0
    assert flow.answer("age_group", "30s", 3.0) == [Annotate("abc", "age_group", "30s"), Release("abc")]
    assert flow.screen == Screen.THANKS and flow.deadline == 5.5
    assert flow.tick(5.4) == [] and flow.screen == Screen.THANKS
    assert flow.tick(5.5) == [] and flow.screen == Screen.RATING and flow.rating_id is None


def test_unknown_answers_are_refused():
    flow = Flow(settings(reasons=("wait_time",), age_group=True), now=0.0)
    tap(flow, 1, 1.0)
    assert flow.answer("reason", "parking", 2.0) == []
    assert flow.answer("age_group", "30s", 2.0) == []  # not the age screen yet
    assert flow.view == "reason"


def test_follow_up_skipped_keeps_the_rating():
    flow = Flow(settings(age_group=True), now=0.0)
    tap(flow, 1, 1.0)
    assert flow.skip(2.0) == [] and flow.view == "age_group"
    assert flow.skip(3.0) == [Release("r1")] and flow.screen == Screen.THANKS
    assert flow.skip(3.1) == []


def test_follow_up_timeout_closes_it_keeping_the_rating():
    flow = Flow(settings(followup_timeout_s=10.0, age_group=True), now=0.0)
    tap(flow, 1, 1.0)
    assert flow.tick(10.9) == [] and flow.view == "reason"
    assert flow.tick(11.0) == [Release("r1")] and flow.screen == Screen.THANKS


def test_age_question_alone_for_good_scores():
    flow = Flow(settings(age_group=True), now=0.0)
    _, after = tap(flow, 5, 1.0)
    assert after == [] and flow.view == "age_group"


def test_no_reasons_configured_means_no_reason_question():
    flow = Flow(settings(reasons=(), reason_threshold=5), now=0.0)
    _, after = tap(flow, 1, 1.0)
    assert after == [Release("r1")]


def test_cooldown_ignores_and_counts_taps():
    flow = Flow(settings(cooldown_s=3.0, thank_you_s=1.0, reason_threshold=0), now=0.0)
    tap(flow, 5, 10.0)
    flow.stray_tap(10.5)  # on the thank-you screen
    flow.tick(11.0)
    assert flow.screen == Screen.RATING
    assert flow.press(4, 12.9) == []
    assert flow.ignored_taps == 2
    flow.stray_tap(13.5)  # after the cooldown: not an ignored rating
    assert flow.ignored_taps == 2
    assert flow.press(4, 13.0) == [Record(4, "ko", "touch")]


def test_a_button_press_during_a_follow_up_ends_that_visit_and_starts_another():
    flow = Flow(settings(cooldown_s=1.0), now=0.0)
    tap(flow, 1, 1.0, "first")
    assert flow.view == "reason"
    record, after = tap(flow, 2, 5.0, "second", input="button")
    assert after == [Release("first")] and flow.rating_id == "second"
    assert flow.view == "reason"


def test_press_while_recording_is_not_doubled():
    flow = Flow(settings(), now=0.0)
    assert flow.press(3, 1.0)
    assert flow.press(3, 1.0) == []


def test_record_failure_shows_an_error_never_thanks():
    flow = Flow(settings(error_s=3.0), now=0.0)
    flow.press(5, 1.0)
    assert flow.record_failed(1.0) == []
    assert flow.screen == Screen.ERROR and flow.rating_id is None
    flow.tick(4.0)
    assert flow.screen == Screen.RATING
    assert flow.press(5, 4.6)  # no cooldown after a failure (only the new screen's guard)


def test_language_is_recorded_and_reset_after_the_visit():
    flow = Flow(settings(reason_threshold=0, thank_you_s=2.0), now=0.0)
    flow.set_language("vi", 1.0)
    record, _ = tap(flow, 4, 2.0)
    assert record.lang == "vi" and flow.lang == "vi"
    flow.tick(4.0)
    assert flow.screen == Screen.RATING and flow.lang == "ko"


def test_language_resets_when_nobody_taps():
    flow = Flow(settings(idle_reset_s=60.0), now=0.0)
    flow.set_language("ja", 10.0)
    flow.tick(69.0)
    assert flow.lang == "ja"
    flow.tick(70.0)
    assert flow.lang == "ko"


def test_unknown_language_is_ignored():
    flow = Flow(settings(languages=("ko", "en")), now=0.0)
    flow.set_language("zh", 1.0)
    assert flow.lang == "ko"


def test_sleep_outside_hours_taps_do_not_count_by_default():
    flow = Flow(settings(), now=0.0, open=False)
    assert flow.screen == Screen.SLEEP
    assert flow.press(5, 1.0, "button") == []
    flow.wake(1.0)
    assert flow.screen == Screen.SLEEP
    flow.set_open(True, 2.0)
    assert flow.screen == Screen.RATING
    flow.set_language("en", 2.5)
    flow.set_open(False, 3.0)
    assert flow.screen == Screen.SLEEP and flow.lang == "ko"


def test_sleep_with_count_when_closed_wakes_on_touch_and_records_buttons():
    flow = Flow(settings(count_when_closed=True, wake_s=30.0, reason_threshold=0, thank_you_s=1.0), now=0.0,
                open=False)
    record, _ = tap(flow, 2, 1.0, input="button")
    assert record == Record(2, "ko", "button")
    flow.tick(2.0)
    assert flow.screen == Screen.SLEEP
    flow.wake(10.0)
    assert flow.screen == Screen.RATING
    flow.tick(39.9)
    assert flow.screen == Screen.RATING
    flow.tick(40.0)
    assert flow.screen == Screen.SLEEP


def test_closing_time_during_a_visit_finishes_the_visit_first():
    flow = Flow(settings(thank_you_s=1.0), now=0.0)
    tap(flow, 1, 1.0)
    flow.set_open(False, 2.0)
    assert flow.view == "reason"
    assert flow.skip(3.0) == [Release("r1")]
    flow.tick(4.0)
    assert flow.screen == Screen.SLEEP


def test_maintenance_pin_right_opens_the_staff_screen_and_allows_quit():
    flow = Flow(settings(pin="2468"), now=0.0)
    assert flow.quit(0.5) == []
    flow.open_pin(1.0)
    assert flow.screen == Screen.PIN
    assert flow.press(5, 1.5) == []  # a button during maintenance is not a rating
    for digit in "2468":
        flow.pin_digit(digit, 2.0)
    assert flow.pin_submit(2.0) and flow.screen == Screen.MAINTENANCE
    assert flow.quit(3.0) == [Quit()]
    flow.close_maintenance(4.0)
    assert flow.screen == Screen.RATING and flow.quit(4.0) == []


def test_maintenance_pin_wrong_is_refused_then_the_pad_closes():
    flow = Flow(settings(pin="2468", max_pin_attempts=3), now=0.0)
    flow.open_pin(1.0)
    for attempt in range(2):
        flow.pin_digit("1", 2.0)
        assert not flow.pin_submit(2.0)
        assert flow.screen == Screen.PIN and flow.pin_error and flow.pin_entry == ""
    assert flow.quit(2.0) == []
    flow.pin_digit("9", 3.0)
    assert not flow.pin_submit(3.0)
    assert flow.screen == Screen.RATING


def test_maintenance_screens_time_out():
    flow = Flow(settings(pin="1", pin_timeout_s=30.0, maintenance_timeout_s=300.0), now=0.0)
    flow.open_pin(1.0)
    flow.tick(31.0)
    assert flow.screen == Screen.RATING
    flow.open_pin(40.0)
    flow.pin_digit("1", 41.0)
    flow.pin_submit(41.0)
    flow.tick(340.0)
    assert flow.screen == Screen.MAINTENANCE
    flow.tick(341.0)
    assert flow.screen == Screen.RATING


def test_pin_pad_cannot_open_mid_visit():
    flow = Flow(settings(), now=0.0)
    tap(flow, 1, 1.0)
    flow.open_pin(2.0)
    assert flow.view == "reason"


def test_empty_pin_never_opens():
    flow = Flow(settings(pin=""), now=0.0)
    flow.open_pin(1.0)
    assert not flow.pin_submit(1.0)


def test_bad_score_is_an_error():
    with pytest.raises(ValueError):
        Flow(settings(), now=0.0).press(6, 1.0)


def test_configure_applies_new_settings_to_the_next_visit():
    flow = Flow(settings(reason_threshold=0), now=0.0)
    flow.configure(settings(reason_threshold=5, reasons=("parking",)), 1.0)
    tap(flow, 5, 2.0)
    assert flow.view == "reason"
    assert flow.answer("reason", "parking", 3.0)[0] == Annotate("r1", "reason", "parking")


# -- questions as data ---------------------------------------------------------------


def test_any_question_is_asked_and_answered_by_its_field():
    visit_purpose = Question("visit_purpose", ("permit", "tax"), max_score=5)
    flow = Flow(Settings(questions=(visit_purpose,)), now=0.0)
    _, after = tap(flow, 5, 1.0, "r9")
    assert after == [] and flow.view == "visit_purpose" and flow.question is visit_purpose
    assert flow.answer("visit_purpose", "parking", 2.0) == []  # not one of its codes
    assert flow.answer("reason", "permit", 2.0) == []  # not the question on screen
    assert flow.answer("visit_purpose", "tax", 2.0) == [Annotate("r9", "visit_purpose", "tax"), Release("r9")]
    assert flow.screen == Screen.THANKS


def test_a_question_follows_only_scores_at_or_below_its_max():
    flow = Flow(Settings(questions=(Question("reason", ("a",), max_score=3),)), now=0.0)
    _, after = tap(flow, 4, 1.0)
    assert after == [Release("r1")]
    flow.tick(10.0)
    _, after = tap(flow, 3, 20.0, "r2")
    assert after == [] and flow.view == "reason"


# -- the new screen's guard ----------------------------------------------------------


@pytest.mark.parametrize("gap", [0.05, 0.2, 0.45])
def test_a_double_tap_never_answers_the_follow_up(gap):
    flow = Flow(settings(age_group=True, guard_s=0.5), now=0.0)
    tap(flow, 2, 1.0)
    assert flow.view == "reason"
    assert flow.answer("reason", "information", 1.0 + gap) == []
    assert flow.skip(1.0 + gap) == [] and flow.view == "reason"
    assert flow.ignored_taps == 2
    assert flow.answer("reason", "information", 1.5) == [Annotate("r1", "reason", "information")]
    assert flow.view == "age_group"
    assert flow.answer("age_group", "70plus", 1.5 + gap) == []  # the next question has its own guard
    assert flow.answer("age_group", "70plus", 2.0)[0] == Annotate("r1", "age_group", "70plus")


def test_every_new_screen_has_the_guard_buttons_too():
    flow = Flow(settings(reason_threshold=0, cooldown_s=0.0, thank_you_s=1.0, guard_s=0.5), now=0.0)
    assert flow.press(4, 0.2, "button") == []  # the first screen, just drawn
    assert flow.press(4, 0.5, "button")
    flow.recorded("r1", 0.5)
    flow.tick(1.5)
    assert flow.screen == Screen.RATING
    flow.set_language("en", 1.7)
    assert flow.lang == "ko"
    assert flow.press(3, 1.9, "button") == []
    assert flow.press(3, 2.0, "button") == [Record(3, "ko", "button")]


def test_a_zero_guard_takes_input_at_once():
    flow = Flow(settings(guard_s=0.0), now=0.0)
    tap(flow, 1, 0.0)
    assert flow.answer("reason", "other", 0.0) == [Annotate("r1", "reason", "other"), Release("r1")]


def test_the_staff_screen_opens_with_the_pin_a_hash_stands_for():
    from kiosk.protocol import hash_pin

    flow = Flow(settings(pin=hash_pin("135790", iterations=1000)), now=0.0)
    flow.open_pin(1.0)
    for digit in "135791":
        flow.pin_digit(digit, 2.0)
    assert not flow.pin_submit(2.0) and flow.screen == Screen.PIN
    for digit in "135790":
        flow.pin_digit(digit, 2.5)
    assert flow.pin_submit(2.5) and flow.screen == Screen.MAINTENANCE


# -- keypad, display modes, enough time, staff call ----------------------------------

from kiosk.flow import BACK, LEFT, OTHER, RIGHT, SELECT  # noqa: E402


def test_the_first_key_only_starts_keypad_and_voice_then_focus_starts_on_face_one():
    flow = Flow(settings(reason_threshold=0, guard_s=0.0), now=0.0)
    assert flow.key(SELECT, 1.0) == []  # not a rating of 1: the citizen has heard nothing yet
    assert flow.keypad and flow.voice and flow.focus == 0 and flow.screen == Screen.RATING
    (record,) = flow.key(SELECT, 2.0)
    assert record == Record(1, "ko", "keypad")


def test_arrows_move_the_focus_without_wrapping():
    flow = Flow(settings(reason_threshold=0, guard_s=0.0), now=0.0)
    flow.key(OTHER, 1.0)
    flow.key(LEFT, 1.1)
    assert flow.focus == 0  # no wrap to 5 at the left end
    for step in range(6):
        flow.key(RIGHT, 1.2 + step / 10)
    assert flow.focus == 4  # stops at 매우 만족
    flow.key(LEFT, 2.0)
    (record,) = flow.key(SELECT, 2.1)
    assert record.score == 4 and record.input == "keypad"


def test_keypad_answers_and_skips_follow_ups_and_voice_doubles_their_time():
    flow = Flow(settings(age_group=True, guard_s=0.0, followup_timeout_s=10.0), now=0.0)
    flow.key(OTHER, 1.0)
    (record,) = flow.key(SELECT, 1.0)
    flow.recorded("k1", 1.0)
    assert flow.view == "reason" and flow.focus == 0 and flow.deadline == 21.0
    flow.key(RIGHT, 2.0)
    assert flow.deadline == 22.0  # a key gives the full time again
    assert flow.key(SELECT, 2.0) == [Annotate("k1", "reason", protocol.DEFAULT_REASONS[1])]
    assert flow.view == "age_group" and flow.focus == 0
    assert flow.key(BACK, 3.0) == [Release("k1")] and flow.screen == Screen.THANKS
    # The visit ends: keypad, voice and focus are the next citizen's again.
    flow.tick(flow.deadline)
    assert flow.screen == Screen.RATING and not flow.keypad and not flow.voice


def test_display_modes_last_the_visit_and_reset_to_the_staff_default():
    flow = Flow(settings(reason_threshold=0, modes=frozenset({"contrast"})), now=0.0)
    assert flow.modes == {"contrast"}
    flow.set_mode("large", True, 1.0)
    flow.set_mode("contrast", False, 1.0)
    flow.set_mode("bogus", True, 1.0)
    assert flow.modes == {"large"}
    tap(flow, 3, 2.0)
    assert flow.modes == {"large"}  # through the thank-you
    flow.tick(flow.deadline)
    assert flow.screen == Screen.RATING and flow.modes == {"contrast"}


def test_a_touch_extends_a_follow_up_and_its_timeout_is_flagged_for_announcement():
    flow = Flow(settings(followup_timeout_s=10.0), now=0.0)
    tap(flow, 1, 1.0)
    flow.more_time(9.0)
    assert flow.tick(11.0) == [] and flow.view == "reason"
    assert flow.tick(19.0) == [Release("r1")] and flow.screen == Screen.THANKS and flow.timed_out


def test_a_staff_call_is_raised_until_staff_come_or_it_expires():
    flow = Flow(settings(help_s=100.0), now=0.0)
    flow.call_help(1.0)
    assert flow.help_requested(50.0) and not flow.help_requested(101.0)
    flow.call_help(102.0)
    flow.open_pin(103.0)
    assert not flow.help_requested(104.0)


def test_hold_keeps_a_timed_screen_while_it_is_spoken_but_never_the_rating_screen():
    flow = Flow(settings(reason_threshold=0, thank_you_s=2.0), now=0.0)
    flow.hold(50.0)
    assert flow.deadline is None
    tap(flow, 5, 1.0)
    flow.hold(4.0)
    assert flow.tick(3.5) == [] and flow.screen == Screen.THANKS
    flow.tick(4.0)
    assert flow.screen == Screen.RATING
