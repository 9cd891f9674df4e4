"""The kiosk config's [ui] and [buttons] tables: defaults, validation naming key and file, env overrides."""

from __future__ import annotations

import pytest

from kiosk.config import load_config
from kiosk.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "kiosk.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults():
    cfg = load_config(env={})
    assert cfg.ui.language == "ko" and cfg.ui.cooldown_s == 3.0 and cfg.ui.followup_timeout_s == 10.0
    assert cfg.ui.hours == () and cfg.ui.fullscreen is None and cfg.ui.fps == 30
    assert cfg.buttons.pins == () and cfg.buttons.score_map == {}


def test_file_and_environment(tmp_path):
    path = write(tmp_path, """
[ui]
language = "en"
high_contrast = true
hours = ["mon-fri 09:00-18:00", "sat 09:00-12:00"]
[buttons]
pins = [5, 6, 13]
scores = [1, 3, 5]
leds = [17, 27, 22]
led_error = 21
""")
    cfg = load_config(path, env={"ONETAP_UI_COOLDOWN_S": "5", "ONETAP_BUTTONS_DEBOUNCE_MS": "80"})
    assert cfg.ui.language == "en" and cfg.ui.high_contrast and cfg.ui.cooldown_s == 5.0
    assert cfg.ui.hours == ("mon-fri 09:00-18:00", "sat 09:00-12:00")
    assert cfg.buttons.score_map == {5: 1, 6: 3, 13: 5} and cfg.buttons.debounce_ms == 80
    assert load_config(env={"ONETAP_BUTTONS_PINS": "5,6,13,19,26"}).buttons.score_map[26] == 5


@pytest.mark.parametrize("text,message", [
    ('[ui]\nlanguage = "fr"', "ui.language = 'fr'"),
    ('[ui]\nlanguages = ["ko", "xx"]', "ui.languages"),
    ('[ui]\ncooldown_s = -1', "ui.cooldown_s = -1"),
    ('[ui]\nhours = ["mon-fri 9-18"]', "ui.hours"),
    ('[ui]\nmaintenance_pin = "12"', "ui.maintenance_pin"),
    ('[ui]\nmaintenance_pin = 1234', "must be a string"),
    ('[ui]\ncolour = "red"', "unknown key ui.colour"),
    ('[buttons]\npins = [5, 6]', "buttons.pins"),
    ('[buttons]\npins = [5, 6]\nscores = [1, 9]', "buttons.scores"),
    ('[buttons]\npins = [5, 6, 13, 19, 40]', "GPIO 40"),
    ('[buttons]\npins = [5, 6, 13, 19, 26]\nled_error = 5', "used twice"),
    ('[buttons]\npins = [5, 6, 13, 19, 26]\nleds = [1]', "buttons.leds"),
])
def test_bad_values_name_key_and_file(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert message in str(info.value) and (str(path) in str(info.value))
