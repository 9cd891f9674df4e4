"""Korean particles (조사) chosen by how the preceding word ends when read aloud (pure)."""

from __future__ import annotations

import re

#: Each particle's two forms: after a final consonant (받침), after a vowel.
PAIRS: dict[str, tuple[str, str]] = {}
for _with, _without in (("이", "가"), ("은", "는"), ("을", "를"), ("과", "와"), ("으로", "로"),
                        ("이라", "라"), ("이나", "나")):
    PAIRS[_with] = PAIRS[_without] = (_with, _without)

_HANGUL_FIRST, _HANGUL_LAST = 0xAC00, 0xD7A3
#: The final consonant ㄹ in the syllable arithmetic (jongseong index 8).
_RIEUL = 8
#: How each digit ends when read in Sino-Korean (영 일 이 삼 사 오 육 칠 팔 구):
#: None no final consonant, "l" final ㄹ, "c" any other final consonant.
_DIGIT_END = {"0": "c", "1": "l", "2": None, "3": "c", "4": None, "5": None,
              "6": "c", "7": "l", "8": "l", "9": None}
#: A whole number with 1-3 trailing zeros ends in 십, 백 or 천 (all with a final
#: consonant); with more, in its largest myriad, by zeros // 4: 1 만, 2 억, 3 조 (none).
_MYRIAD_END = {1: "c", 2: "c", 3: None}
#: Latin letters read as their Korean names (엘, 엠, 엔, 알 end in a consonant).
_LATIN_END = {"l": "l", "m": "c", "n": "c", "r": "l"}
#: Units read aloud after a number: %는 퍼센트, %p는 퍼센트포인트, 점, 건, 명, 개, 시, 분, 일, 월.
_UNIT_END = {"%": None, "%p": None, "점": "c", "건": "c", "명": "c", "개": None, "시": None,
             "분": "c", "일": "l", "월": "l"}
_NUMBER_RE = re.compile(r"([0-9][0-9,]*)(?:\.([0-9]+))?$")
_TRAILING = " )]}>'\"”’」』"


def ending(word: str) -> str | None:
    """How *word* ends when read aloud: None (a vowel), "l" (ㄹ) or "c" (another consonant)."""
    text = word.rstrip(_TRAILING)
    if not text:
        return None
    for unit in sorted(_UNIT_END, key=len, reverse=True):
        if text.endswith(unit) and len(text) > len(unit) and text[-len(unit) - 1].isdigit():
            return _UNIT_END[unit]
    last = text[-1]
    if _HANGUL_FIRST <= ord(last) <= _HANGUL_LAST:
        final = (ord(last) - _HANGUL_FIRST) % 28
        return None if final == 0 else ("l" if final == _RIEUL else "c")
    match = _NUMBER_RE.search(text)
    if match:
        whole, fraction = match.group(1).replace(",", ""), match.group(2)
        if fraction:  # digits after the point are read one by one (팔십이 점 육)
            return _DIGIT_END[fraction[-1]]
        stripped = whole.lstrip("0")
        if not stripped:
            return _DIGIT_END["0"]
        zeros = len(stripped) - len(stripped.rstrip("0"))
        if zeros == 0:
            return _DIGIT_END[stripped[-1]]
        if zeros < 4:
            return "c"
        return _MYRIAD_END.get(zeros // 4)
    if last.isascii() and last.isalpha():
        return _LATIN_END.get(last.lower())
    return None


def particle(word: str, name: str) -> str:
    """The form of particle *name* (either form: "로" or "으로") that follows *word*."""
    try:
        with_final, without_final = PAIRS[name]
    except KeyError:
        raise ValueError(f"{name!r} is not a particle this module knows: {', '.join(PAIRS)}") from None
    end = ending(word)
    if with_final == "으로":
        return "으로" if end == "c" else "로"  # ㄹ takes 로 like a vowel (서울로)
    return without_final if end is None else with_final


def attach(word: str, name: str) -> str:
    """*word* followed by the right form of particle *name*: attach("82.6", "로") -> "82.6으로"."""
    return f"{word}{particle(word, name)}"
