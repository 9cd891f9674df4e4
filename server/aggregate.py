"""Aggregation arithmetic on score histograms: summaries, exact merges, valid keys (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from kiosk.protocol import SCORES

#: The keys /api/v1/aggregates can group by, as named in the contract.
AGGREGATE_KEYS = ("day", "hour", "weekday", "site", "terminal", "reason", "age_group", "lang", "input")
MAX_BY = 3

Distribution = dict[int, int]


def empty_distribution() -> Distribution:
    return {score: 0 for score in SCORES}


def normalize_distribution(raw: Mapping[Any, Any]) -> Distribution:
    """A distribution from ``{1: n}`` or JSON's ``{"1": n}``; ValueError if malformed."""
    if not isinstance(raw, Mapping):
        raise ValueError("a distribution must be an object of score -> count")
    out = empty_distribution()
    for key, count in raw.items():
        try:
            score = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"distribution key {key!r} is not a score 1..5") from None
        if score not in out or str(score) != str(key).strip():
            raise ValueError(f"distribution key {key!r} is not a score 1..5")
        if type(count) is not int or count < 0:
            raise ValueError(f"distribution count {count!r} for {key!r} is not a non-negative integer")
        out[score] += count
    return out


def merge(distributions: Iterable[Mapping[Any, Any]]) -> Distribution:
    """The exact sum of several distributions."""
    total = empty_distribution()
    for distribution in distributions:
        for score, count in normalize_distribution(distribution).items():
            total[score] += count
    return total


def distribution_json(distribution: Mapping[int, int]) -> dict[str, int]:
    return {str(score): distribution.get(score, 0) for score in SCORES}


@dataclass(frozen=True)
class Summary:
    """count, mean, csat (% of 4 and 5) and index ((mean-1)/4*100); None where count is 0."""

    count: int
    distribution: Distribution
    mean: float | None
    csat: float | None
    index: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "distribution": distribution_json(self.distribution),
            "mean": self.mean,
            "csat": self.csat,
            "index": self.index,
        }


def summarize(distribution: Mapping[Any, Any]) -> Summary:
    dist = normalize_distribution(distribution)
    count = sum(dist.values())
    if count == 0:
        return Summary(0, dist, None, None, None)
    total = sum(score * n for score, n in dist.items())
    mean = total / count
    # Rounded for presentation only: merging always goes back to the histograms.
    return Summary(
        count=count,
        distribution=dist,
        mean=round(mean, 4),
        csat=round((dist[4] + dist[5]) * 100 / count, 2),
        index=round((mean - 1) / 4 * 100, 2),
    )


#: Not a stored column: a site's group, from the server's [groups] (see regroup).
GROUP_KEY = "group"
#: What /api/v1/aggregates and pull accept: the stored keys and the group.
BY_KEYS = (*AGGREGATE_KEYS, GROUP_KEY)


def parse_by(value: str | Sequence[str], known: Sequence[str] = BY_KEYS) -> tuple[str, ...]:
    """Validate ``by`` ("day,site" or a sequence): 1..MAX_BY of the *known* keys, no repeats; ValueError if not."""
    keys = [k.strip() for k in value.split(",")] if isinstance(value, str) else list(value)
    if not keys or any(not k for k in keys):
        raise ValueError(f"by must name 1 to {MAX_BY} keys separated by commas, of: {', '.join(known)}")
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise ValueError(f"by: unknown key {unknown[0]!r}; keys are {', '.join(known)}")
    if len(keys) > MAX_BY:
        raise ValueError(f"by: at most {MAX_BY} keys, got {len(keys)}")
    if len(set(keys)) != len(keys):
        raise ValueError("by: a key is named twice")
    return tuple(keys)


def store_keys(by: Sequence[str]) -> tuple[str, ...]:
    """The stored keys a ``by`` with ``group`` needs: the group's place is taken by the site."""
    return tuple(dict.fromkeys("site" if key == GROUP_KEY else key for key in by))


def regroup(rows: Iterable[tuple[tuple, Mapping[int, int]]], by: Sequence[str],
            groups: Mapping[str, Sequence[str]]) -> list[tuple[tuple, Distribution]]:
    """Rows keyed by store_keys(*by*) as rows keyed by *by*: each site's counts go to every group
    (id -> its sites) that holds it, a site in no group to the group None. Exact: only sums."""
    stored = store_keys(by)
    owners: dict[str, list[str]] = {}
    for group, sites in sorted(groups.items()):
        for site in sites:
            owners.setdefault(site, []).append(group)
    out: dict[tuple, Distribution] = {}
    for key, dist in rows:
        values = dict(zip(stored, key))
        for group in owners.get(values["site"], [None]):
            target = tuple(group if k == GROUP_KEY else values[k] for k in by)
            total = out.setdefault(target, empty_distribution())
            for score, count in dist.items():
                total[int(score)] += count
    return sorted(out.items(), key=lambda item: tuple((v is None, str(v)) for v in item[0]))


def merge_rows(row_sets: Iterable[Iterable[Mapping[str, Any]]], by: Sequence[str]) -> list[dict[str, Any]]:
    """Merge /api/v1/aggregates rows from several servers exactly, keyed by the ``by`` values.

    Rows come back sorted by key (None first), each with its summed
    distribution and count recomputed from it.
    """
    by = parse_by(by)
    merged: dict[tuple, Distribution] = {}
    for rows in row_sets:
        for row in rows:
            try:
                key = tuple(row[k] for k in by)
            except KeyError as exc:
                raise ValueError(f"an aggregates row lacks the key {exc.args[0]!r}") from None
            dist = normalize_distribution(row.get("distribution", {}))
            if "count" in row and row["count"] != sum(dist.values()):
                raise ValueError(f"row {key}: count {row['count']!r} is not the sum of its distribution")
            current = merged.setdefault(key, empty_distribution())
            for score, count in dist.items():
                current[score] += count
    out = []
    for key in sorted(merged, key=_sort_key):
        dist = merged[key]
        out.append({**dict(zip(by, key)), "count": sum(dist.values()),
                    "distribution": distribution_json(dist)})
    return out


def _sort_key(key: tuple) -> tuple:
    return tuple((value is not None, str(type(value).__name__), value if value is not None else 0)
                 for value in key)
