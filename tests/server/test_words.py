"""The server's one catalogue of words: complete in both languages, each word once."""

import re
import string

import pytest

from server import words


def test_every_word_is_in_korean_and_english():
    for key, entry in words.TEXT.items():
        assert set(entry) == set(words.LANGS), key
        assert all(text.strip() for text in entry.values()), key


def test_both_languages_fill_the_same_blanks():
    def blanks(text):
        return {name for _, name, _, _ in string.Formatter().parse(text) if name}

    for key, entry in words.TEXT.items():
        assert blanks(entry["ko"]) == blanks(entry["en"]), key


def test_no_word_is_written_twice():
    # An alert kind's name is found by its kind (alert_<kind>), so it may say
    # what another key says.
    seen = {}
    for key, entry in words.TEXT.items():
        if key.startswith("alert_"):
            continue
        pair = (entry["ko"], entry["en"])
        assert pair not in seen, f"{key} repeats {seen.get(pair)}"
        seen[pair] = key


def test_t_fills_values_and_falls_back_to_korean():
    assert words.t("sheet_score", "ko", n=3) == "3점"
    assert words.t("sheet_score", "en", n=3) == "Score 3"
    assert words.t("total", "fr") == "합계"
    with pytest.raises(KeyError):
        words.t("no such word", "ko")


def test_no_code_reaches_a_reader():
    # A word is read by people: no snake_case code in either language.
    code = re.compile(r"\b[a-z]+_[a-z_]+\b")
    for key, entry in words.TEXT.items():
        for text in entry.values():
            shown = re.sub(r"\{[^}]*\}", "", text).replace("ratings.csv", "")
            assert not code.search(shown), (key, text)
