"""Theme and layout (no Kivy): text contrast at least 4.5:1 (KWCAG 2.2) and tiles at least 20 mm wide."""

from __future__ import annotations

import pytest

from kiosk.ui import theme


def test_contrast_formula_matches_wcag():
    black, white = theme.hex_rgb("#000000"), theme.hex_rgb("#FFFFFF")
    assert theme.contrast(black, white) == pytest.approx(21.0)
    assert theme.contrast(white, white) == pytest.approx(1.0)
    assert theme.contrast(theme.hex_rgb("#767676"), white) == pytest.approx(4.54, abs=0.01)


@pytest.mark.parametrize("chosen", [theme.STANDARD, theme.HIGH_CONTRAST], ids=lambda t: t.name)
def test_every_text_colour_has_enough_contrast(chosen):
    for role, (fg, bg) in chosen.text_pairs().items():
        ratio = theme.contrast(fg, bg)
        assert ratio >= theme.MIN_CONTRAST, f"{chosen.name} {role}: {ratio:.2f}:1"


def test_high_contrast_theme_is_at_least_7_to_1():
    assert min(theme.contrast(*p) for p in theme.HIGH_CONTRAST.text_pairs().values()) >= 7.0


def test_faces_differ_in_colour_and_tiles_are_not_colour_only():
    assert len(set(theme.STANDARD.face)) == 5
    # The face's features stand out from every face colour (meaning is in the shape too).
    for face in theme.STANDARD.face:
        assert theme.contrast(theme.STANDARD.feature, face) >= 3.0


@pytest.mark.parametrize("size", sorted(theme.DISPLAY_WIDTH_MM))
def test_tiles_are_at_least_20_mm_wide(size):
    assert theme.tile_width_mm(*size) >= theme.MIN_TILE_MM
    layout = theme.Layout(*size)
    assert layout.tile_x(4) + layout.tile_width <= size[0] - layout.margin + 0.01
    assert layout.tile_height > layout.tile_width * 0.9  # tall enough for a face and two text lines


def test_large_mode_zooms_everything_to_200_percent():
    assert theme.theme(large_text=True).zoom == 2.0
    assert theme.theme(high_contrast=True).name == "high_contrast"


@pytest.mark.parametrize("chosen", [theme.STANDARD, theme.HIGH_CONTRAST], ids=lambda t: t.name)
def test_the_thank_you_screen_wears_no_score_colour(chosen):
    """The thank-you screen follows every score: staff nearby must not read the score off its colour."""
    score_colours = {*chosen.face, *chosen.tile, *chosen.tile_border} - {chosen.background}
    assert chosen.thanks not in score_colours and chosen.thanks_text not in set(chosen.face)


@pytest.mark.parametrize("display", sorted(theme.DISPLAYS))
def test_the_smallest_citizen_font_is_7_25_mm_of_hangul_on_each_display(display):
    (width, height), (_, height_mm) = theme.DISPLAYS[display]
    assert theme.pitch_mm(width, height) == pytest.approx(height_mm / height)
    layout = theme.Layout.for_window(width, height, (width, height))
    assert theme.char_mm(layout.font_px, width, height) >= theme.MIN_CHAR_MM
    # No citizen role is smaller; one pixel less would not be 7.25 mm.
    assert min(layout.font(role) for role in ("question", "tile", "button", "hint", "title", "body", "huge")) \
        == layout.font_px
    assert theme.char_mm(layout.font_px - 2, width, height) < theme.MIN_CHAR_MM


def test_large_mode_lays_the_page_out_at_twice_the_window():
    normal = theme.Layout.for_window(800, 480, (800, 480))
    large = theme.Layout.for_window(800, 480, (800, 480), theme.LARGE_ZOOM)
    # The window's width, twice its height to start with (the page grows and scrolls down).
    assert (large.width, large.height, large.font_px) == (800, 960, 2 * normal.font_px)
    assert (large.tile_width, large.margin, large.gap) == (2 * normal.tile_width, 2 * normal.margin, 2 * normal.gap)
    assert (normal.tile_cols, large.tile_cols) == (5, 2)  # two 200 % tiles to a row on a 7" display
    assert large.font("question") == pytest.approx(2 * normal.font("question"), abs=1)
