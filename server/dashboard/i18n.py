"""The dashboard's reading of codes and alerts in Korean (default) and English; its words are server/words.py."""

from __future__ import annotations

import re

from kiosk.protocol import AGE_GROUPS
from server.labels import Labels
from server.words import LANGS, TEXT, t

__all__ = ["LANGS", "TEXT", "t", "code_label", "alert_kind", "alert_text"]


#: Labels of the suspect filter's choices. The codes ratings carry (reasons, age
#: groups, ...) take their labels from the kiosk's catalogue: server/labels.py.
SUSPECT_LABELS: dict[str, dict[str, str]] = {
    "exclude": {"ko": "제외 (기본)", "en": "Exclude (default)"},
    "include": {"ko": "포함", "en": "Include"},
    "only": {"ko": "의심만", "en": "Only suspect"},
}


def code_label(code: str, lang: str) -> str:
    """A suspect choice's, age group's or reason's label; a site's own reason code
    without a label anywhere shows as it is."""
    entry = SUSPECT_LABELS.get(code)
    if entry:
        return entry.get(lang) or entry["ko"]
    field = "age_group" if code in AGE_GROUPS else "reason"
    return Labels(lang).code(field, code)


#: What each alert kind's stored message carries (server/alerts.py, audit.py, ingest.py write one English
#: message per condition), read back as the parameters of the reader's sentence: (pattern, text key) tried in
#: order; a message none matches reads as the kind's "_plain" sentence (or its sentence without figures).
_ALERT_PARAMS: dict[str, tuple[tuple[re.Pattern, str], ...]] = {
    "offline": ((re.compile(r" for (?P<minutes>\d+) min"), "alert_text_offline"),),
    "backlog": ((re.compile(r"backlog (?P<backlog>\d+)"), "alert_text_backlog"),),
    "low_scores": ((re.compile(r"(?P<count>\d+) scores <= (?P<max>\d+) in the last (?P<minutes>\d+) min"),
                    "alert_text_low_scores"),),
    "suspect": ((re.compile(r"(?P<count>\d+) ratings at machine pace"), "alert_text_suspect"),),
    "clock": ((re.compile(r""), "alert_text_clock"),),
    "certificate": ((re.compile(r"expired on (?P<day>\d{4}-\d\d-\d\d)"), "alert_text_certificate_expired"),
                    (re.compile(r"expires on (?P<day>\d{4}-\d\d-\d\d) \(in (?P<days>\d+) days?\)"),
                     "alert_text_certificate")),
    "help": ((re.compile(r""), "alert_text_help"),),
    "seq_restart": ((re.compile(r"\((?P<starts>\d+) times in all\)"), "alert_text_seq_restart"),),
    "quarantine": ((re.compile(r"quarantine cap \((?P<rows>\d+) rows, (?P<size>\d+) bytes\)"),
                    "alert_text_quarantine"),),
    "missing": ((re.compile(r"seq (?P<seqs>[\d, -]+?) and (?P<more>\d+) more ranges missing for over "
                            r"(?P<minutes>\d+) min"), "alert_text_missing_more"),
                (re.compile(r"seq (?P<seqs>[\d, -]+?) missing for over (?P<minutes>\d+) min"), "alert_text_missing")),
    "chain": ((re.compile(r"seq (?P<seq>\d+) arrived without a chain"), "alert_text_chain_unchained"),
              (re.compile(r"chain broken at seq (?P<seq>\d+)"), "alert_text_chain")),
    "signature": ((re.compile(r"a batch of (?P<count>\d+) ratings whose signature"), "alert_text_signature"),),
    "tamper": ((re.compile(r"no longer verify: \S+ seq (?P<seq>\d+)"), "alert_text_tamper"),),
}


def alert_kind(kind: str, lang: str) -> str:
    """An alert kind's name; a kind this version does not know shows as it is."""
    return t(f"alert_{kind}", lang) if f"alert_{kind}" in TEXT else kind


def alert_text(kind: str, message: str, lang: str) -> str:
    """An alert's sentence in *lang*, from its kind and the figures its stored message carries;
    an unknown kind keeps its message."""
    patterns = _ALERT_PARAMS.get(kind)
    if patterns is None:
        return message
    for pattern, key in patterns:
        found = pattern.search(message or "")
        if found is not None:
            return t(key, lang).format(**found.groupdict())
    plain = f"alert_text_{kind}_plain"
    return t(plain if plain in TEXT else patterns[-1][1], lang)
