"""Before/after comparison: CI arithmetic against hand-computed values, verdicts, plain statements."""

import math

import pytest

from server.compare import compare


def test_clear_improvement_is_significant():
    before = {1: 40, 2: 60, 3: 100, 4: 200, 5: 100}   # n=500, csat 60%
    after = {1: 10, 2: 30, 3: 60, 4: 200, 5: 200}     # n=500, csat 80%
    c = compare(before, after)
    assert c.csat.before == 60.0 and c.csat.after == 80.0 and c.csat.diff == 20.0
    se = 100 * math.sqrt(0.6 * 0.4 / 500 + 0.8 * 0.2 / 500)
    assert c.csat.low == pytest.approx(20 - 1.959964 * se, abs=0.01)
    assert c.csat.high == pytest.approx(20 + 1.959964 * se, abs=0.01)
    assert c.csat.significant is True and c.index.significant is True
    assert c.index.diff == pytest.approx((c.after.mean - c.before.mean) * 25, abs=0.01)
    assert "통계적으로 유의한 변화입니다" in c.statement("ko")
    assert "is statistically significant" in c.statement("en")


def test_same_distribution_is_not_significant():
    dist = {1: 10, 2: 10, 3: 30, 4: 30, 5: 20}
    c = compare(dist, dist)
    assert c.csat.diff == 0 and c.csat.low < 0 < c.csat.high
    assert c.csat.significant is False and c.index.significant is False
    assert "유의한 변화라고 할 수 없습니다" in c.statement("ko")
    assert "not statistically significant" in c.statement("en")


def test_small_samples_get_no_verdict():
    c = compare({5: 5}, {1: 5})
    assert c.csat.diff == -100.0
    assert c.csat.significant is None
    assert "no verdict" in c.statement("en")


def test_empty_side_cannot_be_compared():
    c = compare({}, {4: 100})
    assert c.csat.diff is None and c.index.diff is None
    assert "not enough ratings" in c.statement("en")
    assert c.to_json()["csat"]["diff"] is None
