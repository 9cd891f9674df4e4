"""The real kiosk app in a real window (SDL offscreen), driven by real touches, one subprocess per scenario.

Each scenario is tests/kiosk/ui/driver.py in its own process (Kivy makes one
window per process), so this pytest process never imports Kivy. The outbox
is read back from its SQLite file.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from kiosk import protocol
from kiosk.catalog import load_catalogs
from kiosk.ui import theme

pytest.importorskip("kivy")

ROOT = Path(__file__).resolve().parents[3]
CATALOGS = load_catalogs()
NAMES = [c["lang.name"] for c in CATALOGS.values()]
WEEKDAYS = protocol.WEEKDAYS


def run_driver(tmp_path: Path, scenario: str, *, broker: str = "mqtt://127.0.0.1:9", ui: str = "",
               size: str | None = None, shots: Path | None = None, langs: str = "ko,en",
               timeout: float = 120.0, env: dict | None = None, status_interval_s: float = 0.5) -> dict:
    config = tmp_path / "kiosk.toml"
    config.write_text(
        f'site = "test-site"\nterminal = "ui-1"\nbroker = "{broker}"\ndata_dir = "{tmp_path / "data"}"\n'
        f'[mqtt]\nstatus_interval_s = {status_interval_s}\n'
        f'[ui]\nmaintenance_pin = "2468"\nmaintenance_hold_s = 1.0\n{ui}\n',
        encoding="utf-8",
    )
    result = tmp_path / f"{scenario}.json"
    result.unlink(missing_ok=True)
    env = {**os.environ, "KIVY_HOME": str(tmp_path / "kivy-home"), "KIVY_NO_ARGS": "1",
           "KIVY_NO_CONSOLELOG": "1", "SDL_VIDEODRIVER": os.environ.get("SDL_VIDEODRIVER", "offscreen"),
           "SDL_AUDIODRIVER": "dummy", **(env or {})}
    command = [sys.executable, "-m", "tests.kiosk.ui.driver", scenario, str(config), str(result), "--langs", langs]
    if size:
        command += ["--size", size]
    if shots:
        command += ["--shots", str(shots)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.exists(), f"driver wrote no result (rc {done.returncode}):\n{done.stderr[-3000:]}"
    data = json.loads(result.read_text(encoding="utf-8"))
    assert data.get("error") is None, data["error"] + "\n" + done.stderr[-3000:]
    data["returncode"] = done.returncode
    data["stderr"] = done.stderr
    return data


def rows(tmp_path: Path) -> list[dict]:
    with sqlite3.connect(tmp_path / "data" / "outbox.db") as conn:
        return [{**json.loads(payload), "held": held}
                for payload, held in conn.execute("SELECT payload, held FROM ratings ORDER BY seq")]


def visible_for(lang: str, hint: bool = True, compact: bool = True) -> list[str]:
    """The rating screen's texts: on an 800x480 (7") display one **Language** button for the
    language bar, and the hint only where it fits without scrolling."""
    catalog = CATALOGS[lang]
    bar = [catalog["lang.choose"]] if compact else NAMES
    return [*bar, catalog["question"], *(catalog.shown(f"score.{s}") for s in protocol.SCORES),
            *([catalog["hint"]] if hint else []), access_for(lang)]


def access_for(lang: str) -> str:
    """The accessibility control's label (on every citizen screen)."""
    return CATALOGS[lang].shown("a11y.open")


def test_touches_record_each_score_follow_ups_and_languages(tmp_path):
    result = run_driver(tmp_path, "ratings")
    saved = rows(tmp_path)
    # Each tile, in order, is one rating of its score, sent as a touch in Korean.
    assert [r["score"] for r in saved[:5]] == [1, 2, 3, 4, 5]
    assert [r["id"] for r in saved[:5]] == result["tile_ids"]
    assert all(r["lang"] == "ko" and r["input"] == "touch" for r in saved[:5])
    assert all(r["held"] == 0 for r in saved)  # every visit released its rating for sending
    # The thank-you screen is the same after 매우 불만족 as after 매우 만족: no face, no score colour.
    first_thanks = result["thanks_drawn"][0]
    assert all(drawn == first_thanks for drawn in result["thanks_drawn"])
    assert first_thanks["sign"] and not any(kind == "Ellipse" for kind, *_ in first_thanks["sign"])
    assert tuple(first_thanks["background"]) == theme.STANDARD.thanks
    # Rating screen in Korean by default, labels inside the tiles.
    assert result["start_texts"] == visible_for("ko", hint=False)  # the official question takes two lines
    assert result["tile_labels"] == ["매우 불만족", "불만족", "보통", "만족", "매우 만족"]
    px_per_mm = 800 / theme.DISPLAY_WIDTH_MM[(800, 480)]
    assert result["window"] == [800, 480]
    assert min(result["tile_widths"]) / px_per_mm >= 20
    # A finger on a tile shades it until it lifts; slid off the tile first, it records nothing.
    very_satisfied = [*theme.STANDARD.tile[4], 1]
    assert result["tile_shades"] == [very_satisfied, [c * 0.85 for c in theme.STANDARD.tile[4]] + [1], very_satisfied]
    assert (result["slid_off_screen"], result["slid_off_recorded"]) == ("rating", False)
    # With software GL (llvmpipe here) every frame drawn is rasterised before the next touch is read.
    frames = result["frames"]
    assert frames["flipped"] > 5 and frames["finished"] == (frames["flipped"] if "llvmpipe" in frames["renderer"]
                                                             else 0), frames
    assert result["frames_finished"] is ("llvmpipe" in frames["renderer"])
    # The follow-up answers are in the same rating; skipped/timed-out ones keep it.
    answered = next(r for r in saved if r["id"] == result["answered_id"])
    assert (answered["score"], answered["reason"], answered["age_group"]) == (1, "wait_time", "30s")
    skipped = next(r for r in saved if r["id"] == result["skipped_id"])
    assert (skipped["score"], skipped["reason"], skipped["age_group"], skipped["held"]) == (2, None, None, 0)
    assert len(saved) == 8
    assert "대기 시간" in result["reason_texts"]
    # A language switch changes every visible label; the rating records it.
    for lang, (texts, hint) in result["languages"].items():
        assert texts == visible_for(lang, hint), lang
    # The chooser shows every language in its own script, and closes.
    assert list(result["chooser"]) == ["en", "zh", "vi", "ja"]  # an 800x480 window: the chooser
    for lang, (opened_in, texts) in result["chooser"].items():
        assert texts == [*NAMES, CATALOGS[opened_in]["a11y.close"]], lang
    english = next(r for r in saved if r["id"] == result["english_id"])
    assert english["lang"] == "en" and english["score"] == 4
    assert result["thanks_texts_en"] == [CATALOGS["en"]["thanks.title"], CATALOGS["en"]["thanks.body"],
                                         access_for("en")]
    # ... and the next visit starts in Korean again.
    assert result["after_visit_lang"] == "ko" and result["after_visit_texts"] == [visible_for("ko", False), False]


def test_a_double_tap_on_any_face_answers_no_follow_up_question(tmp_path):
    """Older citizens double-tap: the second tap must not record a reason or an age nobody gave."""
    result = run_driver(tmp_path, "double_taps", ui="guard_ms = 600", timeout=240)
    assert result["guard_s"] == 0.6  # [ui] guard_ms reaches the running flow
    visits = result["visits"]
    assert [(v["score"], v["gap"]) for v in visits] == [
        (score, gap) for score in range(1, 6) for gap in (0.05, 0.15, 0.25, 0.35, 0.45)]
    for visit in visits:
        assert visit["question"] == ("reason" if visit["score"] <= 2 else "age_group"), visit
        # The second touch came no sooner than asked (the driver's wait starts a moment before the first).
        assert visit["interval"] >= visit["gap"] - 0.01, visit
        assert visit["under"] == [], visit  # no control under the face just tapped
        assert visit["after_second"] == visit["question"], visit  # the second tap moved nothing on
        # A tap on an answer inside the new screen's guard is refused (and counted).
        assert visit["ignored"] == int(visit["slipped"]) and visit["after_slip"] == visit["question"], visit
    assert sum(v["slipped"] for v in visits) >= 10  # the guard itself was tried, not only the layout
    saved = rows(tmp_path)
    assert [r["score"] for r in saved] == [v["score"] for v in visits]
    assert all(r["reason"] is None and r["age_group"] is None and r["held"] == 0 for r in saved)


def test_cooldown_escape_and_the_staff_screen(tmp_path):
    result = run_driver(tmp_path, "guards", ui='finish_frames = "never"')
    assert result["frames_finished"] is False  # [ui] finish_frames reaches the app
    saved = rows(tmp_path)
    assert [r["score"] for r in saved] == [5]
    assert result["ignored_taps"] == 3 and result["screen_after_ignored"] == "rating"
    assert result["alive_after_escape"] is True
    assert result["wrong_pin_screen"] == "pin"
    info = result["maintenance_info"]
    assert info["terminal"] == "ui-1" and info["site"] == "test-site" and info["backlog"] == "1"
    assert "연결 안 됨" in info["broker"] and info["software"]
    assert "ui-1" in result["maintenance_texts"] and "관리 화면" in result["maintenance_texts"]
    assert result["staff_voice"] == [True, 0.75, "음량 75%"]
    assert result["returncode"] == 0  # quit from the staff screen ends the process


def test_outside_opening_hours_a_sleep_screen_and_taps_do_not_count(tmp_path):
    other_day = WEEKDAYS[(datetime.now().weekday() + 3) % 7]
    result = run_driver(tmp_path, "sleep", ui=f'hours = ["{other_day} 09:00-10:00"]')
    assert result["screen"] == "sleep" and result["recorded"] is False
    assert result["sleep_texts"][0] == CATALOGS["ko"]["sleep.title"]
    assert "운영 시간" in result["sleep_texts"][1]
    assert rows(tmp_path) == []


def publish_retained(broker, payload: bytes) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-config-publisher")
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        client.publish(protocol.topic("test-site", "ui-1", "config"), payload, qos=1, retain=True).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def test_survey_config_from_the_server_is_applied_cached_and_bad_ones_rejected(tmp_path, mosquitto):
    question = "민원실 서비스는 어떠셨나요?"
    good = protocol.SurveyConfig(
        "site-7", question={"ko": question}, reasons=("parking", "wait_time"),
        reason_labels={"parking": {"ko": "주차 공간", "en": "Parking"}}, reason_threshold=1,
    )
    publish_retained(mosquitto, good.encode())
    (tmp_path / "expect.json").write_text(json.dumps({"question": question, "reason": "parking"}))
    first = run_driver(tmp_path, "survey", broker=mosquitto.url)
    assert first["version"] == "site-7" and first["status_extra"]["config_version"] == "site-7"
    assert "주차 공간" in first["reason_texts"]
    assert [(r["score"], r["reason"]) for r in rows(tmp_path)] == [(1, "parking")]
    # A bad config replaces the good one on the broker: rejected, the good one stays.
    publish_retained(mosquitto, b'{"v":1,"version":"site-8","reason_threshold":"high"}')
    (tmp_path / "expect.json").write_text(json.dumps({"question": question, "reject": True}))
    second = run_driver(tmp_path, "survey", broker=mosquitto.url)
    assert second["after_reject_version"] == "site-7" and second["after_reject_question"] == question
    assert "survey config rejected: reason_threshold" in second["stderr"]
    # Restart with the broker gone: the cached config is in force.
    mosquitto.stop()
    (tmp_path / "expect.json").write_text(json.dumps({"question": question}))
    third = run_driver(tmp_path, "survey", broker=mosquitto.url)
    assert third["version"] == "site-7"


def test_every_screen_draws_at_1280x800_with_large_tiles(tmp_path):
    shots = tmp_path / "shots"
    result = run_driver(tmp_path, "screenshots", size="1280x800", shots=shots, langs="zh")
    px_per_mm = 1280 / theme.DISPLAY_WIDTH_MM[(1280, 800)]
    assert min(result["tile_widths"]) / px_per_mm >= 20
    names = {"rating", "followup-reason", "followup-age", "thanks", "sleep", "maintenance"}
    assert {name.split("-zh-")[0].removeprefix("kiosk-") for name in result["shots"]} == names
    for name in result["shots"]:
        assert (shots / name).stat().st_size > 5000  # drawn, not blank


def test_a_physical_button_goes_through_the_same_flow(tmp_path, monkeypatch):
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    result = run_driver(tmp_path, "buttons", ui=(
        "[buttons]\npins = [5, 6, 13, 19, 26]\nled_connected = 16\nled_buffering = 20\n"
        "led_error = 21\ndebounce_ms = 50\n"))
    assert (result["presses"], result["bounces"]) == (1, 1)
    assert result["screen_after_press"] in ("thanks", "rating")
    assert result["leds"] == {"connected": 0, "buffering": 1, "error": 0}
    [row] = rows(tmp_path)
    assert (row["score"], row["input"], row["held"]) == (5, "button", 0)


def test_sigterm_stops_the_app_cleanly(tmp_path):
    """systemd stops the kiosk with SIGTERM: it must end (not be refused like a close request)."""
    env = {**os.environ, "KIVY_HOME": str(tmp_path / "kivy-home"), "KIVY_NO_ARGS": "1",
           "SDL_VIDEODRIVER": os.environ.get("SDL_VIDEODRIVER", "offscreen"),
           "SDL_AUDIODRIVER": "dummy", "XDG_DATA_HOME": str(tmp_path / "xdg")}
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "onetap-kiosk"), "run", "--broker", "mqtt://127.0.0.1:9"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        ready = ""
        deadline = time.monotonic() + 60
        while "ready in" not in ready and time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line:
                break
            ready += line
        assert "ready in" in ready, ready[-2000:]
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        assert (tmp_path / "xdg" / "onetap" / "outbox.db").exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
