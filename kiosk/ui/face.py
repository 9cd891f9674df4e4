"""The face tile: one touch target with a face drawn from vector shapes and its label inside."""

from __future__ import annotations

import functools

from kivy.core.text import Label as CoreLabel
from kivy.graphics import Color, Ellipse, Line, RoundedRectangle
from kivy.properties import NumericProperty, StringProperty
from kivy.uix.behaviors import ButtonBehavior
from kivy.uix.label import Label
from kivy.uix.widget import Widget

from kiosk.ui.theme import Theme

# Mouth curvature per score: frown (-) to smile (+).
_CURVE = {1: -1.0, 2: -0.55, 3: 0.0, 4: 0.55, 5: 1.0}


def breaks_at_spaces(word: str) -> bool:
    """A word of a script written with spaces (Latin, Vietnamese, Hangul): never to be broken."""
    return not any("\u3040" <= ch <= "\u30ff" or "\u4e00" <= ch <= "\u9fff" for ch in word)


def fit_label(label, font_size: float, floor: float | None = None) -> None:
    """Set *font_size* on a wrapping label, shrunk (down to *floor* pixels, else 60 %) until the
    wrapped text fits its box and no word is wider than a line (Kivy would break it mid-word,
    "dissatisfie/d"). A citizen text's floor is the display's minimum character size.

    Measured with an unbounded height: with both sides of text_size set, Kivy's
    texture is always the box's size, whatever the text needs.
    """
    width, height = label.size
    key = (label.text, label.font_name, label.bold, font_size, floor, width, height)
    if getattr(label, "_onetap_fitted", None) == key:
        return  # unchanged since the last fitting: no texture churn on every redraw
    inner = width - label.padding[0] - label.padding[2]  # left and right (padding_x is deprecated)
    # Whole pixels only: every distinct size is one more font object Kivy keeps open.
    size = round(font_size)
    for _ in range(14):
        label.font_size = size
        label.text_size = (width, None)
        label.texture_update()
        fits = label.texture_size[1] <= height and all(
            label._label.get_extents(word)[0] <= inner
            for word in label.text.split() if breaks_at_spaces(word))
        if fits or size <= (font_size * 0.6 if floor is None else floor):
            break
        size = max(min(size - 1, round(size * 0.96)), round(floor or 0))
    label.text_size = (width, height)
    label._onetap_fitted = key


@functools.lru_cache(maxsize=64)
def line_height(font_name: str, font_size: float) -> float:
    """One line's height of *font_name* at *font_size* (Noto's lines are taller than Nanum's)."""
    measure = CoreLabel(text="한", font_name=font_name, font_size=font_size, bold=True)
    measure.refresh()
    return measure.content_height


def draw_face(canvas, cx: float, cy: float, radius: float, score: int, fill, feature) -> None:
    """A face for *score* (1 very dissatisfied .. 5 very satisfied) on *canvas*, centred at (cx, cy)."""
    with canvas:
        Color(*fill, 1)
        Ellipse(pos=(cx - radius, cy - radius), size=(2 * radius, 2 * radius))
        Color(*feature, 1)
        stroke = max(1.5, radius * 0.075)
        eye_r = radius * 0.11
        eye_dx, eye_y = radius * 0.36, cy + radius * 0.22
        for side in (-1, 1):
            ex = cx + side * eye_dx
            Ellipse(pos=(ex - eye_r, eye_y - eye_r * 1.25), size=(2 * eye_r, 2.5 * eye_r))
            if score <= 2:
                # Brows raised in the middle: a sad face, not only a red one.
                lift = radius * (0.12 if score == 1 else 0.06)
                Line(points=[ex - side * radius * 0.2, eye_y + radius * 0.26 + lift,
                             ex + side * radius * 0.2, eye_y + radius * 0.24],
                     width=stroke * 0.8, cap="round")
        curve = _CURVE[score]
        half = radius * (0.42 if score in (1, 5) else 0.36)
        amplitude = radius * 0.3
        base = cy - radius * 0.38
        points = []
        for step in range(17):
            t = -1 + step / 8
            points += [cx + t * half, base + curve * amplitude * (t * t - 0.5)]
        Line(points=points, width=stroke, cap="round", joint="round")


class FaceTile(ButtonBehavior, Widget):
    """A whole tile is the button: background, border, face and label."""

    score = NumericProperty(3)
    text = StringProperty("")
    font_name = StringProperty("Roboto")
    font_size = NumericProperty(20)
    #: The smallest font the label may shrink to (the display's minimum character size).
    floor = NumericProperty(0)

    def __init__(self, score: int, theme: Theme, **kw):
        self._theme = theme
        super().__init__(**kw)
        self.score = score
        self.label = Label(halign="center", valign="middle", bold=True)
        self.add_widget(self.label)
        self._background: Color | None = None
        # A press only shades the tile: redrawing it all took a third of a millisecond on the way
        # from the touch to the rating's commit, twice per tap (down, then up).
        self.bind(state=self._shade)
        self.bind(pos=self.redraw, size=self.redraw, text=self.redraw,
                  font_name=self.redraw, font_size=self.redraw, floor=self.redraw)

    def set_theme(self, theme: Theme) -> None:
        self._theme = theme
        self.redraw()

    def _shaded(self) -> tuple[float, float, float]:
        bg = self._theme.tile[self.score - 1]
        return tuple(c * 0.85 for c in bg) if self.state == "down" else tuple(bg)

    def _shade(self, *_args) -> None:
        if self._background is None:
            self.redraw()
        else:
            self._background.rgba = (*self._shaded(), 1)

    def redraw(self, *_args) -> None:
        theme, index = self._theme, self.score - 1
        x, y, w, h = self.x, self.y, self.width, self.height
        radius = min(w * 0.16, 18)
        self.canvas.before.clear()
        with self.canvas.before:
            self._background = Color(*self._shaded(), 1)
            RoundedRectangle(pos=(x, y), size=(w, h), radius=[radius])
            Color(*theme.tile_border[index], 1)
            Line(rounded_rectangle=(x, y, w, h, radius), width=theme.border_width)
        # Two lines of label at the tile's font; the face takes the height left (and stays round).
        border = theme.border_width / 2 + 1
        label_h = 2 * line_height(self.font_name, self.font_size) + 4
        face_r = max(8.0, min(w * 0.4, (h - label_h - h * 0.1) / 2))
        draw_face(self.canvas.before, x + w / 2, y + h - h * 0.05 - face_r, face_r, self.score,
                  theme.face[index], theme.feature)
        self.label.pos = (x + border, y + h * 0.03)
        self.label.size = (w - 2 * border, max(label_h, h - h * 0.08 - 2 * face_r - h * 0.03))
        self.label.text_size = self.label.size
        self.label.text = self.text
        self.label.font_name = self.font_name
        fit_label(self.label, self.font_size, self.floor or None)
        self.label.color = (*theme.tile_text, 1)
