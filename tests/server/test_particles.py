"""Korean particles follow how the preceding word is read aloud (numbers, Hangul, units, Latin)."""

import pytest

from server.particles import attach, ending, particle

# (word, 으로/로, 이/가, 은/는, 을/를, 과/와)
TABLE = [
    ("82.6", "으로", "이", "은", "을", "과"),    # 육: ㄱ
    ("82.5", "로", "가", "는", "를", "와"),      # 오: vowel
    ("82.7", "로", "이", "은", "을", "과"),      # 칠: ㄹ takes 로
    ("82.0", "으로", "이", "은", "을", "과"),    # 영: ㅇ
    ("1", "로", "이", "은", "을", "과"),         # 일
    ("2", "로", "가", "는", "를", "와"),         # 이
    ("3", "으로", "이", "은", "을", "과"),       # 삼
    ("10", "으로", "이", "은", "을", "과"),      # 십
    ("100", "으로", "이", "은", "을", "과"),     # 백
    ("1,000", "으로", "이", "은", "을", "과"),   # 천
    ("20000", "으로", "이", "은", "을", "과"),   # 이만
    ("1000000000000", "로", "가", "는", "를", "와"),  # 일조
    ("0", "으로", "이", "은", "을", "과"),       # 영
    ("서울", "로", "이", "은", "을", "과"),
    ("지수", "로", "가", "는", "를", "와"),
    ("만족도 지수", "로", "가", "는", "를", "와"),
    ("대기 시간", "으로", "이", "은", "을", "과"),
    ("80%", "로", "가", "는", "를", "와"),       # 퍼센트
    ("3.5%p", "로", "가", "는", "를", "와"),     # 퍼센트포인트
    ("3점", "으로", "이", "은", "을", "과"),
    ("12건", "으로", "이", "은", "을", "과"),
    ("5월", "로", "이", "은", "을", "과"),
    ("CSAT", "로", "가", "는", "를", "와"),
    ("URL", "로", "이", "은", "을", "과"),       # 엘
    ("(지수)", "로", "가", "는", "를", "와"),    # closing brackets are skipped
]


@pytest.mark.parametrize("word, ro, i, eun, eul, gwa", TABLE)
def test_particles_follow_the_word_read_aloud(word, ro, i, eun, eul, gwa):
    assert particle(word, "로") == ro and particle(word, "으로") == ro
    assert particle(word, "가") == i and particle(word, "이") == i
    assert particle(word, "는") == eun
    assert particle(word, "를") == eul
    assert particle(word, "와") == gwa


def test_attach_joins_word_and_particle():
    assert attach("82.6", "로") == "82.6으로"
    assert attach("82.5", "으로") == "82.5로"


def test_endings_of_the_three_kinds():
    assert ending("가") is None and ending("갈") == "l" and ending("각") == "c"
    assert ending("") is None


def test_an_unknown_particle_is_an_error():
    with pytest.raises(ValueError, match="particle"):
        particle("지수", "에게")
