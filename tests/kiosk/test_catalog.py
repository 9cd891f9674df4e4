"""Message catalogs: every language has every key, texts load, labels fall back sensibly."""

from __future__ import annotations

import json

import pytest

from kiosk import protocol
from kiosk.catalog import LANGUAGES, CatalogError, load_catalog, load_catalogs


def test_every_language_has_every_key_and_every_score_reason_and_age_group():
    catalogs = load_catalogs()
    assert list(catalogs) == list(LANGUAGES)
    for catalog in catalogs.values():
        for score in protocol.SCORES:
            assert catalog.score(score)
        for code in protocol.DEFAULT_REASONS:
            assert catalog.messages[f"reason.{code}"]
        for group in protocol.AGE_GROUPS:
            assert catalog.messages[f"age.{group}"]
        for day in protocol.WEEKDAYS:
            assert catalog.messages[f"day.{day}"]


def test_korean_is_the_default_with_the_official_wording():
    ko = load_catalog("ko")
    assert ko["question"] == "오늘 받으신 서비스에 만족하셨나요?"
    assert [ko.score(s) for s in protocol.SCORES] == ["매우 불만족", "불만족", "보통", "만족", "매우 만족"]


def test_languages_are_distinct_translations():
    catalogs = load_catalogs()
    questions = {c["question"] for c in catalogs.values()}
    assert len(questions) == len(LANGUAGES)
    assert "满意" in catalogs["zh"]["question"] and "満足" in catalogs["ja"]["question"]
    assert "hài lòng" in catalogs["vi"]["question"]


def test_site_labels_and_question_override_the_catalog():
    en = load_catalog("en")
    labels = {"parking": {"ko": "주차"}, "wait_time": {"en": "Queue"}}
    assert en.label("reason", "wait_time", labels) == "Queue"
    assert en.label("reason", "staff_attitude", labels) == "Staff"  # the catalog's (short) form
    assert en.label("reason", "parking", labels) == "주차"  # the site's Korean label beats the bare code
    assert en.label("reason", "lockers") == "lockers"
    assert en.question({"ko": "질문"}) == en["question"]
    assert en.question({"en": "How was it?"}) == "How was it?"


def test_hours_are_shown_with_local_day_names():
    assert load_catalog("ko").hours(["mon-fri 09:00-18:00", "sat 09:00-12:00"]) == (
        "월–금  09:00-18:00\n토  09:00-12:00")


def test_a_catalog_missing_a_key_is_named(tmp_path):
    for lang in ("ko", "en"):
        data = json.loads(load_catalog(lang).messages and json.dumps(dict(load_catalog(lang).messages)))
        if lang == "en":
            del data["skip"]
        (tmp_path / f"{lang}.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(CatalogError, match=r"en\.json: lacks 'skip'"):
        load_catalogs(("ko", "en"), tmp_path)


def test_broken_or_missing_catalog_files_are_errors(tmp_path):
    (tmp_path / "ko.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(CatalogError, match="ko.json: cannot read"):
        load_catalog("ko", tmp_path)
    with pytest.raises(CatalogError, match="no catalog"):
        load_catalog("xx", tmp_path)
    (tmp_path / "ko.json").write_text('{"question": ""}', encoding="utf-8")
    with pytest.raises(CatalogError, match="non-empty"):
        load_catalog("ko", tmp_path)


def test_a_short_form_is_shown_on_the_kiosk_and_may_only_shorten_a_known_key(tmp_path):
    en = load_catalog("en")
    # Shown short on a tile; the full label stays the score's (voice, reports).
    assert (en.shown("score.1"), en.score(1)) == ("Very bad", "Very dissatisfied")
    assert en.label("reason", "resolution") == "Outcome" and en["reason.resolution"] == "Outcome of my request"
    assert load_catalog("ko").shown("score.1") == "매우 불만족"  # no short form: the label itself
    # A site's own label in this language comes before the catalog's short form.
    assert en.label("reason", "resolution", {"resolution": {"en": "Result"}}) == "Result"
    for lang in ("ko", "en"):
        data = dict(load_catalog(lang).messages)
        if lang == "en":
            data["reason.nonsense.short"] = "?"
        (tmp_path / f"{lang}.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(CatalogError, match=r"en\.json: has 'reason.nonsense.short'"):
        load_catalogs(("ko", "en"), tmp_path)
