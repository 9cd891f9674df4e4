"""Accessibility in the running app: keypad and voice (audio captured by SDL's disk driver), GPIO ◀ ▶ 선택, the display modes."""

from __future__ import annotations

import array
import json
import os
import shutil
import threading
import wave

import pytest
import requests

from kiosk.catalog import Catalog, load_catalogs
from kiosk.ui import theme
from kiosk.voice import render
from tests.kiosk.ui.test_app import ROOT, rows, run_driver
from tests.server_process import TOKEN, ServerProcess
from tests.waiting import wait_for

pytest.importorskip("kivy")

KOREAN = load_catalogs(["ko"])


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is missing: deploy/dev-setup.sh installs it")
    out = tmp_path_factory.mktemp("voices")
    render({"ko": KOREAN["ko"]}, out)
    return out


def pcm(path) -> bytes:
    with wave.open(str(path)) as sound:
        assert (sound.getframerate(), sound.getnchannels(), sound.getsampwidth()) == (44100, 2, 2)
        return sound.readframes(sound.getnframes())


def loudest_window(data: bytes, frames: int = 2048) -> bytes:
    """The prompt's loudest stretch of *frames* stereo frames (speech, never its leading silence)."""
    samples = array.array("h", data)
    best, best_at = -1, 0
    for start in range(0, max(1, len(samples) - 2 * frames), 2 * frames):
        peak = max(abs(v) for v in samples[start:start + 2 * frames])
        if peak > best:
            best, best_at = peak, start
    return samples[best_at:best_at + 2 * frames].tobytes()


def test_arrow_keys_and_enter_rate_with_input_keypad_and_every_prompt_is_heard(tmp_path, prompts):
    raw = tmp_path / "audio.raw"
    result = run_driver(tmp_path, "keypad", ui=f'voice_cache = "{prompts}"\nvoice_volume = 1.0',
                        env={"SDL_AUDIODRIVER": "disk", "SDL_DISKAUDIOFILE": str(raw)}, timeout=240)
    assert result["voice_before"] is False
    assert result["after_first"] == [True, True, 0]  # keypad + voice; focus on 매우 불만족
    assert result["after_left"] == 0  # no wrap-around to 매우 만족
    # The ring is drawn on every screen with targets (the thank-you screen has none).
    drawn = result["focus_drawn"]
    assert [view for view, _, _ in drawn] == ["rating"] * 3 + ["reason"] * 2 + ["thanks"], drawn
    assert all(count > 0 for view, _, count in drawn if view != "thanks") and drawn[-1][2] == 0, drawn
    saved = rows(tmp_path)
    first = next(r for r in saved if r["id"] == result["keypad_id"])
    assert (first["score"], first["input"], first["reason"], first["held"]) == (2, "keypad", "staff_attitude", 0)
    second = next(r for r in saved if r["id"] == result["escaped_id"])
    assert (second["score"], second["input"], second["reason"]) == (1, "keypad", None)
    # The visit's keypad and voice end with it.
    assert result["after_visit"] == [False, False, []]
    # What was said, in order.
    said = [name for name, *_ in result["played"]]
    assert said[:3] == ["ko/question", "ko/voice.keys", "ko/score.1"]
    assert said[3:5] == ["ko/score.1", "ko/score.2"]  # ◀ at the end says where the focus still is
    assert said[5:9] == ["ko/score.2", "ko/voice.chosen", "ko/reason.title", "ko/voice.keys"]
    assert "ko/thanks.title" in said and "ko/reason.staff_attitude" in said
    # Every prompt played is in the SDL disk driver's output, sample for sample.
    output = raw.read_bytes()
    samples = array.array("h", output)
    assert max(abs(v) for v in samples) > 3000
    for name, path, _start, _length in result["played"]:
        window = loudest_window(pcm(path))
        assert max(abs(v) for v in array.array("h", window)) > 1000, name  # the prompt itself is speech
        assert output.find(window) >= 0, f"{name} was not heard"


def test_the_sites_own_question_and_answers_are_voiced_and_heard(tmp_path, prompts):
    """A survey config with its own texts: the kiosk renders them (espeak-ng) and says them, not the catalog's."""
    from tests.kiosk.ui.driver import SITE_SURVEY

    cache = tmp_path / "voices"
    shutil.copytree(prompts, cache)
    raw = tmp_path / "audio.raw"
    result = run_driver(tmp_path, "site_voice", ui=f'voice_cache = "{cache}"\nvoice_volume = 1.0',
                        env={"SDL_AUDIODRIVER": "disk", "SDL_DISKAUDIOFILE": str(raw)}, timeout=240)
    assert result["question_shown"] == SITE_SURVEY["question"]["ko"]
    said = [name for name, *_ in result["played"]]
    assert said[:3] == ["ko/site.question", "ko/voice.keys", "ko/score.1"], said
    assert said[3:8] == ["ko/score.1", "ko/voice.chosen", "ko/reason.title", "ko/voice.keys",
                         "ko/site.reason.parking"], said
    assert "ko/question" not in said
    # The files are espeak-ng's rendering of the site's texts, and each was heard.
    expected = tmp_path / "expected"
    render({"ko": Catalog("ko", {"question": SITE_SURVEY["question"]["ko"],
                                 "skip": SITE_SURVEY["reason_labels"]["parking"]["ko"]})}, expected)
    assert pcm(cache / "ko" / "site.question.wav") == pcm(expected / "ko" / "question.wav")
    assert pcm(cache / "ko" / "site.reason.parking.wav") == pcm(expected / "ko" / "skip.wav")
    output = raw.read_bytes()
    for name, path, _start, _length in result["played"]:
        if name.startswith("ko/site."):
            assert output.find(loudest_window(pcm(path))) >= 0, f"{name} was not heard"
    [row] = [r for r in rows(tmp_path) if r["id"] == result["rating_id"]]
    assert (row["score"], row["reason"], row["input"]) == (1, "parking", "keypad")


def test_gpio_left_right_select_buttons_rate_through_the_running_app(tmp_path, monkeypatch, prompts):
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    result = run_driver(tmp_path, "keypad_buttons", ui=(
        f'voice_cache = "{prompts}"\n[buttons]\nleft = 17\nright = 27\nselect = 22\n'))
    assert result["focus"] == [0, 1, 2, 3, 2]
    [row] = rows(tmp_path)
    assert (row["score"], row["input"]) == (3, "keypad")


def test_the_accessibility_control_is_on_every_citizen_screen_and_resets_after_the_visit(tmp_path):
    result = run_driver(tmp_path, "access", ui="help_button = true")
    assert set(result["screens"]) == {"rating", "reason", "age_group", "thanks", "sleep"}
    for name, seen in result["screens"].items():
        assert seen == {**seen, "shown": True, "panel": True, "closed": True}, name
    assert result["modes_during"] == ["contrast", "large", "low"]
    assert result["theme_during"][0] == "high_contrast" and result["theme_during"][1] > 1
    # Low screen: what can be touched is within the lower 62 % (large mode's scrolling page too).
    assert result["page_top_low"] <= 480 * 0.62 + 1 and result["tile_top_low"] <= 480 * 0.62 + 1
    assert result["modes_in_follow_up"] == ["contrast", "large", "low"]  # the whole visit
    assert result["modes_after"] == [] and result["theme_after"] == ["standard", 1.0]
    assert result["page_height_after"] == 480
    assert result["on_pin"] is False  # staff screens: no citizen control


def test_a_staff_call_reaches_the_server_at_once_and_clears_when_staff_come(tmp_path, mosquitto):
    """The help button raises a "help" alert on the server now, not at the next periodic Status (an hour here)."""
    (tmp_path / "server").mkdir()
    server = ServerProcess(mosquitto, tmp_path / "server", env={"ONETAP_ALERTS_INTERVAL_S": "1"}).start()
    sync = tmp_path / "sync"
    sync.mkdir()
    outcome: dict = {}

    def drive():
        try:
            outcome["result"] = run_driver(tmp_path, "help_call", broker=mosquitto.url, ui="help_button = true",
                                           status_interval_s=3600, env={"ONETAP_TEST_SYNC": str(sync)},
                                           timeout=240)
        except BaseException as exc:  # noqa: BLE001 - re-raised on the test's thread
            outcome["error"] = exc

    def api(path):
        response = requests.get(f"http://127.0.0.1:{server.port}{path}",
                                headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def terminal():
        return next((t for t in api("/api/v1/terminals?site=test-site") if t["terminal"] == "ui-1"), {})

    def help_alerts():
        return [a for a in api("/api/v1/alerts")["alerts"] if a["kind"] == "help" and a["terminal"] == "ui-1"]

    driver = threading.Thread(target=drive)
    driver.start()
    try:
        wait_for(lambda: (sync / "called").exists() or "error" in outcome, what="the citizen's call", timeout=120)
        assert "error" not in outcome, outcome
        wait_for(lambda: terminal().get("help_requested") is True, what="the status with the call")
        [alert] = wait_for(help_alerts, what="the help alert")
        assert alert["cleared_at"] is None and "help" in alert["message"]
        (sync / "seen").touch()
        wait_for(lambda: (sync / "staff").exists() or "error" in outcome, what="staff at the terminal")
        wait_for(lambda: terminal().get("help_requested") is False, what="the status without the call")
        wait_for(lambda: all(a["cleared_at"] for a in help_alerts()), what="the help alert cleared")
        (sync / "cleared").touch()
    finally:
        for name in ("seen", "cleared"):
            (sync / name).touch()
        driver.join(300)
        server.stop()
    assert "error" not in outcome, outcome
    result = outcome["result"]
    assert result["requested"] is True and result["after_staff"] is False


def test_large_mode_enlarges_everything_to_200_percent_and_scrolls_by_touch_and_keypad(tmp_path):
    result = run_driver(tmp_path, "zoom")
    normal, large = result["normal"], result["large"]
    assert not normal["scrolls"] and large["scrolls"]
    # Faces and tiles, the control and every text: twice the size (a pixel of rounding); the page
    # keeps the window's width, two tiles to a row, and is more than twice as tall.
    assert large["page"][0] == normal["page"][0] == 800 and large["page"][1] > 2 * normal["page"][1]
    for key in ("tile", "access"):
        assert all(abs(b - 2 * a) <= max(2, 0.02 * b) for a, b in zip(normal[key], large[key])), \
            (key, normal[key], large[key])
    assert min(large["fonts"]) == 2 * min(normal["fonts"]) and max(large["fonts"]) >= 2 * max(normal["fonts"])
    # A finger's drag moved the page; the keypad's focus brought the fifth face into view.
    (x0, y0), (x1, y1) = result["dragged"]
    assert x1 == x0 == 0 and y1 < y0 == 1, result["dragged"]  # from the top, up and down only
    focus, (left, bottom, right, top), (width, height) = result["focused"]
    # (At 200 % a tile is taller than the 7" window: its whole width and its top, the face, are in view.)
    assert focus == 4 and left >= 0 and right <= width and height / 2 < top <= height, result["focused"]
    assert result["rating"] == [5, "keypad"]
    [row] = rows(tmp_path)
    assert (row["score"], row["input"]) == (5, "keypad")


def contact_sheets(shots, out) -> list:
    """One sheet per display mode and size: screens across, languages down."""
    from PIL import Image, ImageDraw

    from tests.kiosk.ui.driver import LAYOUT_MODES, LAYOUT_SCREENS

    sheets = []
    for size in ("800x480", "1280x800"):
        width, height = (int(v) for v in size.split("x"))
        thumb = (width // 2, height // 2) if width == 800 else (width // 3, height // 3)
        for mode in LAYOUT_MODES:
            sheet = Image.new("RGB", (thumb[0] * len(LAYOUT_SCREENS), thumb[1] * 5), "white")
            for row, lang in enumerate(("ko", "en", "zh", "vi", "ja")):
                for column, view in enumerate(LAYOUT_SCREENS):
                    image = Image.open(shots / f"{view}-{mode}-{lang}-{size}.png").convert("RGB")
                    sheet.paste(image.resize(thumb), (column * thumb[0], row * thumb[1]))
            draw = ImageDraw.Draw(sheet)
            for column in range(1, len(LAYOUT_SCREENS)):
                draw.line([(column * thumb[0], 0), (column * thumb[0], sheet.height)], fill="grey")
            for row in range(1, 5):
                draw.line([(0, row * thumb[1]), (sheet.width, row * thumb[1])], fill="grey")
            path = out / f"kiosk-sheet-{mode}-{size}.png"
            sheet.save(path, optimize=True)
            sheets.append(path)
    return sheets


def test_every_screen_language_mode_and_size_lays_out_without_clipping_or_overlap(tmp_path):
    """5 screens x 5 languages x {normal, large, high contrast, low screen} x {800x480, 1280x800}.

    Character size: the ink height of the Hangul syllable 한 drawn at each text's font size
    (tests/kiosk/ui/driver.py ``hangul_height``), through the display's vertical pixel pitch
    (7" 800x480: 85.92 mm / 480 px; 10.1" 1280x800: 135.6 mm / 800 px).
    """
    shots = tmp_path / "shots"
    shots.mkdir()
    result = run_driver(tmp_path, "layouts", shots=shots, timeout=600)
    assert len(result["shots"]) == 5 * 5 * 4 * 2
    problems = result["problems"]
    assert problems == {}, "\n".join(f"{k}: {v}" for k, v in sorted(problems.items()))
    chars = result["chars"]
    # ... and in the default mode the follow-ups after faces 2..5 (reason after 2, age after 2..5).
    assert len(chars) == (5 * 5 * 4 + 5 * 5) * 2 and all(chars.values())
    # Every text in every mode at least 7.25 mm on both displays (sorted: the first is the smallest);
    # in large mode every text at least twice that.
    small = {key: texts[0] for key, texts in chars.items()
             if texts[0][3] < theme.MIN_CHAR_MM * (theme.LARGE_ZOOM if "-large-" in key else 1)}
    assert small == {}, small
    for key, texts in chars.items():
        if "-large-" in key:
            normal = chars[key.replace("-large-", "-normal-")]
            assert min(t[1] for t in texts) >= theme.LARGE_ZOOM * min(t[1] for t in normal), key
    pages = result["pages"]
    # Outside large mode no page scrolls, on either display: where not all of a question's answers
    # fit, they scroll in a list of their own, the question, the skip and the countdown in view.
    scrolling = sorted(key for key, facts in pages.items() if facts["scrolls"] and "-large-" not in key)
    assert scrolling == [], scrolling
    follow_ups = [key for key in pages if key.startswith(("reason-", "age_group-")) and "-large-" not in key]
    assert len(follow_ups) == (2 * 5 * 3 + 5 * 5) * 2
    hidden = sorted(key for key in follow_ups if not pages[key]["skip_shown"])
    assert hidden == [], hidden
    # Answers that scroll in their list: none on the 10.1", none in Korean; on the 7" only where
    # a language's longer labels need a third row (docs/accessibility.md lists them).
    listed = sorted(key for key in follow_ups if pages[key]["answers_scroll"])
    assert not [key for key in listed if "-1280x800" in key or "-ko-" in key], listed
    # Low screen: every target (language, control, faces, answers, skip) within the lower 62 %,
    # the question and the other texts no one touches above it.
    low = {key: facts for key, facts in pages.items() if "-low-" in key}
    assert len(low) == 5 * 5 * 2 and all(facts["reach"] == round(int(key.split("-")[-1].split("x")[1]) * 0.62)
                                         for key, facts in low.items())
    out_of_reach = {key: facts["targets_top"] for key, facts in low.items()
                    if not 0 < facts["targets_top"] <= facts["reach"] + 1}
    assert out_of_reach == {}, out_of_reach
    smallest = {key: texts[0] for key, texts in chars.items()}
    (tmp_path / "char_mm.json").write_text(json.dumps(smallest, ensure_ascii=False, indent=1))
    if not os.environ.get("ONETAP_SCREENSHOTS"):
        return  # ONETAP_SCREENSHOTS=1 refreshes the contact sheets in docs/screenshots
    (ROOT / "docs" / "screenshots" / "kiosk-char-mm.json").write_text(json.dumps(
        {"smallest": smallest, "pages": result["pages"]}, ensure_ascii=False, indent=1, sort_keys=True),
        encoding="utf-8")
    docs = ROOT / "docs" / "screenshots"
    for sheet in contact_sheets(shots, tmp_path):
        shutil.copy(sheet, docs / sheet.name)
    for name in ("rating-large-vi-800x480", "reason-large-vi-800x480", "age_group-large-vi-800x480"):
        shutil.copy(shots / f"{name}.png", docs / f"kiosk-{name}.png")  # the window
        shutil.copy(shots / f"{name}-page.png", docs / f"kiosk-{name}-page.png")  # the whole page it scrolls


def test_an_answer_out_of_view_in_a_scrolling_list_is_reached_by_a_drag_and_by_the_keypad(tmp_path):
    """On the 7" in low-screen mode the Vietnamese reason answers scroll in their own list (docs/accessibility.md):
    a finger drags an answer into view and taps it; the keypad's focus scrolls to it."""
    result = run_driver(tmp_path, "scrolled_answers", size="800x480")
    assert result["hidden"] and result["scrolls"], result
    assert result["in_view_after_drag"] and result["in_view_by_focus"] and result["hidden_again"], result
    focus, wanted = result["focus"]
    assert focus == wanted
    target = result["target"]
    assert result["touched"] == ["touch", "vi"] and result["keyed"] == ["keypad", "vi"]
    stored = [(row["reason"], row["input"], row["lang"]) for row in rows(tmp_path)]
    assert stored == [(target, "touch", "vi"), (target, "keypad", "vi")]


def test_a_failure_voicing_the_sites_texts_is_shown_and_taps_go_on(tmp_path):
    """The rendering thread nobody waits for: an unforeseen error reaches the log, the status and the screen."""
    result = run_driver(tmp_path, "site_voice_fails")
    assert result["error"] is None, result["error"]
    problem = "the site's texts are not voiced: RuntimeError('espeak-ng crashed')"
    assert result["voice_problem"] == problem
    assert result["status_error"] == problem and result["maintenance_error"] == problem
    [row] = [r for r in rows(tmp_path) if r["id"] == result["rating_id"]]
    assert row["score"] == 5
