"""The kiosk's screens (Kivy widgets): rating, follow-up, thank-you, error, sleep, PIN pad, staff screen.

Screens only draw and forward touches to the shell; every decision is the
flow's (kiosk/flow.py). ``refresh()`` redraws a screen from the shell's state.
"""

from __future__ import annotations

import functools

from kivy.core.text import Label as CoreLabel
from kivy.graphics import Color, Line, Rectangle, RoundedRectangle
from kivy.uix.behaviors import ButtonBehavior
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.floatlayout import FloatLayout
from kivy.uix.gridlayout import GridLayout
from kivy.uix.label import Label
from kivy.uix.scrollview import ScrollView
from kivy.uix.widget import Widget

from kiosk import protocol
from kiosk.ui.face import FaceTile, draw_face, fit_label, line_height


def _rgba(rgb, alpha=1.0):
    return (*rgb, alpha)


class Text(Label):
    """A wrapping, centred label."""

    def __init__(self, **kw):
        kw.setdefault("halign", "center")
        kw.setdefault("valign", "middle")
        super().__init__(**kw)
        self.bind(size=self._wrap)

    def _wrap(self, *_):
        self.text_size = self.size

    def fit(self, font_size: float, floor: float | None = None) -> None:
        """Set *font_size*, shrunk (down to *floor* pixels, else 60 %) until the wrapped text fits the label's box."""
        fit_label(self, font_size, floor)


#: Lines of buttons and titles closer than the fonts' own (Noto's lines are 1.45 em): still clear of
#: the tallest Vietnamese letter, and a 7" display holds one more row of answers.
TIGHT = 0.85


# Measures are cached: a follow-up's layout weighs many arrangements of the same labels on every redraw.
@functools.lru_cache(maxsize=4096)
def text_height(text: str, font_name: str, font_size: float, width: float, bold: bool = False,
                line_height: float = 1.0) -> float:
    """The height *text* needs wrapped at *width* (Kivy's own measure)."""
    measure = CoreLabel(text=text, font_name=font_name, font_size=font_size, bold=bold, text_size=(width, None),
                        line_height=line_height)
    measure.refresh()
    return measure.size[1]


@functools.lru_cache(maxsize=4096)
def text_width(text: str, font_name: str, font_size: float, bold: bool = False) -> float:
    """The width of *text* on one line."""
    return CoreLabel(font_name=font_name, font_size=font_size, bold=bold).get_extents(text)[0]



class TextButton(ButtonBehavior, Text):
    """A label that is a button, with a filled rounded background and a border."""

    def __init__(self, **kw):
        self._bg = (1, 1, 1)
        self._border = None
        super().__init__(**kw)
        self.bind(pos=self._draw, size=self._draw, state=self._draw)

    def style(self, bg, fg, border=None) -> None:
        self._bg, self._border = bg, border
        self.color = _rgba(fg)
        self._draw()

    def _draw(self, *_):
        bg = self._bg if self.state == "normal" else tuple(c * 0.8 for c in self._bg)
        radius = min(self.height * 0.2, 14)
        self.canvas.before.clear()
        with self.canvas.before:
            Color(*bg, 1)
            RoundedRectangle(pos=self.pos, size=self.size, radius=[radius])
            if self._border is not None:
                Color(*self._border, 1)
                Line(rounded_rectangle=(*self.pos, *self.size, radius), width=2)


class Page(FloatLayout):
    """A full-window screen with a plain background."""

    name = "page"

    def __init__(self, shell, **kw):
        super().__init__(**kw)
        self.shell = shell
        self._bg = (1, 1, 1)
        self.bind(pos=self._draw_bg, size=self._draw_bg)

    def set_background(self, rgb) -> None:
        self._bg = rgb
        self._draw_bg()

    def _draw_bg(self, *_):
        self.canvas.before.clear()
        with self.canvas.before:
            Color(*self._bg, 1)
            Rectangle(pos=self.pos, size=self.size)

    def refresh(self) -> None:
        raise NotImplementedError


def language_buttons(shell) -> dict[str, "TextButton"]:
    """One button per language, each name in its own script (in the bar or the chooser)."""
    buttons = {}
    for lang in shell.flow.settings.languages:
        button = TextButton(text=shell.catalogs[lang]["lang.name"], font_name=shell.font_for_lang(lang),
                            line_height=0.85)
        button.bind(on_release=lambda _b, lang=lang: shell.set_language(lang))
        buttons[lang] = button
    return buttons


def style_language(shell, lang: str, button) -> None:
    theme = shell.theme
    if lang == shell.flow.lang:
        button.style(theme.button_active, theme.button_active_text)
    else:
        button.style(theme.button, theme.button_text, border=theme.button_text)


class LanguageBar(BoxLayout):
    """One button per language, each name in its own script, the one in use filled; where the names
    do not all fit at the display's minimum character size (a 7" display), one **Language** button
    that opens the chooser instead."""

    def __init__(self, shell, **kw):
        super().__init__(orientation="horizontal", **kw)
        self.shell = shell
        self.buttons: dict[str, TextButton] = {}
        self.choose = TextButton(line_height=0.85, bold=True)
        self.choose.bind(on_release=lambda _b: shell.toggle_panel("languages"))
        self.compact = False

    def fits(self, width: float, size: float) -> bool:
        """Do all the names fit *width* at *size*?"""
        shell, layout = self.shell, self.shell.layout
        pad = size * 0.5
        names = [text_width(shell.catalogs[lang]["lang.name"], shell.font_for_lang(lang), size) + pad
                 for lang in shell.flow.settings.languages]
        return sum(names) + layout.gap * (len(names) - 1) <= width

    def refresh(self) -> None:
        shell = self.shell
        languages = shell.flow.settings.languages
        theme, layout = shell.theme, shell.layout
        size = layout.font("button")
        compact = not self.fits(self.width, size)
        if list(self.buttons) != list(languages) or compact != self.compact or not self.children:
            self.clear_widgets()
            self.buttons = language_buttons(shell)
            self.compact = compact
            if compact:
                self.add_widget(self.choose)
                self.add_widget(Widget())
            else:
                for button in self.buttons.values():
                    self.add_widget(button)
        self.spacing = layout.gap
        if compact:
            self.choose.text = shell.catalog["lang.choose"]
            self.choose.font_name = shell.font_for_lang()
            self.choose.size_hint_x = None
            self.choose.width = min(self.width, text_width(self.choose.text, self.choose.font_name, size, True)
                                    + size)
            self.choose.fit(size, layout.font_px)
            active = shell.panel_open == "languages"
            self.choose.style(theme.button_active if active else theme.button,
                              theme.button_active_text if active else theme.button_text,
                              border=theme.button_text)
            return
        pad = size * 0.5
        for lang, button in self.buttons.items():
            # Each as wide as its name needs ("Tiếng Việt" wider than "中文").
            button.size_hint_x = text_width(button.text, button.font_name, size) + pad
            button.fit(size, layout.font_px)
            style_language(shell, lang, button)


def draw_focus(root, target, theme) -> None:
    """The keypad's focus ring: a thick line just outside *target* (None: no ring), on top of all."""
    root.canvas.after.clear()
    if target is None or target.get_root_window() is None:
        return
    x, y = target.to_window(target.x, target.y)
    pad = 5
    with root.canvas.after:
        Color(*theme.focus, 1)
        Line(rounded_rectangle=(x - pad, y - pad, target.width + 2 * pad, target.height + 2 * pad, 12),
             width=4)


#: The accessibility control's width, as a fraction of the window's.
ACCESS_WIDTH = 0.2


class AccessButton(TextButton):
    """The always-visible accessibility control (top right of every citizen screen): opens the panel."""

    def __init__(self, shell, **kw):
        super().__init__(bold=True, size_hint=(None, None), line_height=0.85, **kw)
        self.shell = shell
        self.bind(on_release=lambda _b: self.shell.toggle_panel())

    def wanted_width(self, layout) -> float:
        size = layout.font("button")
        text = self.shell.catalog.shown("a11y.open")
        return max(layout.width * ACCESS_WIDTH, text_width(text, self.shell.font_for_lang(), size, True) + size * 0.3)

    def refresh(self) -> None:
        shell, theme, layout = self.shell, self.shell.theme, self.shell.layout
        self.text = shell.catalog.shown("a11y.open")
        self.font_name = shell.font_for_lang()
        size = layout.font("button")
        self.size = (self.wanted_width(layout), layout.bar_height * 0.85)
        # At the top of the targets' part; on a split low screen's message, under its texts.
        bottom = shell.split and getattr(shell._page, "control_below", False)
        top_pad = layout.margin * (0.5 if shell.split else 1)  # beside the language bar
        self.pos = (layout.width - layout.margin - self.width,
                    layout.margin if bottom else shell.reach - top_pad - self.height)
        self.fit(size, layout.font_px)
        if shell.panel_open == "access":
            self.style(theme.button_active, theme.button_active_text)
        else:
            self.style(theme.button, theme.button_text, border=theme.button_text)


class AccessPanel(FloatLayout):
    """큰 글씨 / 고대비 / 음성 안내 / 낮은 화면 (and 직원 호출): each a toggle for this visit only;
    or, opened from the **Language** button, one button per language."""

    MODES = ("large", "contrast", "voice", "low")

    def __init__(self, shell, **kw):
        super().__init__(size_hint=(None, None), **kw)
        self.shell = shell
        self.grid = GridLayout(cols=2, size_hint=(1, 1), pos_hint={"x": 0, "y": 0})
        self.toggles: dict[str, TextButton] = {}
        for mode in self.MODES:
            button = TextButton(bold=True)
            button.bind(on_release=lambda _b, m=mode: self.shell.set_mode(m, m not in self.shell.flow.modes))
            self.toggles[mode] = button
            self.grid.add_widget(button)
        self.help = TextButton(bold=True)
        self.help.bind(on_release=lambda _b: self.shell.call_help())
        self.close = TextButton(bold=True)
        self.close.bind(on_release=lambda _b: self.shell.toggle_panel(self.shell.panel_open))
        self.languages: dict[str, TextButton] = {}
        self.add_widget(self.grid)
        self.bind(pos=self._draw, size=self._draw)
        self._bg = (1, 1, 1)

    def _draw(self, *_):
        self.canvas.before.clear()
        with self.canvas.before:
            Color(*self._bg, 1)
            Rectangle(pos=self.pos, size=self.size)

    def refresh(self) -> None:
        shell, theme, layout = self.shell, self.shell.theme, self.shell.layout
        catalog, modes = shell.catalog, shell.flow.modes
        access = shell.access
        if access.y < shell.reach / 2:  # the control at the bottom: the panel above it
            top, bottom = shell.reach - layout.margin, access.top + layout.gap
        else:
            top = shell.reach - layout.margin - layout.bar_height * 0.85 - layout.gap
            bottom = max(layout.margin, top - layout.height + 2 * layout.margin)
        self.pos = (layout.margin, bottom)
        self.size = (layout.width - 2 * layout.margin, top - bottom)
        self._bg = theme.background
        self._draw()
        size = layout.font("body")
        if shell.panel_open == "languages":
            if list(self.languages) != list(shell.flow.settings.languages):
                self.languages = language_buttons(shell)
            wanted = [*self.languages.values(), self.close]
        else:
            extra = [self.help] if shell.cfg.ui.help_button else []
            wanted = [*self.toggles.values(), *extra, self.close]
        if list(reversed(self.grid.children)) != wanted:
            self.grid.clear_widgets()
            for widget in wanted:
                self.grid.add_widget(widget)
        self.grid.spacing = layout.gap
        self.grid.do_layout()
        self.close.text = catalog["a11y.close"]
        self.close.font_name = shell.font_for_lang()
        self.close.fit(size, layout.font_px)
        self.close.style(theme.skip, theme.skip_text)
        if shell.panel_open == "languages":
            for lang, button in self.languages.items():
                button.fit(size, layout.font_px)
                style_language(shell, lang, button)
            return
        for mode, button in self.toggles.items():
            on = mode in modes
            button.text = ("\u2022 " if on else "") + catalog[f"mode.{mode}"]
            button.font_name = shell.font_for_lang()
            button.fit(size, layout.font_px)
            if on:
                button.style(theme.button_active, theme.button_active_text)
            else:
                button.style(theme.button, theme.button_text, border=theme.button_text)
        called = shell.flow.help_requested(shell.monotonic())
        self.help.text = catalog["help.called" if called else "help.call"]
        self.help.font_name = shell.font_for_lang()
        self.help.fit(size, layout.font_px)
        self.help.style(theme.button_active if called else theme.button,
                        theme.button_active_text if called else theme.button_text, border=theme.button_text)


class LanguagePage(Page):
    """A page laid out as one column that starts with the language bar."""

    def __init__(self, shell, **kw):
        super().__init__(shell, **kw)
        self.column = BoxLayout(orientation="vertical")
        self.languages = LanguageBar(shell, size_hint_y=None)

    def fill(self, *children, upper=()) -> None:
        """The column's *children* under the language bar; *upper* are the texts a split low
        screen moves above the reach range (in the column's order, from the top)."""
        self._children = (self.languages, *children)
        self._upper = upper
        self._arranged: bool | None = None
        self.add_widget(self.column)
        self.arrange(False)

    def arrange(self, split: bool) -> None:
        """The *upper* texts in the column, or (split) on the page above it."""
        if split == self._arranged:
            return
        self._arranged = split
        self.column.clear_widgets()
        for child in self._upper:
            if child.parent is not None:
                child.parent.remove_widget(child)
        for child in self._children:
            if not (split and child in self._upper):
                self.column.add_widget(child)
        if split:
            for child in self._upper:
                child.size_hint_x = None
                self.add_widget(child)
        else:
            for child in self._upper:
                child.size_hint_x = 1

    def place_upper(self, layout, heights) -> None:
        """A split low screen: the *upper* texts (of these heights) stacked just above the reach range."""
        spacing = layout.margin * 0.6
        y = self.shell.reach + layout.margin
        for child, height in reversed(list(zip(self._upper, heights))):
            child.size = (layout.width - 2 * layout.margin, height)
            child.pos = (layout.margin, y)
            if height:
                y += height + spacing

    def bar(self, layout) -> tuple[float, float, bool]:
        """(height, width, under): the language bar beside the accessibility control, or where not
        even the Language button fits there (large mode), on a row of its own under it."""
        shell = self.shell
        size = layout.font("button")
        inner = layout.width - 2 * layout.margin
        row = layout.bar_height * 0.85
        beside = inner - layout.gap - shell.access.wanted_width(layout)
        choose = text_width(shell.catalog["lang.choose"], shell.font_for_lang(), size, True) + size
        if choose <= beside or self.languages.fits(beside, size):
            return row, beside, False
        return 2 * row + layout.gap, inner, True

    def refresh_frame(self) -> None:
        shell = self.shell
        theme, layout = shell.theme, shell.layout
        self.set_background(theme.background)
        self.arrange(shell.split)
        # Split: the column is the targets' lower part; else the whole page.
        self.column.size_hint_y = None if shell.split else 1
        self.column.height = shell.reach
        self.column.pos = (0, 0)
        # Split: half a margin above the bar, the reach range's every pixel for the targets.
        self.column.padding = [layout.margin, layout.margin * (0.5 if shell.split else 1), layout.margin,
                               layout.margin]
        self.column.spacing = layout.margin * 0.6
        height, width, under = self.bar(layout)
        self.languages.height = height
        self.languages.padding = [0, height - layout.bar_height * 0.85 if under else 0, 0, 0]
        # Room at the right for the accessibility control (or above, under it).
        self.languages.size_hint_x = None
        self.languages.width = width
        self.shell.access.refresh()
        self.languages.refresh()


class RatingPage(LanguagePage):
    name = "rating"

    def __init__(self, shell, **kw):
        super().__init__(shell, **kw)
        self.question = Text(bold=True, size_hint_y=None)
        # One row of five; in large mode as many 200 % tiles to a row as fit, the rows scrolled.
        self.tiles_grid = GridLayout(cols=5)
        self.tiles = []
        for score in protocol.SCORES:
            tile = FaceTile(score, shell.theme)
            tile.bind(on_release=lambda t: self.shell.press(int(t.score), "touch"))
            self.tiles.append(tile)
            self.tiles_grid.add_widget(tile)
        self.hint = Text(size_hint_y=None)
        self.fill(self.question, self.tiles_grid, self.hint, upper=(self.question, self.hint))

    def _question_height(self, layout) -> float:
        """The question's row: one line of it, or what a longer (site's own) question needs."""
        text = self.shell.question_text()
        needed = text_height(text, self.shell.font_for_text(text), layout.font("question"),
                             layout.width - 2 * layout.margin, True)
        return max(layout.question_height, needed)

    def _hint_height(self, layout) -> float:
        """The hint's row: one line, or two of large mode's."""
        text = self.shell.catalog["hint"]
        needed = text_height(text, self.shell.font_for_lang(), layout.font("hint"), layout.width - 2 * layout.margin)
        return max(layout.hint_height, needed)

    def _least_tile(self, layout, face: float) -> float:
        """A tile's least height: two lines of label and a face *face* times the font size across."""
        return (2 * line_height(self.shell.font_for_lang(), layout.font("tile")) + 4 + face * layout.font_px) / 0.9

    def _split_heights(self, layout) -> tuple[float, float, float] | None:
        """A split low screen: (hint height, tile height, lower part's height), the question and
        hint above the reach range, the bar and the tiles in it; None where they do not fit.

        The faces may be smaller than the default mode's (0.6 of the font size across, not 1.3):
        the tile, the target, keeps its size and its label.
        """
        question, hint = self._question_height(layout), self._hint_height(layout)
        room = self.shell.upper - 2 * layout.margin
        if question + layout.margin * 0.6 + hint > room:
            hint = 0.0  # the line left out, as on a small display
        tile = layout.height - 1.5 * layout.margin - layout.margin * 0.6 - self.bar(layout)[0]
        if question > room or tile < self._least_tile(layout, 0.6):
            return None
        return hint, tile, layout.height

    def splits(self, layout) -> bool:
        return self._split_heights(layout) is not None

    def _heights(self, layout) -> tuple[float, float, float]:
        """(hint height, tile height, page height): tiles tall enough for a face and two lines of
        label; in large mode the zoom times the default mode's tiles, in rows.

        The hint ("touch a face") is the line a small display leaves out rather than scroll.
        """
        if self.shell.split and layout.zoom == 1:
            return self._split_heights(layout)
        hint = self._hint_height(layout)
        fixed = (2 * layout.margin + 3 * layout.margin * 0.6 + self.bar(layout)[0]
                 + self._question_height(layout) + hint)
        if layout.zoom > 1:
            _, tile, _ = self._heights(layout.unzoomed())
            tile *= layout.zoom
            rows = -(-len(self.tiles) // layout.tile_cols)
            return hint, tile, fixed + rows * tile + (rows - 1) * layout.gap
        least = self._least_tile(layout, 1.3)
        if fixed + least > layout.height >= fixed + least - hint:
            fixed, hint = fixed - hint, 0.0
        return hint, max(least, layout.height - fixed), fixed + least

    def wanted_height(self, layout) -> float:
        return self._heights(layout)[2]

    def refresh(self) -> None:
        shell, theme, layout = self.shell, self.shell.theme, self.shell.layout
        catalog, floor = shell.catalog, layout.font_px
        self.refresh_frame()
        self.question.height = self._question_height(layout)
        hint_h, tile_h, _ = self._heights(layout)
        self.hint.height = hint_h
        if shell.split:
            self.place_upper(layout, (self.question.height, hint_h))
        self.question.text = shell.question_text()
        self.question.font_name = shell.font_for_text(self.question.text)
        self.question.fit(layout.font("question"), floor)
        self.question.color = _rgba(theme.text)
        grid = self.tiles_grid
        grid.spacing = layout.gap
        zoomed = layout.zoom > 1
        grid.cols = layout.tile_cols
        grid.col_force_default = grid.row_force_default = zoomed
        grid.col_default_width, grid.row_default_height = layout.tile_width, tile_h
        rows = -(-len(self.tiles) // grid.cols)
        grid.size_hint_y = None if zoomed else 1
        grid.height = rows * tile_h + (rows - 1) * layout.gap
        # Large mode's rows centred (two tiles to a row leave room at the sides of a 7" display).
        side = (layout.width - 2 * layout.margin - grid.cols * layout.tile_width - (grid.cols - 1) * layout.gap) / 2
        grid.padding = [max(0.0, side) if zoomed else 0, 0]
        for tile in self.tiles:
            tile.text = catalog.shown(f"score.{tile.score}")
            tile.font_name = shell.font_for_lang()
            tile.floor = floor
            tile.font_size = layout.font("tile")
            tile.set_theme(theme)
        self.hint.height = hint_h
        self.hint.text = catalog["hint"] if self.hint.height else ""
        self.hint.font_name = shell.font_for_lang()
        if self.hint.height:
            self.hint.fit(layout.font("hint"), floor)
        self.hint.color = _rgba(theme.muted_text)

    def focus_target(self, focus: int):
        return self.tiles[focus] if 0 <= focus < len(self.tiles) else None


class CountdownBar(Widget):
    """How long until the question closes by itself."""

    def show(self, fraction: float, colour) -> None:
        self.canvas.clear()
        with self.canvas:
            Color(*colour, 0.35)
            Rectangle(pos=self.pos, size=self.size)
            Color(*colour, 1)
            Rectangle(pos=self.pos, size=(self.width * max(0.0, min(1.0, fraction)), self.height))


class FollowupPage(LanguagePage):
    """One follow-up question (kiosk.flow.Question): its answers, a skip and a countdown.

    The answers sit beside the face just tapped, on either side of its column, never over
    it: the second tap of a double tap lands on empty space. The skip is on the wider side.
    """

    def __init__(self, shell, field: str, **kw):
        super().__init__(shell, **kw)
        self.field = field
        self.name = field
        self.title = Text(bold=True, size_hint_y=None, line_height=TIGHT)
        self.note = Text(size_hint_y=None)
        self.body = BoxLayout(orientation="horizontal", size_hint_y=None)
        #: The answers' own window: where not all fit, they scroll in it, while the question,
        #: the skip and the countdown stay in view.
        self.answers = ScrollView(do_scroll_x=False, do_scroll_y=False, scroll_type=["bars", "content"],
                                  size_hint_y=None)
        self.answers.add_widget(self.body)
        #: Answers left and right of the tapped face's column (the first ones on the left).
        self.grids = (GridLayout(size_hint_x=None), GridLayout(size_hint_x=None))
        self.keep_out = Widget(size_hint_x=None)
        for child in (self.grids[0], self.keep_out, self.grids[1]):
            self.body.add_widget(child)
        self.bottom = BoxLayout(orientation="horizontal", size_hint_y=None)
        self.countdown = CountdownBar(size_hint_y=None)
        self.skip = TextButton(bold=True, size_hint_x=None, line_height=TIGHT)
        self.skip.bind(on_release=lambda _b: self.shell.skip())
        self.timer = BoxLayout(orientation="vertical")
        self.timer.add_widget(Widget())
        self.timer.add_widget(self.countdown)
        self.timer.add_widget(Widget())
        self.fill(self.title, self.note, self.answers, self.bottom, upper=(self.title, self.note))
        self.options: dict[str, TextButton] = {}
        self._side: str | None = None
        self._split: int | None = None
        self._shown = -1

    def _place(self, layout, score: int | None) -> None:
        """The empty column over the tapped face (and a gap each side); the skip on the wider side."""
        if score is None:
            low = high = layout.margin
        else:
            low = layout.tile_x(score - 1)
            high = low + layout.tile_width
        inner = layout.width - 2 * layout.margin
        left = max(0.0, low - layout.gap - layout.margin)
        right = max(0.0, layout.width - layout.margin - high - layout.gap)
        self.grids[0].width, self.grids[1].width = left, right
        self.keep_out.width = inner - left - right
        side = "right" if right >= left else "left"
        if side != self._side:
            self._side = side
            self.bottom.clear_widgets()
            first, second = (self.timer, self.skip) if side == "right" else (self.skip, self.timer)
            self.bottom.add_widget(first)
            self.bottom.add_widget(second)

    def _texts(self):
        """(title, note, answer labels) of the question on screen, or None when it is another's."""
        shell = self.shell
        question = shell.flow.question
        if question is None or question.field != self.field:
            return None
        key, catalog = question.catalog_key, shell.catalog
        labels = [catalog.label(key, code, question.labels) for code in question.codes]
        return catalog[f"{key}.title"], catalog["followup.note"], labels

    def _grid_shape(self, layout, labels, room: float):
        """(height, columns, row height) of *labels* in *room* pixels: the fewest pixels tall with no
        word broken; None when a word does not fit even one column."""
        if not labels:
            return 0.0, 1, 0.0
        shell = self.shell
        size = layout.font("body")
        fonts = [shell.font_for_text(label) for label in labels]
        best = None
        for cols in range(min(4, len(labels)), 0, -1):
            width = (room - (cols - 1) * layout.gap) / cols - size * 0.2
            if width <= 0 or any(text_width(word, font, size) > width
                                 for label, font in zip(labels, fonts) for word in label.split()):
                continue
            row = max(text_height(label, font, size, width, line_height=TIGHT)
                      for label, font in zip(labels, fonts)) + size * 0.15
            rows = -(-len(labels) // cols)
            height = rows * row + (rows - 1) * layout.gap
            if best is None or height < best[0]:
                best = (height, cols, row)
        return best

    def _arrange(self, layout, labels):
        """How many answers go left of the face's column, and each side's (height, columns, row height):
        the lowest block of answers, the wider side taking the larger share."""
        rooms = (self.grids[0].width, self.grids[1].width)
        best = None
        order = range(len(labels) + 1)
        for split in (order if rooms[0] > rooms[1] else reversed(order)):
            shapes = (self._grid_shape(layout, labels[:split], rooms[0]),
                      self._grid_shape(layout, labels[split:], rooms[1]))
            if None in shapes:
                continue
            height = max(shape[0] for shape in shapes)
            if best is None or height < best[0] - 0.5:
                best = (height, split, shapes)
        if best is None:  # a word wider than either side: one column on the wider side, the fit shrinks it
            size = layout.font("body")
            shape = (len(labels) * size * 1.8, 1, size * 1.8)
            return (len(labels), (shape, (0.0, 1, 0.0))) if rooms[0] > rooms[1] else (0, ((0.0, 1, 0.0), shape))
        return best[1], best[2]

    def _heights(self, layout, split: bool | None = None):
        """Heights of the title and the note, the answers' arrangement, the page's whole height and
        the answers' window (less than theirs where they scroll in it).

        *split* (a low screen): the title and note above the reach range, the rest in it.
        """
        split = self.shell.split if split is None else split
        texts = self._texts()
        shell = self.shell
        width = layout.width - 2 * layout.margin
        title, note, labels = texts
        title_h = text_height(title, shell.font_for_lang(), layout.font("question"), width, True, TIGHT)
        note_h = text_height(note, shell.font_for_lang(), layout.font("hint"), width)
        # Large mode's faces are in rows of their own: no column to keep clear (the guard still holds).
        self._place(layout, shell.flow.score if layout.zoom == 1 else None)
        split_at, shapes = self._arrange(layout, labels)
        grid_h = max(shape[0] for shape in shapes)
        bottom_h = layout.bar_height * 0.85
        spacing = layout.margin * 0.6
        if split:
            room = shell.upper - 2 * layout.margin
            if title_h + spacing + note_h > room:
                note_h = 0.0
            total = 1.5 * layout.margin + 2 * spacing + self.bar(layout)[0] + grid_h + bottom_h
        else:
            total = 2 * layout.margin + 4 * spacing + self.bar(layout)[0] + title_h + note_h + grid_h + bottom_h
            if total > layout.height and layout.zoom == 1:
                # The note ("optional, already saved") is the line a small display leaves out to
                # show more answers; the skip and countdown say it too.
                total, note_h = total - note_h, 0.0
        rows = max(-(-len(labels[:split_at]) // shapes[0][1]), -(-len(labels[split_at:]) // shapes[1][1]), 1)
        spare = layout.height - total - (rows - 1) * layout.gap
        view_h = None  # all the answers in view: their window takes the column's room
        if spare > 0:
            # Room to spare (a 10.1" display): taller answers, easier to hit, up to 2.4 lines of text.
            grow = [min(spare / rows, max(0.0, layout.font("body") * 2.4 - row)) for _, _, row in shapes]
            shapes = tuple((height, cols, row + extra) for (height, cols, row), extra in zip(shapes, grow))
        elif layout.zoom == 1 and total > layout.height:
            # Not all the answers fit: they scroll in a window of their own (at least one row and a
            # half), the question above and the skip and countdown below staying in view.
            least = min(grid_h, 1.5 * min(row for _, _, row in shapes if row) + layout.gap)
            view_h = max(least, grid_h - (total - layout.height))
            total -= grid_h - view_h
        return title_h, note_h, (split_at, shapes), total, grid_h, view_h

    def splits(self, layout) -> bool:
        """A low screen's split: the title above the reach range, the bar, the answers' window
        (one row and a half at least) and the skip in it."""
        if self._texts() is None:
            return False
        title_h, _, _, total, _, _ = self._heights(layout, split=True)
        return title_h <= self.shell.upper - 2 * layout.margin and total <= layout.height + 0.5

    def wanted_height(self, layout) -> float:
        if self._texts() is None:
            return layout.height
        return self._heights(layout)[3]

    def refresh(self) -> None:
        shell, theme, layout = self.shell, self.shell.theme, self.shell.layout
        catalog, floor = shell.catalog, layout.font_px
        question = shell.flow.question
        if self._texts() is None:
            return  # leaving this screen: the next render shows another page
        key = question.catalog_key
        self.refresh_frame()
        title_h, note_h, (split, shapes), _, grid_h, view_h = self._heights(layout)
        self.title.height = title_h
        self.note.height = note_h
        if shell.split:
            self.place_upper(layout, (title_h, note_h))
        # Where not all the answers fit, their own window scrolls (from the top on a new question).
        scrolls = view_h is not None
        self.answers.size_hint_y = None if scrolls else 1
        self.body.size_hint_y = None if scrolls else 1
        if scrolls:
            self.answers.height, self.body.height = view_h, grid_h
        if len(shell.shown) != self._shown:  # a new question (or visit): from the first answers
            self._shown = len(shell.shown)
            self.answers.scroll_y = 1
        self.answers.do_scroll_y = scrolls
        # A bar that says there is more, thick enough to see, in the empty column over the tapped
        # face (nothing there to touch), not over an answer.
        self.answers.bar_pos_y = "left"
        self.answers.bar_width = round(8 * layout.zoom)
        self.answers.bar_margin = self.grids[0].width + layout.gap
        self.answers.bar_color = _rgba(theme.countdown, 0.9)
        self.answers.bar_inactive_color = _rgba(theme.countdown, 0.6)
        self.title.text = catalog[f"{key}.title"]
        self.title.font_name = shell.font_for_lang()
        self.title.fit(layout.font("question"), floor)
        self.title.color = _rgba(theme.text)
        self.note.height = note_h
        self.note.text = catalog["followup.note"] if note_h else ""
        self.note.font_name = shell.font_for_lang()
        if note_h:
            self.note.fit(layout.font("hint"), floor)
        self.note.color = _rgba(theme.muted_text)
        codes = question.codes
        if list(self.options) != list(codes) or split != self._split:
            for grid in self.grids:
                grid.clear_widgets()
            if list(self.options) != list(codes):
                self.options = {}
                for code in codes:
                    button = TextButton(line_height=TIGHT)
                    button.bind(on_release=lambda _b, c=code: self.shell.answer(self.field, c))
                    self.options[code] = button
            for index, button in enumerate(self.options.values()):
                self.grids[0 if index < split else 1].add_widget(button)
            self._split = split
        for grid, (_, cols, row) in zip(self.grids, shapes):
            grid.cols = cols
            grid.spacing = layout.gap
            grid.row_force_default = True
            grid.row_default_height = row
        for code, button in self.options.items():
            button.text = catalog.label(key, code, question.labels)
            button.font_name = shell.font_for_text(button.text)
            button.fit(layout.font("body"), floor)
            button.style(theme.button, theme.button_text, border=theme.button_text)
        self.bottom.height = layout.bar_height * 0.85
        self.bottom.spacing = layout.gap * 2
        self.countdown.height = max(6, layout.height * 0.015)
        self.skip.text = catalog["skip"]
        self.skip.font_name = shell.font_for_lang()
        size = layout.font("body")
        self.skip.width = max(layout.width * 0.3, text_width(self.skip.text, self.skip.font_name, size, True) + size)
        self.skip.fit(size, floor)
        self.skip.style(theme.skip, theme.skip_text)
        # Lay out now, not at the next frame: a touch arriving before it must
        # already find the answers beside the face, not where the last visit had them.
        for box in (self.column, self.body, *self.grids, self.bottom):
            box.do_layout()
        self.answers.update_from_scroll()
        # Sized for the boxes as now laid out (the last visit may have had them elsewhere).
        self.title.fit(layout.font("question"), floor)
        if note_h:
            self.note.fit(layout.font("hint"), floor)
        for button in (*self.options.values(), self.skip):
            button.fit(layout.font("body"), floor)
        self.tick()

    def focus_target(self, focus: int):
        options = list(self.options.values())
        return options[focus] if 0 <= focus < len(options) else None

    def reveal(self, target) -> None:
        """The keypad's focus on an answer out of the answers' window: scroll it into view."""
        if self.answers.do_scroll_y and target in self.options.values():
            self.answers.scroll_to(target, padding=self.shell.layout.gap, animate=False)

    def tick(self) -> None:
        self.countdown.show(self.shell.time_left_fraction(), self.shell.theme.countdown)


def draw_check(canvas, cx: float, cy: float, radius: float, colour) -> None:
    """A ring with a check mark: "received", the same after every score (no face, no smile)."""
    with canvas:
        Color(*colour, 1)
        stroke = max(2.0, radius * 0.09)
        Line(circle=(cx, cy, radius - stroke), width=stroke)
        Line(points=[cx - radius * 0.42, cy + radius * 0.02, cx - radius * 0.12, cy - radius * 0.3,
                     cx + radius * 0.45, cy + radius * 0.32], width=stroke * 1.2, cap="round", joint="round")


class MessagePage(Page):
    """A full-screen message (thank-you, could-not-save, closed) with a drawn sign.

    The thank-you screen is the same whatever the score: a check mark, never a face.
    """

    def __init__(self, shell, name: str, **kw):
        super().__init__(shell, **kw)
        self.name = name
        self.face = Widget(size_hint=(None, None))
        self.title = Text(bold=True, size_hint=(None, None))
        self.body = Text(size_hint=(None, None))
        for child in (self.face, self.title, self.body):
            self.add_widget(child)

    def _content(self):
        """(background, text colour, title, body, title role) of this message now."""
        shell = self.shell
        theme, catalog = shell.theme, shell.catalog
        if self.name == "thanks":
            return theme.thanks, theme.thanks_text, catalog["thanks.title"], catalog["thanks.body"], "huge"
        if self.name == "error":
            return theme.error, theme.error_text, catalog["error.title"], catalog["error.body"], "huge"
        title = catalog["sleep.title"]
        lines = shell.hours_lines()
        body = f"{catalog['sleep.hours']}\n{catalog.hours(lines)}" if lines else ""
        if shell.flow.settings.count_when_closed:
            body = f"{body}\n\n{catalog['sleep.wake']}".strip()
        # Closed in every language: the sleep screen has no language bar to ask with.
        others = [shell.catalogs[lang]["sleep.title"] for lang in shell.flow.settings.languages
                  if lang != shell.flow.lang]
        body = "\n".join([body, *others]).strip()
        return theme.sleep, theme.sleep_text, title, body, "title"

    def _heights(self, layout):
        """(sign height, title height, body height, whole page height): the sign, then the texts."""
        _, _, title, body, role = self._content()
        width = layout.width * 0.92
        shell = self.shell
        title_h = text_height(title, shell.font_for_text(title), layout.font(role), width, True)
        body_h = text_height(body, shell.font_for_text(body), layout.font("body"), width) if body else 0.0
        # Below the accessibility control's row, a margin at the bottom.
        total = layout.bar_height + title_h + layout.margin * 2 + body_h + layout.margin * 2
        # The sign takes the room the texts leave (a low screen has less), never more than a third.
        sign = 0.0 if self.name == "sleep" else min(layout.height * 0.36, layout.height - total)
        if sign < layout.height * 0.15:
            sign = 0.0
        return sign, title_h, body_h, total + sign

    #: A split low screen: the accessibility control under the texts (in reach), not above them.
    control_below = True

    def splits(self, layout) -> bool:
        """A low screen: the texts over the whole window, the control (the one target besides the
        page itself) at the bottom, in reach."""
        full = self.shell.full_layout
        return self._heights(full)[-1] <= full.height

    def wanted_height(self, layout) -> float:
        if self.shell.split:
            return layout.height
        return self._heights(layout)[-1]

    def refresh(self) -> None:
        shell, theme = self.shell, self.shell.theme
        layout = shell.full_layout if shell.split else shell.layout
        bg, fg, title, body, role = self._content()
        sign, title_h, body_h, total = self._heights(layout)
        self.set_background(bg)
        width = layout.width * 0.92
        # The content centred in the room beside the control's row (below it, or split: above it).
        room = self.height - layout.bar_height
        top = room - max(0.0, (room - (total - layout.bar_height)) / 2)
        if shell.split:
            top += layout.bar_height
        cy = top - sign / 2
        top -= sign
        for label, text, font_role, height in ((self.title, title, role, title_h), (self.body, body, "body", body_h)):
            label.text = text
            label.font_name = shell.font_for_text(text)
            label.color = _rgba(fg)
            label.size = (width, max(height, 1))
            label.pos = (layout.width * 0.04, top - height)
            label.fit(layout.font(font_role), layout.font_px)
            top -= height + layout.margin * 2
        self.face.canvas.clear()
        radius = sign * 0.42
        cx = layout.width / 2
        if self.name == "thanks":
            draw_check(self.face.canvas, cx, cy, radius, fg)
        elif self.name == "error":
            draw_face(self.face.canvas, cx, cy, radius, 2, theme.face[1], theme.feature)

    def on_touch_down(self, touch):
        if self.collide_point(*touch.pos):
            if self.name == "sleep":
                self.shell.wake()
            else:
                self.shell.stray_tap()
            return True
        return super().on_touch_down(touch)


class PinPage(Page):
    """The staff PIN pad (opened by a 5 s press in the bottom-left corner)."""

    name = "pin"

    def __init__(self, shell, **kw):
        super().__init__(shell, **kw)
        self.column = BoxLayout(orientation="vertical", size_hint=(0.6, 0.94),
                                pos_hint={"center_x": 0.5, "center_y": 0.5})
        self.title = Text(bold=True, size_hint_y=0.12)
        self.entry = Text(size_hint_y=0.1)
        self.pad = GridLayout(cols=3, size_hint_y=0.66)
        self.keys: dict[str, TextButton] = {}
        for key in ("1", "2", "3", "4", "5", "6", "7", "8", "9", "clear", "0", "ok"):
            button = TextButton(bold=True)
            button.bind(on_release=lambda _b, k=key: self._key(k))
            self.keys[key] = button
            self.pad.add_widget(button)
        self.cancel = TextButton(size_hint_y=0.12)
        self.cancel.bind(on_release=lambda _b: self.shell.close_maintenance())
        for child in (self.title, self.entry, self.pad, self.cancel):
            self.column.add_widget(child)
        self.add_widget(self.column)

    def _key(self, key: str) -> None:
        if key == "ok":
            self.shell.pin_submit()
        elif key == "clear":
            self.shell.pin_clear()
        else:
            self.shell.pin_digit(key)

    def refresh(self) -> None:
        shell, theme, layout = self.shell, self.shell.theme, self.shell.layout
        catalog, flow = shell.catalog, shell.flow
        self.set_background(theme.background)
        self.column.spacing = layout.gap
        self.pad.spacing = layout.gap
        self.title.text = catalog["pin.wrong"] if flow.pin_error else catalog["pin.title"]
        self.entry.text = "● " * len(flow.pin_entry) or "–"
        for label in (self.title, self.entry):
            label.font_name = shell.font_for_lang()
            label.font_size = layout.staff_font("body")
            label.color = _rgba(theme.text)
        for key, button in self.keys.items():
            button.text = {"ok": catalog["pin.ok"], "clear": catalog["pin.clear"]}.get(key, key)
            button.font_name = shell.font_for_lang()
            button.font_size = layout.staff_font("body")
            button.style(theme.button, theme.button_text, border=theme.button_text)
        self.cancel.text = catalog["pin.cancel"]
        self.cancel.font_name = shell.font_for_lang()
        self.cancel.font_size = layout.staff_font("body")
        self.cancel.style(theme.skip, theme.skip_text)


class MaintenancePage(Page):
    """The staff screen: what the terminal knows about itself; quit only from here."""

    name = "maintenance"
    ROWS = ("terminal", "site", "broker", "backlog", "oldest_pending", "last_ack", "clock",
            "config_version", "software", "ip", "ignored_taps", "error")

    def __init__(self, shell, **kw):
        super().__init__(shell, **kw)
        self.column = BoxLayout(orientation="vertical")
        self.title = Text(bold=True, size_hint_y=0.1)
        self.grid = GridLayout(cols=2, size_hint_y=0.72)
        self.cells: dict[str, tuple[Label, Label]] = {}
        for row in self.ROWS:
            name, value = Text(halign="right"), Text(halign="left")
            self.cells[row] = (name, value)
            self.grid.add_widget(name)
            self.grid.add_widget(value)
        buttons = BoxLayout(orientation="horizontal", size_hint_y=0.14)
        self.back = TextButton(bold=True)
        self.back.bind(on_release=lambda _b: self.shell.close_maintenance())
        self.exit = TextButton(bold=True)
        self.exit.bind(on_release=lambda _b: self.shell.quit())
        self.voice = TextButton(bold=True)
        self.voice.bind(on_release=lambda _b: self.shell.set_voice_default(
            "voice" not in self.shell.flow.settings.modes))
        self.volume = TextButton(bold=True)
        # Each press one step down, from the quietest back to full.
        self.volume.bind(on_release=lambda _b: self.shell.set_volume(
            1.0 if self.shell.speaker.volume <= 0.25 else self.shell.speaker.volume - 0.25))
        buttons.add_widget(self.voice)
        buttons.add_widget(self.volume)
        buttons.add_widget(self.back)
        buttons.add_widget(self.exit)
        self.buttons = buttons
        for child in (self.title, self.grid, buttons):
            self.column.add_widget(child)
        self.add_widget(self.column)

    def refresh(self) -> None:
        shell, theme, layout = self.shell, self.shell.theme, self.shell.layout
        catalog = shell.catalog
        self.set_background(theme.background)
        self.column.padding = [layout.margin] * 4
        self.column.spacing = layout.gap
        self.buttons.spacing = layout.gap * 2
        self.grid.spacing = (layout.gap * 2, 0)
        self.title.text = catalog["maint.title"]
        self.title.font_name = shell.font_for_lang()
        self.title.font_size = layout.staff_font("body")
        self.title.color = _rgba(theme.text)
        info = shell.maintenance_info()
        for row, (name, value) in self.cells.items():
            name.text = catalog[f"maint.{row}"]
            value.text = info.get(row, "")
            for label in (name, value):
                label.font_name = shell.font_for_lang()
                label.font_size = layout.staff_font("small")
                label.color = _rgba(theme.text if label is value else theme.muted_text)
        self.back.text = catalog["maint.back"]
        self.exit.text = catalog["maint.exit"]
        voice_on = "voice" in shell.flow.settings.modes
        self.voice.text = f"{catalog['maint.voice']}: {catalog['maint.yes' if voice_on else 'maint.no']}"
        self.volume.text = f"{catalog['maint.volume']} {round(shell.speaker.volume * 100)}%"
        for button in (self.voice, self.volume):
            button.font_name = shell.font_for_lang()
            button.fit(layout.staff_font("small"))
            button.style(theme.button, theme.button_text, border=theme.button_text)
        for button, (bg, fg) in ((self.back, (theme.button_active, theme.button_active_text)),
                                 (self.exit, (theme.error, theme.error_text))):
            button.font_name = shell.font_for_lang()
            button.font_size = layout.staff_font("body")
            button.style(bg, fg)
