"""Fonts per language: bundled files, Kivy registration, glyph coverage, and the CJK subsets' rebuild.

Kivy's default font has no Hangul: NanumGothic (bundled) becomes the
default. Chinese and Japanese use subsets of Noto Sans CJK made from the
catalogs (``python -m kiosk.ui.fonts`` rebuilds them after a catalog change);
Vietnamese uses Noto's Latin with every Vietnamese letter. Text from the
server that a bundled file cannot show falls back to the system's Noto CJK.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path

from kiosk.catalog import LANGUAGES, all_texts, load_catalogs

log = logging.getLogger(__name__)

FONTS_DIR = Path(__file__).resolve().parent.parent / "fonts"
SYSTEM_CJK = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")
SYSTEM_CJK_BOLD = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc")
# Face numbers inside the Noto Sans CJK collections.
_TTC_FACE = {"ja": 0, "ko": 1, "zh": 2}

KOREAN = ("NanumGothic.ttf", "NanumGothicBold.ttf")
FACES: dict[str, tuple[str, str]] = {
    "ko": KOREAN,
    "en": KOREAN,
    "zh": ("NotoSansCJKsc-Subset-Regular.otf", "NotoSansCJKsc-Subset-Bold.otf"),
    "ja": ("NotoSansCJKjp-Subset-Regular.otf", "NotoSansCJKjp-Subset-Bold.otf"),
    "vi": ("NotoSansCJK-Latin-Regular.otf", "NotoSansCJK-Latin-Bold.otf"),
}
FALLBACK = "onetap-fallback"

# Beyond the catalogs, every subset keeps: ASCII and Latin-1, general
# punctuation, CJK punctuation and full-width forms; the Latin one keeps every
# Latin letter with its diacritics (Vietnamese text from the server).
_COMMON = [*range(0x20, 0x7F), *range(0xA0, 0x100), *range(0x2000, 0x2070), 0x20A9, 0x2190, 0x2192]
_CJK_EXTRA = [*range(0x3000, 0x3040), *range(0xFF00, 0xFFF0)]
_KANA = [*range(0x3040, 0x3100)]
_LATIN = [*range(0x100, 0x250), *range(0x300, 0x370), *range(0x1E00, 0x1F00)]


def font_name(lang: str) -> str:
    """The Kivy font name registered for *lang*."""
    return f"onetap-{lang if lang in FACES else 'ko'}"


def font_files(lang: str) -> tuple[Path, Path]:
    """(regular, bold) files the UI uses for *lang*."""
    regular, bold = FACES.get(lang, KOREAN)
    return FONTS_DIR / regular, FONTS_DIR / bold


@functools.lru_cache(maxsize=16)
def _cmap(path: Path, face: int | None = None) -> frozenset[int]:
    from fontTools.ttLib import TTFont

    font = TTFont(str(path), fontNumber=face if face is not None else -1, lazy=True)
    try:
        return frozenset(font.getBestCmap())
    finally:
        font.close()


def missing(path: Path, text: str, face: int | None = None) -> str:
    """Characters of *text* that *path* has no glyph for (whitespace and controls aside)."""
    cmap = _cmap(Path(path), face)
    return "".join(sorted({c for c in text if not c.isspace() and c.isprintable() and ord(c) not in cmap}))


@functools.lru_cache(maxsize=8)
def _catalog_characters(regular: Path) -> frozenset[str]:
    """Every character of the catalogs shown in *regular*: the file has them all (tests/kiosk/ui/test_fonts.py)."""
    shown_in = [lang for lang in LANGUAGES if font_files(lang)[0] == regular]
    return frozenset("".join(all_texts(catalog) for catalog in load_catalogs(shown_in).values()))


def font_for(lang: str, text: str) -> str:
    """The font name to show *text* in *lang*: the bundled one, or the system CJK font if it lacks glyphs."""
    regular, _ = font_files(lang)
    if set(text) <= _catalog_characters(regular) | set(" \n"):
        # A catalog's own text: no need to read the font's glyph table (fontTools and
        # the table cost the kiosk ~10 MB; docs/benchmarks.md, "Issue 14: kiosk").
        return font_name(lang)
    try:
        if not missing(regular, text):
            return font_name(lang)
        if SYSTEM_CJK.exists() and not missing(SYSTEM_CJK, text, _TTC_FACE.get(lang, 0)):
            return FALLBACK
    except Exception:  # noqa: BLE001 - a font question must never stop a visit
        log.exception("cannot check glyph coverage for %s", lang)
        return font_name(lang)
    log.warning("no font here has every glyph of %r (%s); some may show as boxes", text[:40], lang)
    return font_name(lang)


def register() -> None:
    """Register every language's font with Kivy; NanumGothic becomes the default font."""
    from kivy.core.text import DEFAULT_FONT, LabelBase

    for lang in FACES:
        regular, bold = font_files(lang)
        LabelBase.register(font_name(lang), str(regular), fn_bold=str(bold))
    regular, bold = font_files("ko")
    LabelBase.register(DEFAULT_FONT, str(regular), fn_bold=str(bold))
    if SYSTEM_CJK.exists():
        bold_cjk = SYSTEM_CJK_BOLD if SYSTEM_CJK_BOLD.exists() else SYSTEM_CJK
        LabelBase.register(FALLBACK, str(SYSTEM_CJK), fn_bold=str(bold_cjk))
    else:
        LabelBase.register(FALLBACK, str(regular), fn_bold=str(bold))


def build_subsets(source_regular: Path = SYSTEM_CJK, source_bold: Path = SYSTEM_CJK_BOLD,
                  out_dir: Path = FONTS_DIR) -> list[Path]:
    """Rebuild the zh, ja and vi subsets from the system's Noto Sans CJK collections."""
    from fontTools import subset

    catalogs = load_catalogs(LANGUAGES)
    # The language bar shows every language's own name in its own font.
    names = "".join(c["lang.name"] for c in catalogs.values())
    plans = {
        "zh": (_TTC_FACE["zh"], [ord(c) for c in all_texts(catalogs["zh"]) + names] + _COMMON + _CJK_EXTRA),
        "ja": (_TTC_FACE["ja"], [ord(c) for c in all_texts(catalogs["ja"]) + names]
               + _COMMON + _CJK_EXTRA + _KANA),
        "vi": (_TTC_FACE["ja"], [ord(c) for c in all_texts(catalogs["vi"])] + _COMMON + _LATIN),
    }
    written = []
    for lang, (face, codepoints) in plans.items():
        for source, target in zip((source_regular, source_bold), FACES[lang]):
            options = subset.Options()
            options.font_number = face
            options.layout_features = ["*"]
            options.name_IDs = ["*"]
            options.notdef_outline = True
            options.drop_tables += ["DSIG"]
            font = subset.load_font(str(source), options)
            subsetter = subset.Subsetter(options)
            subsetter.populate(unicodes=sorted(set(codepoints)))
            subsetter.subset(font)
            path = out_dir / target
            subset.save_font(font, str(path), options)
            written.append(path)
    return written


if __name__ == "__main__":
    for written_path in build_subsets():
        print(f"{written_path} {written_path.stat().st_size // 1024} KiB", file=sys.stderr)
