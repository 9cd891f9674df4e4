"""Colours, sizes and layout of the kiosk screens (plain data, no Kivy), checked for contrast and touch size."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

RGB = tuple[float, float, float]

#: Official Raspberry Pi 7" display: 800x480 over a 154.9 mm wide active area.
#: 1280x800 is a 7" 16:10 panel (150.8 mm wide); the smaller figure is the safer one.
DISPLAY_WIDTH_MM = {(800, 480): 154.9, (1280, 800): 150.8}
MIN_TILE_MM = 20.0
#: Displays an institution may buy: pixels and active area (mm): the official
#: Raspberry Pi 7" touch display, and a 10.1" 1280x800 touch panel.
DISPLAYS = {"7-inch 800x480": ((800, 480), (154.08, 85.92)),
            "10.1-inch 1280x800": ((1280, 800), (216.96, 135.6))}
#: The criteria's minimum character size on screens of 11 inches or less.
MIN_CHAR_MM = 7.25
#: A character's height is the ink height of a full-height Hangul syllable (한) at the
#: font size: 0.92 of it in NanumGothic, 0.89 in Noto Sans CJK (regular); the smaller rules.
HANGUL_EM = 0.89
#: Large mode enlarges every visual thing (faces, tiles, text, gaps) to this factor.
LARGE_ZOOM = 2.0
MIN_CONTRAST = 4.5


def pitch_mm(width: int, height: int) -> float:
    """Millimetres per pixel (vertical) of the display with this many pixels.

    An unknown panel is taken as 10.1" class (135.6 mm tall), the display docs/accessibility.md names.
    """
    for (pixels, (_, height_mm)) in DISPLAYS.values():
        if pixels == (width, height):
            return height_mm / height
    return 135.6 / height


def char_mm(font_px: float, width: int, height: int) -> float:
    """A font size in pixels as the height of its Hangul characters in millimetres on that display."""
    return font_px * HANGUL_EM * pitch_mm(width, height)


def min_font_px(width: int, height: int) -> int:
    """The smallest font size whose Hangul characters are MIN_CHAR_MM tall on that display (one pixel spare)."""
    return math.ceil(MIN_CHAR_MM / pitch_mm(width, height) / HANGUL_EM) + 1


def hex_rgb(text: str) -> RGB:
    text = text.lstrip("#")
    return tuple(int(text[i:i + 2], 16) / 255 for i in (0, 2, 4))  # type: ignore[return-value]


def _linear(channel: float) -> float:
    return channel / 12.92 if channel <= 0.04045 else ((channel + 0.055) / 1.055) ** 2.4


def luminance(colour: RGB) -> float:
    r, g, b = (_linear(c) for c in colour)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: RGB, b: RGB) -> float:
    """WCAG 2 contrast ratio (1..21)."""
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


@dataclass(frozen=True)
class Theme:
    name: str
    background: RGB
    text: RGB
    muted_text: RGB
    #: Per score 1..5: the face's colour, the tile's background and border.
    face: tuple[RGB, ...]
    tile: tuple[RGB, ...]
    tile_border: tuple[RGB, ...]
    tile_text: RGB
    feature: RGB  # eyes and mouth
    button: RGB
    button_text: RGB
    button_active: RGB
    button_active_text: RGB
    skip: RGB
    skip_text: RGB
    thanks: RGB
    thanks_text: RGB
    error: RGB
    error_text: RGB
    sleep: RGB
    sleep_text: RGB
    countdown: RGB
    border_width: float = 3.0
    #: Large mode: every visual thing this many times its size (the page is scrolled).
    zoom: float = 1.0
    #: The keypad's focus ring (around a tile or an answer, on the page background).
    focus: RGB = (0.0, 0.0, 0.0)

    def text_pairs(self) -> dict[str, tuple[RGB, RGB]]:
        """Every (text colour, background) pair a screen shows."""
        pairs = {
            "question": (self.text, self.background),
            "hint": (self.muted_text, self.background),
            "button": (self.button_text, self.button),
            "button_active": (self.button_active_text, self.button_active),
            "skip": (self.skip_text, self.skip),
            "thanks": (self.thanks_text, self.thanks),
            "error": (self.error_text, self.error),
            "sleep": (self.sleep_text, self.sleep),
        }
        for score, tile in enumerate(self.tile, start=1):
            pairs[f"tile{score}"] = (self.tile_text, tile)
        return pairs


STANDARD = Theme(
    name="standard",
    background=hex_rgb("#F4F6F8"),
    text=hex_rgb("#1B1F24"),
    muted_text=hex_rgb("#4A5562"),
    face=tuple(hex_rgb(c) for c in ("#E53935", "#FB8C00", "#FDD835", "#7CB342", "#2E9E44")),
    tile=tuple(hex_rgb(c) for c in ("#FDE7E6", "#FFF1DE", "#FFFBE0", "#EEF6E4", "#E2F3E5")),
    tile_border=tuple(hex_rgb(c) for c in ("#E53935", "#FB8C00", "#E0BC00", "#7CB342", "#2E9E44")),
    tile_text=hex_rgb("#1B1F24"),
    feature=hex_rgb("#1B1F24"),
    button=hex_rgb("#FFFFFF"),
    button_text=hex_rgb("#1F4E79"),
    button_active=hex_rgb("#1F4E79"),
    button_active_text=hex_rgb("#FFFFFF"),
    skip=hex_rgb("#37474F"),
    skip_text=hex_rgb("#FFFFFF"),
    # The same navy after any score: green would say "good answer".
    thanks=hex_rgb("#1F4E79"),
    thanks_text=hex_rgb("#FFFFFF"),
    error=hex_rgb("#B3261E"),
    error_text=hex_rgb("#FFFFFF"),
    sleep=hex_rgb("#1C2833"),
    sleep_text=hex_rgb("#E8EDF2"),
    countdown=hex_rgb("#1F4E79"),
    focus=hex_rgb("#0B3D91"),
)

HIGH_CONTRAST = Theme(
    name="high_contrast",
    background=hex_rgb("#000000"),
    text=hex_rgb("#FFFFFF"),
    muted_text=hex_rgb("#E0E0E0"),
    face=STANDARD.face,
    tile=tuple(hex_rgb("#000000") for _ in range(5)),
    tile_border=tuple(hex_rgb("#FFFF00") for _ in range(5)),
    tile_text=hex_rgb("#FFFFFF"),
    feature=hex_rgb("#000000"),
    button=hex_rgb("#000000"),
    button_text=hex_rgb("#FFFF00"),
    button_active=hex_rgb("#FFFF00"),
    button_active_text=hex_rgb("#000000"),
    skip=hex_rgb("#FFFFFF"),
    skip_text=hex_rgb("#000000"),
    thanks=hex_rgb("#000000"),
    thanks_text=hex_rgb("#FFFF00"),
    error=hex_rgb("#000000"),
    error_text=hex_rgb("#FFFFFF"),
    sleep=hex_rgb("#000000"),
    sleep_text=hex_rgb("#FFFFFF"),
    countdown=hex_rgb("#FFFF00"),
    border_width=5.0,
    focus=hex_rgb("#00FFFF"),
)


def theme(high_contrast: bool = False, large_text: bool = False) -> Theme:
    base = HIGH_CONTRAST if high_contrast else STANDARD
    return replace(base, zoom=LARGE_ZOOM) if large_text else base


@dataclass(frozen=True)
class Layout:
    """A page's geometry in pixels, origin bottom-left (Kivy's).

    *width* x *height* is the page; *font_px* the smallest citizen font (MIN_CHAR_MM on the
    display, times the zoom). Large mode (``Layout.for_window``) makes faces, tiles, margins,
    gaps and text *zoom* times their size: the page keeps the window's width, its rows reflow
    (fewer tiles to a row) and it scrolls up and down.
    """

    width: int
    height: int
    font_px: float = 0.0
    zoom: float = 1.0
    margin: float = field(init=False)
    gap: float = field(init=False)
    tile_width: float = field(init=False)
    tile_height: float = field(init=False)
    tiles_y: float = field(init=False)
    #: Tiles to a row: five, fewer in large mode.
    tile_cols: int = field(init=False)
    bar_height: float = field(init=False)
    question_height: float = field(init=False)
    hint_height: float = field(init=False)

    @classmethod
    def for_window(cls, width: int, height: int, screen: tuple[int, int], zoom: float = 1.0) -> "Layout":
        """The page for a *width* x *height* part of a *screen*-sized display, at *zoom*."""
        return cls(width, round(height * zoom), min_font_px(*screen) * zoom, zoom)

    def __post_init__(self) -> None:
        w, h = self.width, self.height
        set_ = object.__setattr__
        if not self.font_px:
            set_(self, "font_px", float(min_font_px(w, h)))
        unit = self.font_px
        zoom = self.zoom
        # Narrow margins: on a 7" display every pixel of a tile is room for its label.
        margin, gap = round(w * 0.01), round(w * 0.008)
        set_(self, "margin", margin * zoom)
        set_(self, "gap", gap * zoom)
        # Rows sized from the font: one line of text each (the question: one line of its size).
        set_(self, "bar_height", round(unit * 1.8))
        set_(self, "question_height", round(unit * 1.7))
        set_(self, "hint_height", round(unit * 1.5))
        set_(self, "tile_width", (w - 2 * margin - 4 * gap) / 5 * zoom)
        fit = int((w - 2 * self.margin + self.gap + 0.5) // (self.tile_width + self.gap))
        set_(self, "tile_cols", max(1, min(5, fit)))
        set_(self, "tile_height", h - self.bar_height - self.question_height - self.hint_height - 2 * self.margin)
        set_(self, "tiles_y", self.hint_height + self.margin)

    def unzoomed(self) -> "Layout":
        """The same page in the default mode (what large mode doubles)."""
        return Layout(self.width, round(self.height / self.zoom), self.font_px / self.zoom)

    def tile_x(self, index: int) -> float:
        return self.margin + index * (self.tile_width + self.gap)

    def font(self, role: str) -> float:
        """Font size in pixels for a citizen role: never under ``font_px`` (MIN_CHAR_MM on the display)."""
        return round(self.font_px * {"question": 1.1, "tile": 1.0, "button": 1.0, "hint": 1.0,
                                     "title": 1.2, "body": 1.0, "huge": 1.5}[role])

    def staff_font(self, role: str) -> float:
        """Font size for the staff screens (PIN pad, maintenance), from the window height."""
        return round(self.height * {"body": 0.056, "small": 0.036}[role])


def tile_width_mm(width: int, height: int) -> float:
    return Layout(width, height).tile_width * DISPLAY_WIDTH_MM[(width, height)] / width
