"""Before/after comparison: change in CSAT and index with a 95% confidence interval, in plain words (pure)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from server.aggregate import Summary, normalize_distribution, summarize
from server.particles import attach

Z95 = 1.959964
#: Fewer ratings than this on either side: no verdict (the normal approximation is poor).
MIN_COUNT = 30


@dataclass(frozen=True)
class Change:
    """after - before, with its 95% CI; significant is None when there is too little data."""

    metric: str  # "csat" (percentage points) or "index" (points)
    before: float | None
    after: float | None
    diff: float | None
    low: float | None
    high: float | None
    significant: bool | None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Comparison:
    before: Summary
    after: Summary
    csat: Change
    index: Change

    def statement(self, lang: str = "ko") -> str:
        return " ".join(_sentence(change, lang) for change in (self.index, self.csat))

    def to_json(self) -> dict[str, Any]:
        return {"before": self.before.to_json(), "after": self.after.to_json(),
                "csat": self.csat.to_json(), "index": self.index.to_json(),
                "statement": {"ko": self.statement("ko"), "en": self.statement("en")}}


def _variance(dist: Mapping[int, int], mean: float, n: int) -> float:
    return sum(count * (score - mean) ** 2 for score, count in dist.items()) / (n - 1)


def _change(metric: str, before: float | None, after: float | None, se: float | None,
            enough: bool) -> Change:
    if before is None or after is None or se is None:
        return Change(metric, before, after, None, None, None, None)
    diff = after - before
    low, high = diff - Z95 * se, diff + Z95 * se
    significant = (low > 0 or high < 0) if enough else None
    return Change(metric, before, after, round(diff, 2), round(low, 2), round(high, 2), significant)


def compare(before: Mapping[Any, Any], after: Mapping[Any, Any], min_count: int = MIN_COUNT) -> Comparison:
    """Compare two score histograms (before, after).

    CSAT: difference of two proportions (Wald interval); index: difference of
    two means (Welch) scaled by 25, since index = (mean - 1) / 4 * 100.
    """
    b_dist, a_dist = normalize_distribution(before), normalize_distribution(after)
    b, a = summarize(b_dist), summarize(a_dist)
    enough = b.count >= min_count and a.count >= min_count
    if b.count >= 2 and a.count >= 2:
        p1 = (b_dist[4] + b_dist[5]) / b.count
        p2 = (a_dist[4] + a_dist[5]) / a.count
        csat_se = 100 * math.sqrt(p1 * (1 - p1) / b.count + p2 * (1 - p2) / a.count)
        m1 = sum(s * c for s, c in b_dist.items()) / b.count
        m2 = sum(s * c for s, c in a_dist.items()) / a.count
        index_se = 25 * math.sqrt(_variance(b_dist, m1, b.count) / b.count
                                  + _variance(a_dist, m2, a.count) / a.count)
        csat_before, csat_after = p1 * 100, p2 * 100
        index_before, index_after = (m1 - 1) * 25, (m2 - 1) * 25
    else:
        csat_se = index_se = None
        csat_before, csat_after, index_before, index_after = b.csat, a.csat, b.index, a.index
    return Comparison(
        before=b, after=a,
        csat=_change("csat", _round(csat_before), _round(csat_after), csat_se, enough),
        index=_change("index", _round(index_before), _round(index_after), index_se, enough),
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _sentence(change: Change, lang: str) -> str:
    ko = lang == "ko"
    name = {"csat": "CSAT", "index": "만족도 지수" if ko else "The satisfaction index"}[change.metric]
    unit = ("%p" if ko else " points") if change.metric == "csat" else ("점" if ko else " points")
    if change.diff is None:
        return f"{name}: 비교할 평가가 부족합니다." if ko else f"{name}: not enough ratings to compare."
    ci = f"{change.low:+.1f} ~ {change.high:+.1f}{unit}" if ko else f"{change.low:+.1f} to {change.high:+.1f}{unit}"
    if ko:
        moved = (f"{attach(name, '는')} {change.before:.1f}에서 {attach(f'{change.after:.1f}', '로')}"
                 f" {change.diff:+.1f}{unit} 변했습니다 (95% 신뢰구간 {ci}).")
        if change.significant is None:
            return moved + f" 어느 쪽이든 {MIN_COUNT}건 미만이라 유의성을 판단하지 않습니다."
        return moved + (" 통계적으로 유의한 변화입니다." if change.significant
                        else " 통계적으로 유의한 변화라고 할 수 없습니다.")
    moved = (f"{name} went from {change.before:.1f} to {change.after:.1f}, {change.diff:+.1f}{unit}"
             f" (95% confidence interval {ci}).")
    if change.significant is None:
        return moved + f" Fewer than {MIN_COUNT} ratings on one side: no verdict on significance."
    return moved + (" The change is statistically significant." if change.significant
                    else " The change is not statistically significant.")
