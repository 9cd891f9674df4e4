"""Labels of the codes ratings carry, in the reader's language, read from the kiosk's locale files.

The kiosk's catalogue (kiosk/locales/<lang>.json) is the one source of the
words a citizen taps and staff read back: 업무 처리 결과 on the kiosk is 업무
처리 결과 in every report. The server may import nothing of the kiosk but
kiosk.protocol, so it reads those JSON files as package data (located next to
kiosk/protocol.py) instead of importing kiosk.catalog; only the label keys
(score., reason., age., lang., input., answer., day.) are used here.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import kiosk.protocol as protocol
from server.errors import ConfigError

LOCALES_DIR = Path(protocol.__file__).resolve().parent / "locales"
#: The languages staff pages, reports and exports are written in.
READER_LANGS = ("ko", "en")
DEFAULT_LANG = "ko"
#: Rating fields whose codes have labels, and the catalogue prefix of each.
FIELDS = {"score": "score", "reason": "reason", "age_group": "age", "lang": "lang", "input": "input"}
#: The known languages and input methods, in the order a reader expects them.
LANG_ORDER = ("ko", "en", "zh", "vi", "ja")
INPUT_ORDER = ("touch", "button", "keypad")


@lru_cache(maxsize=None)
def messages(lang: str) -> Mapping[str, str]:
    """The locale file of *lang* (a reader language), read once."""
    if lang not in READER_LANGS:
        lang = DEFAULT_LANG
    path = LOCALES_DIR / f"{lang}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the label catalogue ({exc})") from None
    return data


class Labels:
    """Words for codes in one reader language; a site's own reason labels ([survey]
    reason_labels) name the codes the catalogue does not know."""

    def __init__(self, lang: str, reason_labels: Mapping[str, Mapping[str, str]] | None = None):
        self.lang = lang if lang in READER_LANGS else DEFAULT_LANG
        self._messages = messages(self.lang)
        self._own = reason_labels or {}

    def text(self, key: str) -> str:
        return self._messages[key]

    @property
    def no_answer(self) -> str:
        return self._messages["answer.none"]

    def code(self, field: str, code: Any) -> str:
        """The label of *code* in rating field *field*; None reads as "no answer"."""
        if code is None:
            return self.no_answer
        if field == "reason":
            own = self._own.get(code, {})
            return (own.get(self.lang) or self._messages.get(f"reason.{code}")
                    or own.get(DEFAULT_LANG) or next(iter(own.values()), None) or str(code))
        if field == "hour":
            return self.hour(int(code))
        if field == "weekday":
            return self.weekday(int(code))
        # Fields without catalogue labels (site, terminal) read as their identifiers.
        return self._messages.get(f"{FIELDS.get(field, field)}.{code}", str(code))

    def hour(self, hour: int) -> str:
        """09시 / 09:00."""
        return f"{hour:02d}시" if self.lang == "ko" else f"{hour:02d}:00"

    def weekday(self, number: int) -> str:
        """0 Monday .. 6 Sunday, as the kiosk's catalogue names the days."""
        return self._messages[f"day.{protocol.WEEKDAYS[number]}"]


def sort_key(field: str, reasons: Sequence[str] = protocol.DEFAULT_REASONS):
    """A key sorting *field*'s codes by meaning: age groups young to old, reasons in
    config order, scores 1..5, hours and weekdays in time; "no answer" (None) last."""
    order: Sequence[Any] = {
        "age_group": protocol.AGE_GROUPS, "reason": tuple(reasons), "score": protocol.SCORES,
        "lang": LANG_ORDER, "input": INPUT_ORDER,
    }.get(field, ())

    def key(code: Any) -> tuple:
        if code is None:
            return (2, 0, "")
        if code in order:
            return (0, order.index(code), "")
        if isinstance(code, int):
            return (0, code, "")
        return (1, 0, str(code))

    return key


def in_order(field: str, codes: Iterable[Any], reasons: Sequence[str] = protocol.DEFAULT_REASONS) -> list:
    """*codes* sorted by meaning (see sort_key)."""
    return sorted(codes, key=sort_key(field, reasons))
