"""Voice prompts: what each screen speaks, rendering with the real espeak-ng, the cache and the institution's own files."""

from __future__ import annotations

import array
import shutil
import wave

import pytest

from kiosk.catalog import Catalog, load_catalogs
from kiosk.protocol import SurveyConfig
from kiosk.voice import (RATE, Prompts, VoiceError, as_shown, option_key, render, screen_prompts, site_texts,
                         spoken_keys)

SITE_SURVEY = SurveyConfig("7", question={"ko": "민원 처리에 만족하셨나요?"},
                           reasons=("wait_time", "parking"),
                           reason_labels={"wait_time": {"ko": "오래 기다렸어요", "en": "-long wait"},
                                          "parking": {"ko": "주차가 불편해요"}})


def test_each_screen_speaks_its_question_then_the_focused_target():
    assert screen_prompts("rating", focused="score.1", keypad=True) == ["question", "voice.keys", "score.1"]
    assert screen_prompts("reason", "reason", "reason.wait_time") == ["reason.title", "reason.wait_time"]
    assert screen_prompts("thanks") == ["thanks.title", "thanks.body"]
    assert screen_prompts("sleep") == ["sleep.title"]
    assert option_key("rating", None, (), 4) == "score.5"
    assert option_key("age_group", "age", ("20s", "30s"), 1) == "age.30s"
    assert option_key("age_group", "age", ("20s",), 3) is None


def test_every_spoken_key_has_a_text_in_every_language():
    for lang, catalog in load_catalogs().items():
        for key in spoken_keys(catalog):
            assert catalog.messages.get(key), (lang, key)
            assert not key.endswith(".short"), (lang, key)  # voice says the full label


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is installed by deploy/dev-setup.sh")
def test_render_writes_audible_output_format_prompts_and_keeps_unchanged_ones(tmp_path):
    catalog = Catalog("vi", {"question": "Bạn có hài lòng không?", "score.1": "Rất không hài lòng"})
    assert render({"vi": catalog}, tmp_path) == {"vi": 2}
    path = tmp_path / "vi" / "score.1.wav"
    with wave.open(str(path)) as sound:
        assert (sound.getframerate(), sound.getnchannels(), sound.getsampwidth()) == (RATE, 2, 2)
        samples = array.array("h", sound.readframes(sound.getnframes()))
    assert max(abs(s) for s in samples) > 3000  # speech, not silence
    before = path.stat().st_mtime_ns
    assert render({"vi": catalog}, tmp_path) == {"vi": 0}  # cached
    assert path.stat().st_mtime_ns == before
    changed = Catalog("vi", {**catalog.messages, "score.1": "Không hài lòng lắm"})
    assert render({"vi": changed}, tmp_path) == {"vi": 1}


def test_a_missing_espeak_is_a_clear_error(tmp_path):
    with pytest.raises(VoiceError, match="not found"):
        render({"en": Catalog("en", {"question": "Hello"})}, tmp_path, espeak=str(tmp_path / "no-espeak"))


def test_the_institutions_recording_takes_precedence(tmp_path):
    cache, own = tmp_path / "cache", tmp_path / "own"
    for base in (cache, own):
        (base / "ko").mkdir(parents=True)
    (cache / "ko" / "question.wav").write_bytes(b"rendered")
    (cache / "ko" / "thanks.title.wav").write_bytes(b"rendered")
    (own / "ko" / "question.wav").write_bytes(b"recorded")
    prompts = Prompts(cache, own)
    assert prompts.path("ko", "question") == own / "ko" / "question.wav"
    assert prompts.path("ko", "thanks.title") == cache / "ko" / "thanks.title.wav"
    assert prompts.path("ko", "skip") is None


def test_the_site_texts_are_the_ones_each_language_shows():
    korean, english = load_catalogs(["ko", "en"]).values()
    assert site_texts(SITE_SURVEY, korean) == {
        "site.question": ("ko", "민원 처리에 만족하셨나요?"),
        "site.reason.wait_time": ("ko", "오래 기다렸어요"),
        "site.reason.parking": ("ko", "주차가 불편해요")}
    # English: the site has no English question (the catalog's is shown and said); a code the
    # catalog lacks shows the site's Korean label, said in Korean.
    assert site_texts(SITE_SURVEY, english) == {
        "site.reason.wait_time": ("en", "-long wait"), "site.reason.parking": ("ko", "주차가 불편해요")}
    assert site_texts(None, korean) == {}


def test_a_screen_says_the_site_text_once_its_prompt_is_there(tmp_path):
    korean = load_catalogs(["ko"])["ko"]
    prompts = Prompts(tmp_path / "cache", tmp_path / "own")
    keys = ["question", "voice.keys", "reason.wait_time", "reason.staff_attitude"]
    assert as_shown(keys, SITE_SURVEY, korean, prompts) == keys  # not rendered yet: the catalog's
    (tmp_path / "own" / "ko").mkdir(parents=True)
    (tmp_path / "own" / "ko" / "site.reason.wait_time.wav").write_bytes(b"the institution's recording")
    assert as_shown(keys, SITE_SURVEY, korean, prompts) == [
        "question", "voice.keys", "site.reason.wait_time", "reason.staff_attitude"]
    assert as_shown(keys, None, korean, prompts) == keys


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is installed by deploy/dev-setup.sh")
def test_the_site_texts_are_rendered_like_the_catalogs_and_again_when_they_change(tmp_path):
    catalogs = load_catalogs(["ko", "en"])
    assert render(catalogs, tmp_path, survey=SITE_SURVEY, site_only=True) == {"ko": 3, "en": 2}
    assert sorted(p.name for p in (tmp_path / "en").glob("*.wav")) == [
        "site.reason.parking.wav", "site.reason.wait_time.wav"]
    # A text that starts with "-" is said, not taken for an espeak-ng option.
    with wave.open(str(tmp_path / "en" / "site.reason.wait_time.wav")) as sound:
        samples = array.array("h", sound.readframes(sound.getnframes()))
    assert max(abs(v) for v in samples) > 3000
    assert render(catalogs, tmp_path, survey=SITE_SURVEY, site_only=True) == {"ko": 0, "en": 0}
    changed = SurveyConfig("8", question={"ko": "오늘 방문은 어떠셨나요?"})
    assert render(catalogs, tmp_path, survey=changed, site_only=True) == {"ko": 1, "en": 0}
