"""Message catalogs: every text a citizen or staff member reads, per language, from kiosk/locales/*.json."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from kiosk import protocol

LOCALES_DIR = Path(__file__).resolve().parent / "locales"
DEFAULT_LANG = "ko"
#: The languages offered on the language bar, in that order.
LANGUAGES = ("ko", "en", "zh", "vi", "ja")
#: "<key>.short": the form of a label shown on the kiosk where the full one cannot fit a 7"
#: display at the minimum character size ("Very bad" for "Very dissatisfied"); optional per
#: language. Voice, reports and exports keep the full label.
SHORT = ".short"


class CatalogError(ValueError):
    """A catalog file is missing, unreadable or lacks a key the default language has."""


@dataclass(frozen=True)
class Catalog:
    """One language's messages."""

    lang: str
    messages: Mapping[str, str]

    def __getitem__(self, key: str) -> str:
        return self.messages[key]

    def score(self, score: int) -> str:
        return self.messages[f"score.{score}"]

    def shown(self, key: str) -> str:
        """The text the kiosk shows for *key*: its short form where the catalog has one."""
        return self.messages.get(key + SHORT) or self.messages[key]

    def label(self, key: str, code: str, labels: Mapping[str, Mapping[str, str]] | None = None) -> str:
        """An answer's label as shown (*key*: the question's catalog prefix): the site's own label in
        this language, the catalog's (its short form first), the site's Korean one, the code."""
        own = (labels or {}).get(code, {})
        catalog = f"{key}.{code}"
        return (own.get(self.lang) or self.messages.get(catalog + SHORT) or self.messages.get(catalog)
                or own.get(DEFAULT_LANG) or code)

    def question(self, texts: Mapping[str, str] | None = None) -> str:
        """The site's question in this language when it has one, else the catalog's."""
        return (texts or {}).get(self.lang) or self.messages["question"]

    def hours(self, lines: Iterable[str]) -> str:
        """Opening-hours lines ("mon-fri 09:00-18:00") with day names in this language."""
        out = []
        for line in lines:
            days, _, spans = line.strip().lower().partition(" ")
            for code in protocol.WEEKDAYS:
                days = days.replace(code, self.messages[f"day.{code}"])
            out.append(f"{days.replace('-', '–')}  {' '.join(spans.split())}")
        return "\n".join(out)


def load_catalog(lang: str, directory: Path = LOCALES_DIR) -> Catalog:
    path = directory / f"{lang}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CatalogError(f"{path}: no catalog for language {lang!r}") from None
    except (OSError, ValueError) as exc:
        raise CatalogError(f"{path}: cannot read ({exc})") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in data.items()
    ):
        raise CatalogError(f"{path}: must be an object of key -> non-empty text")
    return Catalog(lang, data)


def load_catalogs(languages: Iterable[str] = LANGUAGES, directory: Path = LOCALES_DIR) -> dict[str, Catalog]:
    """Every language's catalog, checked to have exactly the default language's keys."""
    languages = list(languages)
    if DEFAULT_LANG not in languages:
        languages.insert(0, DEFAULT_LANG)
    catalogs = {lang: load_catalog(lang, directory) for lang in languages}
    reference = {key for key in catalogs[DEFAULT_LANG].messages if not key.endswith(SHORT)}
    for lang, catalog in catalogs.items():
        keys = catalog.messages.keys()
        # A short form is optional, but only of a key the catalog has.
        missing = reference - keys
        extra = {key for key in keys if not key.endswith(SHORT)} - reference
        extra |= {key for key in keys if key.endswith(SHORT) and key.removesuffix(SHORT) not in reference}
        if missing or extra:
            problem = (f"lacks {sorted(missing)[0]!r}" if missing
                       else f"has {sorted(extra)[0]!r}, unknown in {DEFAULT_LANG}.json")
            raise CatalogError(f"{directory / (lang + '.json')}: {problem}")
    return catalogs


def all_texts(catalog: Catalog) -> str:
    """Every character a catalog can put on screen (for font coverage checks)."""
    return "".join(catalog.messages.values())
