"""Drives the real kiosk app in a real (offscreen or Xvfb) window with real touches; one scenario per process.

    python -m tests.kiosk.ui.driver SCENARIO CONFIG.toml RESULT.json [--size WxH] [--shots DIR]

Kivy makes one window per process and reads the command line on import, so
the tests run this as a subprocess (see tests/kiosk/ui/test_app.py). Steps
are generators: ``yield callable`` waits (polled every frame) until it is
true, ``yield seconds`` lets the app run that long. The result JSON holds
what the scenario saw; the tests read the outbox's SQLite file themselves.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

STEP_TIMEOUT = 30.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario")
    parser.add_argument("config", type=Path)
    parser.add_argument("result", type=Path)
    parser.add_argument("--size", default=None)
    parser.add_argument("--shots", type=Path, default=None)
    parser.add_argument("--langs", default="ko,en")
    args = parser.parse_args(argv)

    from kiosk.config import load_config
    from kiosk.ui.app import configure_kivy

    cfg = load_config(args.config, env={})
    size = tuple(int(v) for v in args.size.split("x")) if args.size else None
    configure_kivy(cfg, size)

    from kivy.clock import Clock

    from kiosk.ui.shell import OnetapApp

    result: dict = {"steps": []}
    app = OnetapApp(cfg)
    scenario = SCENARIOS[args.scenario]
    state = {"gen": None, "waiting": None, "deadline": 0.0, "until": 0.0}

    def finish(error: str | None = None) -> None:
        result["error"] = error
        args.result.write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")
        app.stop()

    def pump(_dt) -> None:
        try:
            if state["gen"] is None:
                result["frames_finished"] = app.shell.frame_finisher is not None
                state["gen"] = scenario(app, result, args)
            now = time.monotonic()
            waiting = state["waiting"]
            if waiting is not None:
                if not waiting():
                    if now > state["deadline"]:
                        raise AssertionError(f"timed out waiting: {getattr(waiting, 'what', waiting)}")
                    return
                state["waiting"] = None
            if now < state["until"]:
                return
            step = next(state["gen"])
            if callable(step):
                state["waiting"] = step
                state["deadline"] = now + STEP_TIMEOUT
            else:
                state["until"] = now + float(step)
        except StopIteration:
            event.cancel()
            finish()
        except Exception:  # noqa: BLE001 - reported to the test through the result file
            event.cancel()
            finish(traceback.format_exc())

    event = Clock.schedule_interval(pump, 0)
    app.run()
    if not args.result.exists():
        error = None if result.get("expect_stop") else "the app stopped before the scenario ended"
        args.result.write_text(json.dumps({**result, "error": error}, ensure_ascii=False), encoding="utf-8")
    return 0


# -- helpers -----------------------------------------------------------------------


def tap(widget) -> None:
    """A real touch (down and up) at the widget's centre, through the window's input dispatch."""
    from kivy.tests.common import UnitTestTouch

    x, y = widget.to_window(*widget.center)
    touch = UnitTestTouch(x, y)
    touch.touch_down()
    touch.touch_up()


def touch_at(x: float, y: float):
    from kivy.tests.common import UnitTestTouch

    touch = UnitTestTouch(x, y)
    touch.touch_down()
    return touch


def screen_is(app, name: str):
    """The screen *name* (a question by its field: "reason", "age_group") is drawn."""
    def check():
        shell = app.shell
        return shell.flow.view == name and shell._page is shell.pages.get(name)
    check.what = f"screen {name}"
    return check


def ready(app, name: str):
    """The screen *name* is drawn and its input guard is over: a tap now is a citizen's choice."""
    drawn = screen_is(app, name)

    def check():
        return drawn() and not app.shell.flow.guarding(app.shell.monotonic())
    check.what = f"screen {name}, past its guard"
    return check


def visible_texts(widget) -> list[str]:
    from kivy.uix.label import Label

    out = []
    for child in widget.walk(restrict=True):
        if isinstance(child, Label) and child.text.strip() and child.opacity > 0:
            out.append(child.text)
    return out


def page(app):
    return app.shell._page


def drawing(widget) -> list:
    """What a widget's canvas draws, comparable: each instruction's kind, colour and points."""
    out = []
    for instruction in widget.canvas.children:
        entry = [type(instruction).__name__]
        for attribute in ("rgba", "points", "pos", "size", "circle"):
            value = getattr(instruction, attribute, None)
            if value is not None:
                entry.append([round(v, 2) for v in value])
        out.append(entry)
    return out


def settings(app, **changes):
    """Change the visit settings; reason_threshold and age_group become the questions, as a survey config's do."""
    import dataclasses

    from kiosk.survey import questions

    if "reason_threshold" in changes or "age_group" in changes:
        changes["questions"] = questions(reason_threshold=changes.pop("reason_threshold", 2),
                                         age_group=changes.pop("age_group", False))
    shell = app.shell
    shell.flow.configure(dataclasses.replace(shell.flow.settings, **changes), shell.monotonic())
    shell.render()


# -- scenarios -----------------------------------------------------------------------


def ratings(app, result, args):
    """Each tile records its score; follow-up answers land in the same rating; language switch."""
    from kivy.core.window import Window

    from kiosk.ui import rasteriser

    shell = app.shell
    yield screen_is(app, "rating")
    yield 0.1
    result["window"] = list(Window.size)
    rating_page = page(app)
    result["tile_widths"] = [t.width for t in rating_page.tiles]
    result["tile_labels"] = [t.label.text for t in rating_page.tiles]
    result["start_texts"] = visible_texts(shell.root)
    # 0. a finger on the last tile shades it; slid off before it lifts, it records nothing
    from kivy.graphics import Color

    tile = rating_page.tiles[4]
    shade = lambda: next(list(i.rgba) for i in tile.canvas.before.children if isinstance(i, Color))  # noqa: E731
    result["tile_shades"] = [shade()]
    touch = touch_at(*tile.to_window(*tile.center))
    result["tile_shades"].append(shade())
    touch.touch_move(Window.width / 2, Window.height - 5)
    touch.touch_up()
    result["tile_shades"].append(shade())
    yield 0.1
    result["slid_off_screen"], result["slid_off_recorded"] = shell.flow.screen.value, shell.last_rating is not None
    # 1. every tile, no follow-up. The thank-you stays 1 s: at 0.3 s a loaded
    # suite once stalled the UI thread past it, and the wait for it timed out.
    settings(app, reason_threshold=0, cooldown_s=0.0, thank_you_s=1.0)
    ids = []
    result["thanks_drawn"] = []
    flips = []
    count_flip = lambda *_a: flips.append(None)  # noqa: E731 - bound and unbound by identity
    Window.bind(on_flip=count_flip)
    finished_before = shell.frame_finisher.frames if shell.frame_finisher else 0
    for index in range(5):
        yield ready(app, "rating")
        tap(page(app).tiles[index])
        yield screen_is(app, "thanks")
        ids.append(shell.last_rating.id)
        thanks = page(app)
        result["thanks_drawn"].append({"sign": drawing(thanks.face), "background": list(thanks._bg),
                                       "texts": visible_texts(thanks)})
    Window.unbind(on_flip=count_flip)
    result["tile_ids"] = ids
    result["frames"] = {"renderer": rasteriser.renderer(), "flipped": len(flips),
                        "finished": (shell.frame_finisher.frames if shell.frame_finisher else 0) - finished_before}
    # 2. follow-up answered: reason and age group
    settings(app, reason_threshold=2, age_group=True, followup_timeout_s=1.0)
    yield ready(app, "rating")
    tap(page(app).tiles[0])
    yield ready(app, "reason")
    result["reason_texts"] = visible_texts(shell.root)
    tap(page(app).options["wait_time"])
    yield ready(app, "age_group")
    tap(page(app).options["30s"])
    yield screen_is(app, "thanks")
    result["answered_id"] = shell.last_rating.id
    # 3. follow-up skipped, then timed out
    yield ready(app, "rating")
    tap(page(app).tiles[1])
    yield ready(app, "reason")
    tap(page(app).skip)
    yield screen_is(app, "age_group")
    yield screen_is(app, "thanks")  # the age question times out by itself
    result["skipped_id"] = shell.last_rating.id
    # 4. language switch changes every visible label and the recorded lang
    settings(app, reason_threshold=0, age_group=False)
    result["languages"] = {}
    result["chooser"] = {}
    for lang in ("en", "zh", "vi", "ja"):
        yield ready(app, "rating")
        yield from choose_language(app, lang, result["chooser"])
        result["languages"][lang] = [visible_texts(shell.root), page(app).hint.height > 0]
    yield from choose_language(app, "en", {})
    tap(page(app).tiles[3])
    yield screen_is(app, "thanks")
    result["thanks_texts_en"] = visible_texts(shell.root)
    result["english_id"] = shell.last_rating.id
    yield screen_is(app, "rating")
    result["after_visit_lang"] = shell.flow.lang
    result["after_visit_texts"] = [visible_texts(shell.root), page(app).hint.height > 0]


def choose_language(app, lang: str, seen: dict):
    """Tap *lang* on the language bar, or where the names do not fit it (a 7" display), on the
    **Language** button and then in the chooser it opens (*seen* records the chooser's texts)."""
    shell = app.shell
    bar = page(app).languages
    if bar.compact:
        tap(bar.choose)
        yield lambda: shell.panel.parent is not None
        seen[lang] = [shell.flow.lang, visible_texts(shell.panel)]
        tap(shell.panel.languages[lang])
    else:
        tap(bar.buttons[lang])
    yield lambda: shell.flow.lang == lang
    yield lambda: shell.panel.parent is None


def guards(app, result, args):
    """Cooldown ignores and counts taps; Escape does not quit; the PIN opens the staff screen; quit."""
    from kivy.core.window import Window

    shell = app.shell
    yield ready(app, "rating")
    settings(app, reason_threshold=0, cooldown_s=60.0, thank_you_s=0.3)
    tap(page(app).tiles[4])
    yield screen_is(app, "thanks")
    tap(page(app))  # a child hammering the thank-you screen
    yield ready(app, "rating")
    tap(page(app).tiles[2])
    tap(page(app).tiles[2])
    yield 0.2
    result["screen_after_ignored"] = shell.flow.screen.value
    result["ignored_taps"] = shell.status_extra()["ignored_taps"]
    # Escape and a window close request do not quit
    Window.dispatch("on_key_down", 27, 9, "", [])
    Window.dispatch("on_keyboard", 27, 9, "", [])
    Window.dispatch("on_request_close")
    yield 0.3
    result["alive_after_escape"] = True
    # hidden gesture: a long press in the bottom-left corner
    touch = touch_at(3, 3)
    yield ready(app, "pin")
    touch.touch_up()
    pin = page(app)
    for digit in "9999":
        tap(pin.keys[digit])
    tap(pin.keys["ok"])
    yield lambda: shell.flow.pin_error
    result["wrong_pin_screen"] = shell.flow.screen.value
    for digit in shell.cfg.ui.maintenance_pin:
        tap(pin.keys[digit])
    tap(pin.keys["ok"])
    yield ready(app, "maintenance")
    result["maintenance_texts"] = visible_texts(shell.root)
    result["maintenance_info"] = shell.maintenance_info()
    # Voice guidance on for every visit, and its volume, from the staff screen.
    tap(page(app).voice)
    tap(page(app).volume)
    result["staff_voice"] = ["voice" in shell.flow.settings.modes, shell.speaker.volume, page(app).volume.text]
    result["expect_stop"] = True
    tap(page(app).exit)
    yield 30.0  # the app stops here, and the runner writes the result
    raise AssertionError("Quit on the staff screen did not stop the app")


def sleep(app, result, args):
    """Outside opening hours: the sleep screen; taps do not count."""
    shell = app.shell
    yield ready(app, "sleep")
    result["sleep_texts"] = visible_texts(shell.root)
    tap(page(app))
    yield 0.3
    shell.press(5, "button")
    yield 0.3
    result["screen"] = shell.flow.screen.value
    result["recorded"] = shell.last_rating is not None


def survey(app, result, args):
    """A survey config arrives (or is in the cache): the question shown is the site's."""
    shell = app.shell
    expected = json.loads((args.config.parent / "expect.json").read_text(encoding="utf-8"))
    yield screen_is(app, "rating")
    yield lambda: page(app).question.text == expected["question"]
    result["question"] = page(app).question.text
    result["version"] = shell.survey.version
    result["status_extra"] = shell.status_extra()
    if expected.get("reject"):
        yield lambda: shell.survey.rejected >= 1
        yield 0.3
        result["after_reject_question"] = page(app).question.text
        result["after_reject_version"] = shell.survey.version
    if expected.get("reason"):
        yield ready(app, "rating")
        tap(page(app).tiles[0])
        yield ready(app, "reason")
        result["reason_texts"] = visible_texts(shell.root)
        tap(page(app).options[expected["reason"]])
        yield screen_is(app, "thanks")


def screenshots(app, result, args):
    """Every screen, in each language asked for, saved as PNG."""
    from kivy.core.window import Window

    shell = app.shell
    out = args.shots
    out.mkdir(parents=True, exist_ok=True)
    width, height = Window.size
    result["shots"] = []
    shell._open_now = lambda: True
    yield screen_is(app, "rating")
    yield 0.1
    result["tile_widths"] = [t.width for t in page(app).tiles]
    settings(app, reason_threshold=2, age_group=True, followup_timeout_s=600, thank_you_s=600,
             cooldown_s=0.0, maintenance_timeout_s=600)

    def shot(name, lang):
        path = out / f"kiosk-{name}-{lang}-{width}x{height}.png"
        shell.root.export_to_png(str(path))
        result["shots"].append(path.name)

    for lang in args.langs.split(","):
        yield ready(app, "rating")
        shell.set_language(lang)
        yield 0.2
        shot("rating", lang)
        yield ready(app, "rating")
        shell.press(1)
        yield ready(app, "reason")
        shot("followup-reason", lang)
        shell.skip()
        yield ready(app, "age_group")
        shot("followup-age", lang)
        shell.skip()
        yield screen_is(app, "thanks")
        yield 0.2
        shot("thanks", lang)
        shell.flow._to_rest(shell.monotonic())
        shell._open_now = lambda: False  # as if the clock said closed
        shell.check_hours()
        shell.flow.lang = lang
        shell.render()
        yield screen_is(app, "sleep")
        yield 0.2
        shot("sleep", lang)
        shell._open_now = lambda: True
        shell.check_hours()
        shell.flow.lang = lang
        shell.open_pin()
        yield ready(app, "pin")
        shell.flow.lang = lang
        for digit in shell.cfg.ui.maintenance_pin:
            shell.pin_digit(digit)
        shell.pin_submit()
        yield ready(app, "maintenance")
        shot("maintenance", lang)
        shell.close_maintenance()


def double_taps(app, result, args):
    """Each face with a follow-up, tapped twice on one spot 50-450 ms apart: the second tap answers nothing."""
    from kiosk.flow import Screen

    shell = app.shell
    settings(app, reason_threshold=2, age_group=True, cooldown_s=0.0, thank_you_s=0.2, followup_timeout_s=60)
    result["guard_s"] = shell.flow.settings.guard_s
    result["visits"] = []
    for score in range(1, 6):
        for gap in (0.05, 0.15, 0.25, 0.35, 0.45):
            yield ready(app, "rating")
            tile = page(app).tiles[score - 1]
            x, y = tile.to_window(*tile.center)
            ignored = shell.flow.ignored_taps
            first_at = time.monotonic()
            touch_at(x, y).touch_up()
            question = shell.flow.view
            follow_up = page(app)
            targets = {**follow_up.options, "skip": follow_up.skip, **follow_up.languages.buttons}
            under = sorted(name for name, widget in targets.items()
                           if widget.collide_point(*widget.to_widget(x, y)))
            yield gap
            second_at = time.monotonic()
            touch_at(x, y).touch_up()
            after_second = shell.flow.view
            # A finger that slips onto an answer within the guard: refused too. (Checked
            # against the flow's own clock just before the touch, so it is inside the guard.)
            slipped = time.monotonic() - shell.flow.shown_at < shell.flow.settings.guard_s - 0.02
            if slipped:
                tap(next(iter(follow_up.options.values())))
            result["visits"].append({
                "score": score, "gap": gap, "interval": second_at - first_at, "question": question,
                "after_second": after_second, "under": under, "slipped": slipped,
                "ignored": shell.flow.ignored_taps - ignored, "after_slip": shell.flow.view,
            })
            while shell.flow.screen == Screen.QUESTION:
                yield ready(app, shell.flow.view)
                tap(page(app).skip)


def buttons(app, result, args):
    """Physical buttons (gpiozero's mock pins): a bouncing press is one rating, LEDs show state."""
    from gpiozero import Device

    shell = app.shell
    yield ready(app, "rating")
    yield lambda: shell.buttons is not None
    factory = Device.pin_factory
    button = factory.pin(26)  # [buttons] maps GPIO 26 to score 5
    # One press whose contact bounces: low, high, low, high within a few ms.
    for level in (False, True, False, True):
        button.drive_low() if not level else button.drive_high()
    yield lambda: shell.last_rating is not None
    yield 0.5
    result["screen_after_press"] = shell.flow.screen.value
    result["presses"] = shell.buttons.presses
    result["bounces"] = shell.buttons.bounces
    # No broker (port 9) and a rating waiting: the buffering light, not connected.
    yield lambda: factory.pin(20).state == 1
    result["leds"] = {"connected": factory.pin(16).state, "buffering": factory.pin(20).state,
                      "error": factory.pin(21).state}


def press_key(key: int) -> None:
    """A key as a USB keypad delivers it: SDL's key down and up, through the window's dispatch."""
    from kivy.core.window import Window

    Window.dispatch("on_key_down", key, 0, None, [])
    Window.dispatch("on_key_up", key, 0)


def quiet(app):
    def check():
        return not app.shell.speaker.speaking
    check.what = "the voice has finished"
    return check


RIGHT, LEFT, ENTER, KP_ENTER, ESCAPE = 275, 276, 13, 271, 27


def keypad(app, result, args):
    """A blind citizen: arrow keys and Enter only (no touch), listening to each prompt before the next key."""
    shell = app.shell
    settings(app, reason_threshold=2, cooldown_s=0.0, thank_you_s=1.0, followup_timeout_s=30)
    yield ready(app, "rating")
    result["voice_before"] = shell.flow.voice
    result["focus_drawn"] = []

    def step(key):
        press_key(key)
        result["focus_drawn"].append([shell.flow.view, shell.flow.focus, len(shell.root.canvas.after.children)])

    step(RIGHT)  # the first key: keypad and voice, focus on 매우 불만족
    result["after_first"] = [shell.flow.keypad, shell.flow.voice, shell.flow.focus]
    yield quiet(app)
    step(LEFT)  # no wrap-around
    result["after_left"] = shell.flow.focus
    yield quiet(app)
    step(RIGHT)
    yield quiet(app)
    step(ENTER)  # 불만족
    yield ready(app, "reason")
    yield quiet(app)
    step(RIGHT)
    yield quiet(app)
    step(KP_ENTER)  # keypad Enter: the second reason
    yield screen_is(app, "thanks")
    result["keypad_id"] = shell.last_rating.id
    yield quiet(app)
    yield ready(app, "rating")
    result["after_visit"] = [shell.flow.keypad, shell.flow.voice, sorted(shell.flow.modes)]
    # A second visit: Escape skips the follow-up.
    press_key(RIGHT)
    press_key(ENTER)
    yield ready(app, "reason")
    press_key(ESCAPE)
    yield screen_is(app, "thanks")
    result["escaped_id"] = shell.last_rating.id
    yield quiet(app)
    result["played"] = shell.speaker.played


#: A site's survey config with its own question and answer labels (voiced by the kiosk itself).
SITE_SURVEY = {"v": 1, "version": "site-7", "question": {"ko": "민원 처리에 만족하셨나요?"},
               "reasons": ["parking", "wait_time"], "reason_labels": {"parking": {"ko": "주차가 불편해요"}},
               "reason_threshold": 2, "cooldown_s": 0.0, "thank_you_s": 1.0, "followup_timeout_s": 30}


def site_voice(app, result, args):
    """The site's config arrives: its question and answer labels are rendered and said, keys only."""
    shell = app.shell
    yield ready(app, "rating")
    shell.survey.offer(json.dumps(SITE_SURVEY, ensure_ascii=False).encode())
    rendered = lambda: all(shell.speaker.prompts.path("ko", key) is not None  # noqa: E731
                           for key in ("site.question", "site.reason.parking"))
    rendered.what = "the site's texts rendered"
    yield rendered
    yield lambda: shell.flow.settings.questions and shell.flow.settings.questions[0].codes[0] == "parking"
    result["question_shown"] = shell.question_text()
    press_key(RIGHT)  # keypad and voice
    yield quiet(app)
    press_key(ENTER)  # 매우 불만족
    yield ready(app, "reason")
    yield quiet(app)
    press_key(ENTER)  # the first answer, the site's own
    yield screen_is(app, "thanks")
    yield quiet(app)
    result["played"] = shell.speaker.played
    result["rating_id"] = shell.last_rating.id


def site_voice_fails(app, result, args):
    """Voicing the site's texts fails as nobody foresaw: shown in the status and maintenance screen; taps go on."""
    from kiosk import voice

    def broken(*args, **kwargs):
        raise RuntimeError("espeak-ng crashed")

    shell = app.shell
    yield ready(app, "rating")
    voice.render = broken
    shell.survey.offer(json.dumps(SITE_SURVEY, ensure_ascii=False).encode())
    noticed = lambda: shell.voice_problem is not None  # noqa: E731
    noticed.what = "the failure noticed"
    yield noticed
    result["voice_problem"] = shell.voice_problem
    result["status_error"] = shell.status_extra().get("error")
    result["maintenance_error"] = shell.maintenance_info()["error"]
    settings(app, reason_threshold=0, cooldown_s=0.0, thank_you_s=0.3)
    yield ready(app, "rating")
    tap(page(app).tiles[4])
    yield screen_is(app, "thanks")
    result["rating_id"] = shell.last_rating.id
    # A config without texts of its own: nothing left to voice, nothing to report.
    shell.survey.offer(json.dumps({"v": 1, "version": "site-8", "reason_threshold": 2}).encode())
    cleared = lambda: shell.voice_problem is None  # noqa: E731
    cleared.what = "the problem cleared"
    yield cleared


def keypad_buttons(app, result, args):
    """GPIO ◀ ▶ 선택 on gpiozero's mock pins through the running app."""
    from gpiozero import Device

    shell = app.shell
    settings(app, reason_threshold=0, cooldown_s=0.0)
    yield ready(app, "rating")
    yield lambda: shell.buttons is not None
    factory = Device.pin_factory
    result["focus"] = []
    for pin in (22, 27, 27, 27, 17):  # 선택 (starts), ▶ ▶ ▶, ◀
        before, pressed = shell.flow.focus, time.monotonic()
        factory.pin(pin).drive_low()
        factory.pin(pin).drive_high()
        yield 0.1  # presses apart, past the debounce
        # Each press moves the focus: waited for (a loaded machine hands it to the UI
        # thread frames later), but only so long, so a press that does nothing is recorded.
        yield lambda: shell.flow.focus != before or time.monotonic() - pressed > 3
        result["focus"].append(shell.flow.focus)
    yield 0.5  # past the guard
    factory.pin(22).drive_low()
    factory.pin(22).drive_high()
    yield lambda: shell.last_rating is not None


def in_scroll(app, widget) -> bool:
    """Is *widget* on a page larger than the window (large mode, or long texts on a 7" display)?"""
    shell = app.shell
    return shell.scroll.parent is not None and widget in set(shell.stage.walk(restrict=True))


def tap_in_view(app, widget):
    """A finger's tap on *widget*; on a scrolling page, brought into view first (where a citizen
    drags it to) and the tap's end awaited (Kivy's ScrollView hands a tap on after it ends)."""
    if in_scroll(app, widget):
        app.shell.scroll.scroll_to(widget, padding=10, animate=False)
        yield 0.1
        tap(widget)
        yield 0.4
    else:
        tap(widget)


def access(app, result, args):
    """The accessibility control on every citizen screen; the choice lasts the visit only."""
    shell = app.shell
    # The thank-you screen long enough for a tap on a scrolling (large mode) page, which Kivy hands on late.
    settings(app, reason_threshold=2, age_group=True, cooldown_s=0.0, thank_you_s=3.0, followup_timeout_s=60)
    result["screens"] = {}

    def check(name):
        button = shell.access
        box = [round(v) for v in (*button.to_window(*button.pos), *button.size)]
        shown = button.parent in (shell.root, shell.stage) and button.opacity > 0
        result["screens"][name] = {"shown": shown, "box": box}
        yield from tap_in_view(app, button)
        result["screens"][name]["panel"] = shell.panel.parent is not None
        yield from tap_in_view(app, shell.panel.close)
        result["screens"][name]["closed"] = shell.panel.parent is None

    yield ready(app, "rating")
    yield from check("rating")
    tap(shell.access)
    for mode in ("contrast", "low", "large"):
        yield from tap_in_view(app, shell.panel.toggles[mode])
    result["modes_during"] = sorted(shell.flow.modes)
    result["theme_during"] = [shell.theme.name, shell.theme.zoom]
    # Low screen: the page (or the window on a page that scrolls) within the lower part.
    result["page_top_low"] = shell.scroll.top if shell.scroll.parent is not None else page(app).top
    yield from tap_in_view(app, shell.panel.close)
    yield ready(app, "rating")
    tiles = page(app).tiles
    # What of a face can be seen and touched: up to its top, or the scrolling window's.
    result["tile_top_low"] = min(tiles[0].to_window(tiles[0].x, tiles[0].top)[1], result["page_top_low"])
    yield from tap_in_view(app, tiles[0])
    yield ready(app, "reason")
    yield from check("reason")
    result["modes_in_follow_up"] = sorted(shell.flow.modes)
    yield from tap_in_view(app, page(app).skip)
    yield ready(app, "age_group")
    yield from check("age_group")
    yield from tap_in_view(app, page(app).skip)
    yield ready(app, "thanks")
    yield from check("thanks")
    yield ready(app, "rating")
    result["modes_after"] = sorted(shell.flow.modes)
    result["theme_after"] = [shell.theme.name, shell.theme.zoom]
    result["page_height_after"] = page(app).height
    shell._open_now = lambda: False
    shell.check_hours()
    yield ready(app, "sleep")
    yield from check("sleep")
    shell.open_pin()
    yield ready(app, "pin")
    result["on_pin"] = shell.access.parent is not None


def help_call(app, result, args):
    """A citizen calls staff from the accessibility panel; staff come (the staff screen) and it clears.

    The test watches the server meanwhile: each step waits for its file in
    $ONETAP_TEST_SYNC (the test writes it once the server shows the change)."""
    import os

    shell = app.shell
    sync = Path(os.environ["ONETAP_TEST_SYNC"])
    yield ready(app, "rating")
    connected = lambda: shell.uplink is not None and shell.uplink.connected  # noqa: E731
    connected.what = "the uplink connected"
    yield connected
    tap(shell.access)
    tap(shell.panel.help)
    result["requested"] = shell.flow.help_requested(shell.monotonic())
    (sync / "called").touch()
    seen = lambda: (sync / "seen").exists()  # noqa: E731
    seen.what = "the test saw the call on the server"
    yield seen
    shell.open_pin()  # staff are at the terminal (the hidden corner)
    yield ready(app, "pin")
    result["after_staff"] = shell.flow.help_requested(shell.monotonic())
    (sync / "staff").touch()
    cleared = lambda: (sync / "cleared").exists()  # noqa: E731
    cleared.what = "the test saw the call cleared on the server"
    yield cleared


def zoom(app, result, args):
    """Large mode: every visual thing at 200 %, the page dragged by a finger, the keypad's focus kept in view."""
    from kivy.tests.common import UnitTestTouch
    from kivy.uix.label import Label

    shell = app.shell
    settings(app, reason_threshold=0, cooldown_s=0.0, thank_you_s=0.5)
    yield ready(app, "rating")

    def measure():
        rating = page(app)
        fonts = sorted({round(w.font_size) for w in shell.root.walk(restrict=True)
                        if isinstance(w, Label) and w.text.strip()})
        face = [round(v) for v in rating.tiles[0].size]
        return {"tile": face, "fonts": fonts, "access": [round(v) for v in shell.access.size],
                "page": [round(v) for v in rating.size], "scrolls": shell.scroll.parent is not None}

    result["normal"] = measure()
    shell.set_mode("large", True)
    yield ready(app, "rating")
    yield 0.2
    result["large"] = measure()
    # A finger drags the page up: its lower part comes into view.
    before = [shell.scroll.scroll_x, shell.scroll.scroll_y]
    x, y = shell.scroll.center
    touch = UnitTestTouch(x, y)
    touch.touch_down()
    for step in range(1, 11):
        yield 0.02
        touch.touch_move(x, y + step * 20)
    touch.touch_up()
    yield 2.0  # the page's glide after the finger lifts
    result["dragged"] = [before, [shell.scroll.scroll_x, shell.scroll.scroll_y]]
    # The keypad's focus on the fifth face: the page scrolls to it.
    for _ in range(5):
        press_key(RIGHT)
        yield 0.05
    yield 0.3
    tile = page(app).tiles[4]
    left, bottom = tile.to_window(tile.x, tile.y)
    result["focused"] = [shell.flow.focus, [round(left), round(bottom), round(left + tile.width),
                                            round(bottom + tile.height)], [round(v) for v in shell.scroll.size]]
    # Enter chooses the face in view (a finger's tap in large mode: the access scenario).
    press_key(ENTER)
    yield lambda: shell.last_rating is not None
    result["rating"] = [shell.last_rating.score, shell.last_rating.input]


LAYOUT_MODES = {"normal": set(), "large": {"large"}, "contrast": {"contrast"}, "low": {"low"}}
LAYOUT_SCREENS = ("rating", "reason", "age_group", "thanks", "sleep")
#: Languages whose words are separated by spaces: a line may break only between words.
SPACED = ("ko", "en", "vi")


def centre_in_view(shell, widget) -> bool:
    """Is the centre of *widget* (where a finger taps it) on the screen, not scrolled away?"""
    seen = visible_box(shell, widget)
    if seen is None:
        return False
    x, y = widget.to_window(*widget.center)
    return seen[0] <= x <= seen[2] and seen[1] <= y <= seen[3]


def scrolled_answers(app, result, args):
    """A 7" display in Vietnamese and low-screen mode, where the reason answers scroll in their own
    list: a finger drags the list and taps an answer that was out of view; on the next visit the
    keypad's focus brings it into view and Enter chooses it."""
    shell = app.shell
    settings(app, reason_threshold=2, cooldown_s=0.0, thank_you_s=0.5, followup_timeout_s=60)
    yield ready(app, "rating")
    yield from choose_language(app, "vi", {})
    shell.set_mode("low", True)
    yield ready(app, "rating")
    tap(page(app).tiles[0])
    yield ready(app, "reason")
    yield 0.2
    options = page(app).options
    codes = list(options)
    hidden = [code for code in codes if not centre_in_view(shell, options[code])]
    result["hidden"] = hidden
    if not hidden:
        return
    target = hidden[-1]
    result["target"] = target
    answers = inner_scroll(shell, options[target])
    result["scrolls"] = answers is not None
    if answers is None:
        return
    # The finger drags the list up (Kivy's y grows upward): its lower answers come into view.
    x, y = answers.to_window(*answers.center)
    touch = touch_at(x, y)
    for step in range(1, 11):
        yield 0.02
        touch.touch_move(x, y + step * 15)
    touch.touch_up()
    yield 1.5  # the list's glide after the finger lifts
    result["in_view_after_drag"] = centre_in_view(shell, options[target])
    tap(options[target])
    yield 0.4  # a tap inside a ScrollView is handed on when it ends
    yield screen_is(app, "thanks")
    result["touched"] = [shell.last_rating.input, shell.last_rating.lang]
    # The next visit by keypad: the focus walks to the same answer and the list follows it.
    yield ready(app, "rating")
    yield from choose_language(app, "vi", {})
    shell.set_mode("low", True)
    yield ready(app, "rating")
    press_key(RIGHT)  # the first key: keypad mode, focus on face 1
    press_key(ENTER)
    yield ready(app, "reason")
    yield 0.2
    options = page(app).options
    result["hidden_again"] = not centre_in_view(shell, options[target])
    for _ in range(len(codes)):
        if shell.flow.focus == codes.index(target):
            break
        press_key(RIGHT)
        yield 0.2
    yield 0.5
    result["focus"] = [shell.flow.focus, codes.index(target)]
    result["in_view_by_focus"] = centre_in_view(shell, options[target])
    press_key(ENTER)
    yield screen_is(app, "thanks")
    result["keyed"] = [shell.last_rating.input, shell.last_rating.lang]


def layout_problems(shell, lang: str) -> list[str]:
    """Text that does not fit its box, a word broken mid-word, interactive boxes that overlap."""
    from kivy.core.text import Label as CoreLabel
    from kivy.core.window import Window
    from kivy.uix.behaviors import ButtonBehavior
    from kivy.uix.label import Label

    from kiosk.ui.face import breaks_at_spaces

    problems = []
    targets = []
    texts = []
    # A page larger than the window scrolls: what is in it must be within the page, not the window.
    scrolled = set(shell.stage.walk(restrict=True)) if shell.scroll.parent is not None else set()
    for widget in shell.root.walk(restrict=True):
        if widget.get_root_window() is None or widget.opacity == 0:
            continue
        # Within a scrolling list of its own (the answers): within that list, and seen only in its window.
        inner = inner_scroll(shell, widget)
        shown = visible_box(shell, widget)
        if inner is not None:
            content = box(inner.children[0])
            mine = box(widget)
            if (mine[0] < content[0] - 1 or mine[1] < content[1] - 1 or mine[2] > content[2] + 1
                    or mine[3] > content[3] + 1):
                problems.append(f"off its list: {getattr(widget, 'text', widget)!r}")
        if shown is None:
            continue  # scrolled out of its list's window: not on the screen now
        if isinstance(widget, ButtonBehavior):
            targets.append((widget, shown))
        if not isinstance(widget, Label) or not widget.text.strip():
            continue
        # What the text needs at this width (with both sides of text_size set,
        # Kivy's texture is the box's size whatever the text needs).
        needed = CoreLabel(text=widget.text, font_name=widget.font_name, font_size=widget.font_size,
                           bold=widget.bold, text_size=(widget.width, None), halign=widget.halign,
                           line_height=widget.line_height,
                           padding_x=widget.padding_x, padding_y=widget.padding_y)
        needed.refresh()
        width, height = needed.size
        name = widget.text.replace("\n", " ")[:40]
        if width > widget.width + 1 or height > widget.height + 1:
            problems.append(f"cut: {name!r} needs {width:.0f}x{height:.0f} in {widget.width:.0f}x{widget.height:.0f}")
        if inner is not None:
            x, y, right, top = 0, 0, widget.width, widget.height  # checked against its list above
        elif widget in scrolled:
            x, y, right, top = widget.x, widget.y, shell.stage.width, shell.stage.height
        else:
            (x, y), right, top = widget.to_window(widget.x, widget.y), Window.width, Window.height
        if x < -1 or y < -1 or x + widget.width > right + 1 or y + widget.height > top + 1:
            problems.append(f"off {'the page' if widget in scrolled else 'screen'}: {name!r}")
        if isinstance(widget.parent, ButtonBehavior):
            # A tile's label: inside its tile.
            px, py = widget.parent.to_window(widget.parent.x, widget.parent.y)
            lx, ly = widget.to_window(widget.x, widget.y)
            if (lx < px - 1 or ly < py - 1 or lx + widget.width > px + widget.parent.width + 1
                    or ly + widget.height > py + widget.parent.height + 1):
                problems.append(f"outside its tile: {name!r}")
        texts.append((widget, name, (shown[0], shown[1], shown[2] - shown[0], shown[3] - shown[1])))
        if lang in SPACED:
            measure = CoreLabel(font_name=widget.font_name, font_size=widget.font_size, bold=widget.bold)
            # (Chinese and Japanese lines, as on the closed screen, may break between any characters.)
            for word in filter(breaks_at_spaces, widget.text.split()):
                if measure.get_extents(word)[0] > widget.width - 2 * widget.padding_x + 1:
                    problems.append(f"broken mid-word: {word!r} in {name!r}")
    for index, (first, name, (x, y, w, h)) in enumerate(texts):
        for second, other, (x2, y2, w2, h2) in texts[index + 1:]:
            if min(x + w, x2 + w2) - max(x, x2) > 1 and min(y + h, y2 + h2) - max(y, y2) > 1:
                problems.append(f"text over text: {name!r} / {other!r}")
    for index, (first, a) in enumerate(targets):
        for second, b in targets[index + 1:]:
            if first in second.walk() or second in first.walk():
                continue
            if min(a[2], b[2]) - max(a[0], b[0]) > 1 and min(a[3], b[3]) - max(a[1], b[1]) > 1:
                problems.append(f"overlap: {getattr(first, 'text', first)!r} / {getattr(second, 'text', second)!r}")
    return problems


def box(widget) -> tuple:
    """(left, bottom, right, top) of *widget* in window coordinates."""
    x, y = widget.to_window(widget.x, widget.y)
    return (x, y, x + widget.width, y + widget.height)


def inner_scroll(shell, widget):
    """The scrolling list (a ScrollView other than the page's) *widget* is in, or None."""
    from kivy.uix.scrollview import ScrollView

    for parent in ancestors(shell, widget):
        if isinstance(parent, ScrollView) and parent is not shell.scroll:
            return parent
    return None


def ancestors(shell, widget) -> list:
    """*widget*'s parents up to the shell's root (not beyond: the window is its own parent)."""
    out = []
    parent = widget.parent if widget is not shell.root else None
    while parent is not None and parent not in out:
        out.append(parent)
        if parent is shell.root:
            break
        parent = parent.parent
    return out


def visible_box(shell, widget):
    """What of *widget* is on the screen (window coordinates), clipped by every ScrollView it is in
    (the answers' list, the page's scroll); None when nothing is."""
    from kivy.uix.scrollview import ScrollView

    left, bottom, right, top = box(widget)
    for parent in ancestors(shell, widget):
        if isinstance(parent, ScrollView):
            x0, y0, x1, y1 = box(parent)
            left, bottom, right, top = max(left, x0), max(bottom, y0), min(right, x1), min(top, y1)
    if right - left < 1 or top - bottom < 1:
        return None
    return (left, bottom, right, top)


_INK: dict = {}


def hangul_height(font_name: str, font_size: float, bold: bool) -> int:
    """Rendered ink height in pixels of the Hangul syllable 한 at *font_size*: in *font_name* where it
    has Hangul, else in the Korean font (the Vietnamese font is Latin only)."""
    from kivy.core.text import Label as CoreLabel

    from kiosk.ui import fonts

    lang = font_name.removeprefix("onetap-")
    if lang in fonts.FACES and fonts.missing(fonts.font_files(lang)[1 if bold else 0], "한"):
        font_name = fonts.font_name("ko")
    key = (font_name, round(font_size, 2), bold)
    if key not in _INK:
        label = CoreLabel(text="한", font_name=font_name, font_size=font_size, bold=bold)
        label.refresh()
        texture = label.texture
        width, pixels = texture.width, texture.pixels
        # Rows with a pixel at least half covered: the glyph's height as drawn.
        rows = [row for row in range(texture.height)
                if any(pixels[(row * width + col) * 4 + 3] >= 128 for col in range(width))]
        _INK[key] = rows[-1] - rows[0] + 1 if rows else 0
    return _INK[key]


def character_sizes(shell) -> list:
    """Every visible text with its font size (px), Hangul character height (px) and that in mm on this display."""
    from kivy.core.window import Window
    from kivy.uix.label import Label

    from kiosk.ui import theme

    pitch = theme.pitch_mm(*Window.size)
    out = []
    for widget in shell.root.walk(restrict=True):
        if isinstance(widget, Label) and widget.text.strip() and widget.get_root_window() is not None:
            ink = hangul_height(widget.font_name, widget.font_size, widget.bold)
            out.append([widget.text.replace("\n", " ")[:40], round(widget.font_size, 1), ink, round(ink * pitch, 2)])
    return sorted(out, key=lambda row: row[3])


def page_facts(shell) -> dict:
    """Does the page scroll, its size, the rating tiles' size (for the 200 % check); do the answers
    scroll in their own list, is the skip wholly on the screen; the highest top of a target (window
    coordinates, from the bottom) and of the window's part that holds the targets."""
    from kivy.core.window import Window
    from kivy.uix.behaviors import ButtonBehavior

    from kiosk.ui.shell import LOW_SCREEN

    page = shell._page
    facts = {"scrolls": shell.scroll.parent is not None, "page": [round(page.width), round(page.height)]}
    if hasattr(page, "tiles"):
        tile = page.tiles[0]
        facts["tile"] = [round(tile.width), round(tile.height)]
    if hasattr(page, "answers"):
        facts["answers_scroll"] = bool(page.answers.do_scroll_y)
        facts["skip_shown"] = visible_box(shell, page.skip) == box(page.skip) and box(page.skip)[1] >= 0 \
            and box(page.skip)[3] <= Window.height
    tops = [visible_box(shell, w)[3] for w in shell.root.walk(restrict=True)
            if isinstance(w, ButtonBehavior) and w.get_root_window() is not None
            and visible_box(shell, w) is not None]
    facts["targets_top"] = round(max(tops, default=0))
    facts["reach"] = round(Window.height * LOW_SCREEN) if "low" in shell.flow.modes else Window.height
    return facts


def layouts(app, result, args):
    """Every citizen screen x 5 languages x 4 modes x 2 sizes in one app: checked, and shot for contact
    sheets; in the default mode the follow-ups after every face as well."""
    from kivy.core.window import Window

    from kiosk.flow import Screen

    shell = app.shell
    settings(app, reason_threshold=2, age_group=True, cooldown_s=0.0, guard_s=0.0, thank_you_s=600,
             followup_timeout_s=600, idle_reset_s=600)
    result["problems"] = {}
    result["shots"] = []
    out = args.shots
    yield screen_is(app, "rating")
    for size in ((800, 480), (1280, 800)):
        Window.size = size
        yield lambda: tuple(Window.size) == size
        for mode, modes in LAYOUT_MODES.items():
            for lang in ("ko", "en", "zh", "vi", "ja"):
                # The follow-ups after faces 2..5 too: the answers sit around another face's column.
                walk = [(view, 1) for view in LAYOUT_SCREENS]
                if mode == "normal":
                    walk += [(view, score) for score in (2, 3, 4, 5) for view in ("reason", "age_group")
                             if view == "age_group" or score <= 2]
                for view, score in walk:
                    flow = shell.flow
                    shell._open_now = lambda: view != "sleep"
                    flow._to_rest(shell.monotonic())
                    shell.check_hours()
                    flow.lang = lang
                    flow.modes = set(modes)
                    if view in ("reason", "age_group", "thanks"):
                        shell.press(score)
                        while flow.view != view:
                            shell.skip()
                    flow.lang = lang
                    flow.modes = set(modes)
                    shell.render()
                    yield 0.03
                    shell.render()
                    yield 0.03
                    assert flow.view == view and (view == "sleep") == (flow.screen == Screen.SLEEP)
                    key = f"{view}-{mode}-{lang}-{size[0]}x{size[1]}" + (f"-face{score}" if score > 1 else "")
                    problems = layout_problems(shell, lang)
                    result.setdefault("chars", {})[key] = character_sizes(shell)
                    result.setdefault("pages", {})[key] = page_facts(shell)
                    if problems:
                        result["problems"][key] = problems
                    if out is not None and score == 1:
                        path = out / f"{key}.png"
                        shell.root.export_to_png(str(path))
                        result["shots"].append(path.name)
                        if mode == "large" and lang == "vi" and shell.scroll.parent is not None:
                            # The whole scrolling page as well, not only the window onto it.
                            shell.stage.export_to_png(str(out / f"{key}-page.png"))
        shell._open_now = lambda: True
        shell.flow._to_rest(shell.monotonic())
        shell.check_hours()


SCENARIOS = {"layouts": layouts, "keypad": keypad, "keypad_buttons": keypad_buttons, "access": access,
             "help_call": help_call, "site_voice": site_voice, "site_voice_fails": site_voice_fails, "zoom": zoom,
             "scrolled_answers": scrolled_answers, "buttons": buttons,
             "double_taps": double_taps, "ratings": ratings, "guards": guards, "sleep": sleep, "survey": survey,
             "screenshots": screenshots}


if __name__ == "__main__":
    sys.exit(main())
