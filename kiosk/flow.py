"""The visit flow: a pure state machine from a citizen's tap to the thank-you screen (no Kivy, no I/O).

Every method takes ``now`` (monotonic seconds) and returns the effects the
caller must carry out, in order: :class:`Record` (commit the tap to the
outbox at once, then call :meth:`Flow.recorded` with its id), :class:`Annotate`,
:class:`Release` and :class:`Quit`. kiosk/terminal.py carries them out.

The follow-up questions are data (:class:`Question`, built from the survey
config by kiosk/survey.py): a new rating field asked on screen is one more
Question, not one more screen or method.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Mapping, Union

from kiosk import protocol
from kiosk.catalog import DEFAULT_LANG, LANGUAGES


#: The display modes a citizen may switch on for one visit (the staff default is config).
MODES = ("large", "contrast", "voice", "low")

#: Keypad actions: a USB keypad's keys and the GPIO ◀ ▶ 선택 buttons map to these.
LEFT, RIGHT, SELECT, BACK, OTHER = "left", "right", "select", "back", "other"


class Screen(str, enum.Enum):
    RATING = "rating"
    #: A follow-up question (:attr:`Flow.question` says which).
    QUESTION = "question"
    THANKS = "thanks"
    ERROR = "error"
    SLEEP = "sleep"
    PIN = "pin"
    MAINTENANCE = "maintenance"


@dataclass(frozen=True)
class Question:
    """One optional follow-up question: the rating field it fills, its answers, the scores it follows."""

    #: The Rating field the answer is stored in ("reason", "age_group").
    field: str
    #: The answers offered, in order (each a valid value of the field).
    codes: tuple[str, ...]
    #: Asked after scores at or below this (5: after every score).
    max_score: int = 5
    #: Prefix of its texts in the message catalogs ("<key>.title", "<key>.<code>"); default: field.
    key: str = ""
    #: The site's own labels: code -> {language: text} (before the catalog's).
    labels: Mapping[str, Mapping[str, str]] = dataclasses.field(default_factory=dict)

    @property
    def catalog_key(self) -> str:
        return self.key or self.field

    def asked_after(self, score: int) -> bool:
        return bool(self.codes) and score <= self.max_score


@dataclass(frozen=True)
class Settings:
    """What shapes a visit: the kiosk's [ui] config overlaid with the site's survey config."""

    #: The follow-up questions, in the order they are asked.
    questions: tuple[Question, ...] = ()
    #: Every new screen ignores input this long after it appears (a double tap
    #: must not answer the next screen's question).
    guard_s: float = 0.5
    cooldown_s: float = 3.0
    followup_timeout_s: float = 10.0
    thank_you_s: float = 2.5
    count_when_closed: bool = False
    default_lang: str = DEFAULT_LANG
    languages: tuple[str, ...] = LANGUAGES
    pin: str = "0000"
    #: A language chosen but no tap within this: back to the default.
    idle_reset_s: float = 60.0
    #: Outside opening hours (when taps count), a touch wakes the rating screen for this long.
    wake_s: float = 30.0
    pin_timeout_s: float = 30.0
    maintenance_timeout_s: float = 300.0
    max_pin_attempts: int = 3
    error_s: float = 3.0
    #: The display modes every visit starts with (staff defaults from config).
    modes: frozenset[str] = frozenset()
    #: A staff call stays raised this long unless staff open the staff screen.
    help_s: float = 600.0


@dataclass(frozen=True)
class Record:
    score: int
    lang: str
    input: str


@dataclass(frozen=True)
class Annotate:
    rating_id: str
    field: str
    code: str


@dataclass(frozen=True)
class Release:
    rating_id: str


@dataclass(frozen=True)
class Quit:
    pass


Effect = Union[Record, Annotate, Release, Quit]


class Flow:
    """One terminal's screens and the visit in progress."""

    def __init__(self, settings: Settings, now: float, *, open: bool = True):
        self.settings = settings
        self.screen = Screen.RATING if open else Screen.SLEEP
        #: The follow-up question on screen (None on any other screen).
        self.question: Question | None = None
        self.lang = settings.default_lang
        #: Taps ignored during a cooldown or a new screen's guard (reported in Status as ``ignored_taps``).
        self.ignored_taps = 0
        #: The visit's rating (held in the outbox while follow-up questions show).
        self.rating_id: str | None = None
        self.score: int | None = None
        #: When the current screen closes by itself (None: it does not).
        self.deadline: float | None = None
        #: When the current screen appeared (its input guard runs from here).
        self.shown_at = now
        self.pin_entry = ""
        self.pin_error = False
        self._open = open
        self._cooldown_until = float("-inf")
        self._awake_until = float("-inf")
        self._last_activity = now
        self._questions: list[Question] = []
        self._recording: Record | None = None
        self._pin_attempts = 0
        #: This visit's display modes (MODES), reset to the staff default when it ends.
        self.modes: set[str] = set(settings.modes)
        #: The visit is driven by a keypad (its ratings carry input "keypad").
        self.keypad = False
        #: The focused target on a keypad: a face (0..4) or a follow-up answer.
        self.focus = 0
        #: The last follow-up question closed by its timeout (for its announcement).
        self.timed_out = False
        #: A citizen asked for staff help, until this (monotonic) time.
        self.help_until: float | None = None

    # -- state ----------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._open

    @property
    def view(self) -> str:
        """The screen's name, a question by its field ("rating", "reason", "age_group", "thanks", ...)."""
        if self.screen == Screen.QUESTION and self.question is not None:
            return self.question.field
        return self.screen.value

    def in_cooldown(self, now: float) -> bool:
        return now < self._cooldown_until

    def guarding(self, now: float) -> bool:
        """Whether the screen appeared too recently to take input."""
        return now < self.shown_at + self.settings.guard_s

    @property
    def voice(self) -> bool:
        return "voice" in self.modes

    def timeout(self, seconds: float) -> float:
        """A screen's time limit: doubled in voice mode (listening takes longer than reading)."""
        return seconds * 2 if self.voice else seconds

    def help_requested(self, now: float) -> bool:
        return self.help_until is not None and now < self.help_until

    def targets(self) -> int:
        """How many targets the keypad moves over on this screen."""
        if self.screen == Screen.RATING:
            return len(protocol.SCORES)
        if self.screen == Screen.QUESTION and self.question is not None:
            return len(self.question.codes)
        return 0

    def _show(self, screen: Screen, now: float, question: Question | None = None) -> None:
        if (screen, question) != (self.screen, self.question):
            self.shown_at = now
            self.focus = 0
            self.timed_out = False
        self.screen = screen
        self.question = question

    def _refused(self, now: float) -> bool:
        """Input during the new screen's guard: ignored (and counted, unless staff input)."""
        if self.guarding(now):
            if self.screen not in (Screen.PIN, Screen.MAINTENANCE):
                self.ignored_taps += 1
            return True
        return False

    def configure(self, settings: Settings, now: float) -> None:
        """New settings (say, a survey config from the server); the visit in progress keeps going."""
        self.settings = settings
        if self.screen in (Screen.RATING, Screen.SLEEP) and self.lang not in settings.languages:
            self.lang = settings.default_lang
        self._settle(now)

    def _rest_screen(self, now: float) -> Screen:
        return Screen.RATING if self._open or now < self._awake_until else Screen.SLEEP

    def _to_rest(self, now: float) -> None:
        """The visit is over: back to the first screen, in the default language."""
        self._show(self._rest_screen(now), now)
        self.lang = self.settings.default_lang
        self.rating_id = None
        self.score = None
        self.deadline = None
        self._questions = []
        self._last_activity = now
        self.modes = set(self.settings.modes)
        self.keypad = False

    def _settle(self, now: float) -> None:
        if self.screen in (Screen.RATING, Screen.SLEEP):
            rest = self._rest_screen(now)
            if rest != self.screen:
                self._show(rest, now)
                self.lang = self.settings.default_lang

    # -- the visit ------------------------------------------------------------

    def press(self, score: int, now: float, input: str = "touch") -> list[Effect]:
        """A face tile or a physical button: record at once, unless in a cooldown, a guard or asleep."""
        if score not in protocol.SCORES:
            raise ValueError(f"score {score!r} is not 1..5")
        if self._recording is not None:
            return []
        if now < self._cooldown_until:
            self.ignored_taps += 1
            return []
        if self.screen in (Screen.PIN, Screen.MAINTENANCE):
            return []
        if self.screen == Screen.SLEEP and not self.settings.count_when_closed:
            return []
        if self._refused(now):
            return []
        self._recording = Record(score, self.lang, input)
        return [self._recording]

    def recorded(self, rating_id: str, now: float) -> list[Effect]:
        """The tap is on disk: start the follow-up questions or say thank you."""
        if self._recording is None:
            raise RuntimeError("recorded() without a pending press()")
        record, self._recording = self._recording, None
        effects: list[Effect] = []
        if self.rating_id is not None:
            # A new tap (a button) during the last visit's follow-up ends that visit.
            effects.append(Release(self.rating_id))
        self.rating_id = rating_id
        self.score = record.score
        self._cooldown_until = now + self.settings.cooldown_s
        self._last_activity = now
        self._questions = [q for q in self.settings.questions if q.asked_after(record.score)]
        return effects + self._advance(now)

    def record_failed(self, now: float) -> list[Effect]:
        """The outbox could not commit the tap (say, a full disk): say so, never thank."""
        self._recording = None
        self._show(Screen.ERROR, now)
        self.deadline = now + self.settings.error_s
        return []

    def _advance(self, now: float) -> list[Effect]:
        if self._questions:
            self._show(Screen.QUESTION, now, self._questions.pop(0))
            self.deadline = now + self.timeout(self.settings.followup_timeout_s)
            return []
        return self._finish(now)

    def _finish(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        if self.rating_id is not None:
            effects.append(Release(self.rating_id))
        self._questions = []
        self._show(Screen.THANKS, now)
        self.deadline = now + self.timeout(self.settings.thank_you_s)
        return effects

    def answer(self, field: str, code: str, now: float) -> list[Effect]:
        """An answer to the question on screen: stored in the visit's rating, then the next question."""
        question = self.question
        if (self.screen != Screen.QUESTION or question is None or question.field != field
                or self.rating_id is None or code not in question.codes):
            return []
        if self._refused(now):
            return []
        self._last_activity = now
        return [Annotate(self.rating_id, field, code), *self._advance(now)]

    def skip(self, now: float) -> list[Effect]:
        """The citizen skips this question (the rating stays)."""
        if self.screen != Screen.QUESTION or self._refused(now):
            return []
        self._last_activity = now
        return self._advance(now)

    def stray_tap(self, now: float) -> None:
        """A touch that is not a control (the thank-you screen): counted when in a cooldown or guard."""
        if now < self._cooldown_until or self.guarding(now):
            self.ignored_taps += 1
        self.more_time(now)

    def more_time(self, now: float) -> None:
        """A touch or a key on a timed citizen screen: its full time again."""
        self._last_activity = now
        if self.screen == Screen.QUESTION:
            self.deadline = now + self.timeout(self.settings.followup_timeout_s)

    def hold(self, until: float) -> None:
        """Keep a timed citizen screen up at least until *until* (its announcement is still being spoken)."""
        if self.deadline is not None and self.screen in (Screen.QUESTION, Screen.THANKS, Screen.ERROR):
            self.deadline = max(self.deadline, until)

    # -- keypad and display modes -------------------------------------------------

    def key(self, action: str, now: float) -> list[Effect]:
        """A keypad key (or a GPIO ◀ ▶ 선택 button): the first one switches the visit to keypad and voice.

        ◀/▶ move the focus without wrapping (a blind citizen counts presses),
        select chooses the focused target, back skips a follow-up question.
        """
        if self.screen in (Screen.PIN, Screen.MAINTENANCE) or self._recording is not None:
            return []
        if self.screen == Screen.SLEEP:
            self.wake(now)
        if not self.keypad:
            # The first key only starts keypad mode: the citizen hears where they are first.
            self.keypad = True
            self.modes.add("voice")
            self.focus = 0
            self.more_time(now)
            return []
        self.more_time(now)
        count = self.targets()
        if action in (LEFT, RIGHT):
            if count:
                self.focus = max(0, min(count - 1, self.focus + (1 if action == RIGHT else -1)))
            return []
        if action == SELECT and count:
            if self.screen == Screen.RATING:
                return self.press(self.focus + 1, now, "keypad")
            question = self.question
            assert question is not None
            return self.answer(question.field, question.codes[self.focus], now)
        if action == BACK and self.screen == Screen.QUESTION:
            return self.skip(now)
        return []

    def set_mode(self, mode: str, on: bool, now: float) -> None:
        """A citizen switches a display mode for this visit (never on the staff screens)."""
        if mode not in MODES or self.screen in (Screen.PIN, Screen.MAINTENANCE):
            return
        if on:
            self.modes.add(mode)
        else:
            self.modes.discard(mode)
        self.more_time(now)

    def call_help(self, now: float) -> None:
        """A citizen asks for staff (raised in Status until staff open the staff screen or help_s passes)."""
        if self.screen in (Screen.PIN, Screen.MAINTENANCE):
            return
        self.help_until = now + self.settings.help_s
        self.more_time(now)

    def set_language(self, lang: str, now: float) -> None:
        if lang not in self.settings.languages or self.screen in (Screen.PIN, Screen.MAINTENANCE):
            return
        if self._refused(now):
            return
        self.lang = lang
        self._last_activity = now

    def set_open(self, open: bool, now: float) -> None:
        """Opening hours began or ended (the caller reads the wall clock)."""
        self._open = open
        self._settle(now)

    def wake(self, now: float) -> None:
        """A touch on the sleep screen: the rating screen, when taps count outside hours."""
        if self.screen == Screen.SLEEP and self.settings.count_when_closed and not self._refused(now):
            self._awake_until = now + self.settings.wake_s
            self._last_activity = now
            self._show(Screen.RATING, now)

    def tick(self, now: float) -> list[Effect]:
        """Time passes: timeouts close screens (call it a few times a second)."""
        screen = self.screen
        if self.deadline is not None and now >= self.deadline:
            if screen == Screen.QUESTION:
                effects = self._finish(now)
                self.timed_out = True
                return effects
            self._to_rest(now)
            self._pin_attempts = 0
            return []
        if screen == Screen.RATING and self.lang != self.settings.default_lang \
                and now - self._last_activity >= self.settings.idle_reset_s:
            self.lang = self.settings.default_lang
        self._settle(now)
        return []

    # -- maintenance ----------------------------------------------------------

    def open_pin(self, now: float) -> None:
        """The hidden gesture was made: ask for the staff PIN."""
        if self.screen not in (Screen.RATING, Screen.SLEEP) or self._recording is not None:
            return
        self._show(Screen.PIN, now)
        self.help_until = None  # staff are here
        self.pin_entry = ""
        self.pin_error = False
        self.deadline = now + self.settings.pin_timeout_s

    def pin_digit(self, digit: str, now: float) -> None:
        if self.screen != Screen.PIN or digit not in "0123456789" or len(digit) != 1:
            return
        if self._refused(now):
            return
        if len(self.pin_entry) < 12:
            self.pin_entry += digit
        self.pin_error = False
        self.deadline = now + self.settings.pin_timeout_s

    def pin_clear(self, now: float) -> None:
        if self.screen == Screen.PIN and not self._refused(now):
            self.pin_entry = ""
            self.deadline = now + self.settings.pin_timeout_s

    def pin_submit(self, now: float) -> bool:
        """Check the PIN: right opens maintenance; wrong clears it; too many wrong closes the pad."""
        if self.screen != Screen.PIN or self._refused(now):
            return False
        entry, self.pin_entry = self.pin_entry, ""
        if protocol.pin_matches(entry, self.settings.pin):
            self._pin_attempts = 0
            self.pin_error = False
            self._show(Screen.MAINTENANCE, now)
            self.deadline = now + self.settings.maintenance_timeout_s
            return True
        self._pin_attempts += 1
        self.pin_error = True
        self.deadline = now + self.settings.pin_timeout_s
        if self._pin_attempts >= self.settings.max_pin_attempts:
            self._pin_attempts = 0
            self._to_rest(now)
        return False

    def close_maintenance(self, now: float) -> None:
        """Cancel on the PIN pad, or Back on the staff screen."""
        if self.screen in (Screen.PIN, Screen.MAINTENANCE) and not self._refused(now):
            self.pin_entry = ""
            self._to_rest(now)

    def quit(self, now: float) -> list[Effect]:
        """Exit the app: only from the staff screen, which only the PIN opens."""
        if self.screen != Screen.MAINTENANCE or self._refused(now):
            return []
        return [Quit()]
