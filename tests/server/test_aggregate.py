"""Aggregate arithmetic: summaries, by-key validation and exact merging of histograms."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.aggregate import (
    AGGREGATE_KEYS,
    merge,
    merge_rows,
    normalize_distribution,
    parse_by,
    summarize,
)

counts = st.integers(min_value=0, max_value=10**9)
distributions = st.fixed_dictionaries({s: counts for s in (1, 2, 3, 4, 5)})


def test_summary_definitions():
    s = summarize({1: 1, 2: 0, 3: 1, 4: 1, 5: 1})
    assert s.count == 4
    assert s.mean == 3.25
    assert s.csat == 50.0
    assert s.index == 56.25
    assert s.to_json()["distribution"] == {"1": 1, "2": 0, "3": 1, "4": 1, "5": 1}


def test_empty_summary_is_null():
    s = summarize({})
    assert (s.count, s.mean, s.csat, s.index) == (0, None, None, None)


def test_extremes():
    assert summarize({5: 3}).index == 100.0
    assert summarize({1: 3}).index == 0.0
    assert summarize({1: 3}).csat == 0.0


def test_json_keys_accepted_and_bad_ones_rejected():
    assert normalize_distribution({"1": 2, "5": 1}) == {1: 2, 2: 0, 3: 0, 4: 0, 5: 1}
    for bad in ({"6": 1}, {"x": 1}, {"1": -1}, {"1": 1.5}, {True: 1}, {"1": True}, [1, 2]):
        with pytest.raises(ValueError):
            normalize_distribution(bad)


@given(st.lists(distributions, max_size=8))
def test_merge_is_the_exact_sum(parts):
    total = merge(parts)
    for score in (1, 2, 3, 4, 5):
        assert total[score] == sum(p[score] for p in parts)
    assert summarize(total).count == sum(sum(p.values()) for p in parts)


@given(st.lists(st.lists(st.tuples(st.sampled_from(["a", "b", None]), st.integers(0, 3), distributions),
                         max_size=6), max_size=4))
def test_merge_rows_equals_merging_the_raw_ratings(servers):
    row_sets = [[{"site": site, "hour": hour, "count": sum(d.values()),
                  "distribution": {str(k): v for k, v in d.items()}} for site, hour, d in rows]
                for rows in servers]
    merged = merge_rows(row_sets, ("site", "hour"))
    expected: dict = {}
    for rows in servers:
        for site, hour, d in rows:
            acc = expected.setdefault((site, hour), dict.fromkeys(range(1, 6), 0))
            for k, v in d.items():
                acc[k] += v
    assert {(r["site"], r["hour"]): {int(k): v for k, v in r["distribution"].items()} for r in merged} == expected
    assert all(r["count"] == sum(r["distribution"].values()) for r in merged)
    assert len(merged) == len(expected)


def test_merge_rows_rejects_inconsistent_rows():
    with pytest.raises(ValueError, match="count"):
        merge_rows([[{"day": "2026-11-27", "count": 3, "distribution": {"5": 1}}]], ["day"])
    with pytest.raises(ValueError, match="lacks"):
        merge_rows([[{"count": 0, "distribution": {}}]], ["day"])


def test_parse_by():
    assert parse_by("day") == ("day",)
    assert parse_by("site, terminal") == ("site", "terminal")
    assert parse_by(["hour", "weekday"]) == ("hour", "weekday")
    for key in AGGREGATE_KEYS:
        assert parse_by(key) == (key,)
    for bad, message in (("", "1 to 3"), ("day,", "1 to 3"), ("score", "unknown key 'score'"),
                         ("day,hour,site,terminal", "at most 3"), ("day,day", "twice"),
                         ("day;drop", "unknown")):
        with pytest.raises(ValueError, match=message):
            parse_by(bad)


def test_regroup_sums_sites_into_every_group_holding_them_and_keeps_the_rest_apart():
    from server.aggregate import regroup, store_keys

    assert store_keys(("day", "group")) == ("day", "site") and store_keys(("group", "site")) == ("site",)
    rows = [(("a",), {5: 2}), (("b",), {1: 1}), (("c",), {3: 4})]
    out = dict(regroup(rows, ("group",), {"g1": ("a", "b"), "g2": ("b",)}))
    assert out[("g1",)][5] == 2 and out[("g1",)][1] == 1
    assert out[("g2",)] == {1: 1, 2: 0, 3: 0, 4: 0, 5: 0}
    assert out[(None,)][3] == 4  # a site in no group is not lost


def test_group_is_a_by_key_for_the_api_and_pull_but_not_a_stored_column():
    from server.aggregate import AGGREGATE_KEYS, merge_rows, parse_by

    assert parse_by("group,day") == ("group", "day") and "group" not in AGGREGATE_KEYS
    merged = merge_rows([[{"group": "south", "count": 1, "distribution": {"5": 1}}],
                         [{"group": "south", "count": 2, "distribution": {"1": 2}}]], ("group",))
    assert merged == [{"group": "south", "count": 3, "distribution": {"1": 2, "2": 0, "3": 0, "4": 0, "5": 1}}]
