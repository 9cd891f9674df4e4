"""Dashboard labels: every code a rating can carry reads as words, in both languages."""

from kiosk.protocol import AGE_GROUPS, DEFAULT_REASONS
from server.dashboard.i18n import LANGS, TEXT, code_label


def test_every_default_reason_and_age_group_has_a_label_in_every_language():
    for code in (*DEFAULT_REASONS, *AGE_GROUPS):
        for lang in LANGS:
            label = code_label(code, lang)
            assert label and (label != code or lang == "en" and code[0].isdigit()), (code, lang)
    assert code_label("wait_time", "ko") == "대기 시간"


def test_a_sites_own_reason_code_shows_as_it_is():
    assert code_label("parking", "ko") == "parking"


def test_every_text_has_korean():
    assert all(entry.get("ko") for entry in TEXT.values())
