"""Fonts (fontTools, no Kivy): every catalog character has a glyph in the font the UI uses for its language."""

from __future__ import annotations

import pytest

from kiosk.catalog import LANGUAGES, load_catalogs
from kiosk.ui import fonts


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_catalog_character_is_in_the_font_of_its_language(lang):
    catalog = load_catalogs()[lang]
    for path in fonts.font_files(lang):
        for key, text in catalog.messages.items():
            assert fonts.missing(path, text) == "", f"{path.name} lacks glyphs of {lang}.json {key}: {text!r}"


@pytest.mark.parametrize("lang", LANGUAGES)
def test_each_language_name_renders_in_its_own_font(lang):
    # The language bar shows every name at once, each in its own language's font.
    name = load_catalogs()[lang]["lang.name"]
    assert fonts.missing(fonts.font_files(lang)[0], name) == ""


def test_the_checker_does_see_missing_glyphs():
    korean, _ = fonts.font_files("ko")
    assert fonts.missing(korean, "Việt 한국") == "ệ"
    assert fonts.missing(fonts.font_files("vi")[0], "Nguyễn Đức Thắng, 30–39") == ""
    assert fonts.font_name("xx") == "onetap-ko"


def test_korean_is_bundled_with_its_licence_and_covers_all_hangul():
    regular, bold = fonts.font_files("ko")
    assert regular.name == "NanumGothic.ttf" and bold.exists()
    syllables = "".join(chr(c) for c in range(0xAC00, 0xD7A4))
    assert fonts.missing(regular, syllables) == ""
    for lang in LANGUAGES:
        assert all(path.exists() for path in fonts.font_files(lang))
    assert "SIL Open Font License" in (fonts.FONTS_DIR / "OFL-NanumGothic.txt").read_text()
    assert "SIL OPEN FONT LICENSE" in (fonts.FONTS_DIR / "OFL-NotoSansCJK.txt").read_text()


@pytest.mark.skipif(not fonts.SYSTEM_CJK.exists(), reason="fonts-noto-cjk not installed")
def test_server_text_beyond_the_subset_falls_back_to_the_system_cjk_font():
    text = "停车场和电梯"  # not in the zh catalog
    assert fonts.missing(fonts.font_files("zh")[0], text)
    assert fonts.font_for("zh", text) == fonts.FALLBACK
    assert fonts.font_for("zh", "您对今天的服务满意吗？") == "onetap-zh"
    assert fonts.font_for("vi", "Bãi đỗ xe") == "onetap-vi"
