"""The store's rollup tables answer exactly what a GROUP BY over the ratings would, suspects included."""

import random
import threading
import uuid
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from itertools import combinations

import pytest

from kiosk.protocol import AGE_GROUPS, Rating
from server.aggregate import AGGREGATE_KEYS, empty_distribution
from server.errors import StoreError
from server.schema import (BY_SCORE_TABLES, MIGRATIONS, NULLABLE, ROLLUPS, SCORE_COUNTS, CreateTable, FillRollup,
                           render, rollup_tail, score_counts)
from server.store import ROLL_UP_JOB, Filters, SQLiteStore, filter_columns, range_parts, smallest_rollup
from tests.backends import BACKENDS, execute, make_backend, tuples

RECEIVED = datetime(2027, 1, 10, 1, 30, tzinfo=timezone.utc)
#: Local days the fixture's ratings fall on: four months, their ends and starts.
DAYS = [date(2026, 9, 25) + timedelta(days=i) for i in range(103)]


def raw_aggregates(store, by, filters):
    where, params = store._where(filters)
    cols = ", ".join(by)
    groups = {}
    for row in tuples(store, f"SELECT {cols}, score, count(*) FROM ratings WHERE {where} GROUP BY {cols}, score",
                      params):
        groups.setdefault(tuple(row[:len(by)]), empty_distribution())[row[-2]] = row[-1]
    return groups


@pytest.fixture(scope="module", params=BACKENDS)
def store(request, tmp_path_factory):
    rng = random.Random(7)
    postgres = request.getfixturevalue("postgres_database") if request.param == "postgres" else None
    backend = make_backend(request.param, tmp_path_factory.mktemp("roll"), postgres)
    store = backend.open()
    seq = {}
    for _ in range(60):
        site, terminal = rng.choice(["s1", "s2"]), rng.choice(["t1", "t2", "t3"])
        batch = []
        for _ in range(rng.randint(1, 30)):
            seq[site, terminal] = seq.get((site, terminal), 0) + 1
            day = rng.choice(DAYS)
            # Some stamped in UTC late in the evening: in Seoul the next day, at a month's end the next month.
            at = (f"{day}T{rng.randint(8, 19):02d}:{rng.randint(0, 59):02d}:00.000+09:00" if rng.random() < 0.8
                  else f"{day}T{rng.randint(14, 23):02d}:{rng.randint(0, 59):02d}:00.000+00:00")
            batch.append(Rating(
                id=str(uuid.uuid4()), seq=seq[site, terminal], score=rng.randint(1, 5), at=at,
                clock_synced=rng.random() < 0.9, reason=rng.choice([None, None, "wait_time", "other"]),
                age_group=rng.choice([None, *AGE_GROUPS]), lang=rng.choice(["ko", "en"]),
                input=rng.choice(["touch", "button"])))
        store.ingest_batch(site, terminal, batch, RECEIVED)
        # resends are duplicates and change no count
        store.ingest_batch(site, terminal, batch[:3], RECEIVED)
        if rng.random() < 0.3:
            store.roll_up(limit=rng.randint(1, 40))
    # Every answer below is read from rolled-up counts and queued ones at once.
    assert 0 < store.counts()["rollup_queue"]
    assert tuples(store, f"SELECT sum({' + '.join(SCORE_COUNTS)}) FROM roll_all")[0][0] > 0
    yield store
    store.close()
    backend.close()


FILTERS = [
    Filters(date(2026, 11, 1), date(2026, 11, 30)),
    # Whole months only; whole months with days before and after; months then days;
    # a day, a month, a day; across a month's end without a whole month; everything.
    Filters(date(2026, 10, 1), date(2026, 12, 31)),
    Filters(date(2026, 9, 28), date(2026, 12, 3)),
    Filters(date(2026, 10, 1), date(2026, 11, 15), site="s1"),
    Filters(date(2026, 10, 31), date(2026, 12, 1), terminal="t2"),
    Filters(date(2026, 10, 31), date(2026, 12, 1), site="s2", terminal="t1"),
    Filters(date(2026, 11, 30), date(2026, 12, 1), sites=frozenset({"s2"})),
    Filters(date(2026, 9, 1), date(2027, 1, 31), sites=frozenset({"s1", "s2"})),
    Filters(date(2026, 11, 22), date(2026, 11, 24), site="s1"),
    Filters(date(2026, 11, 20), date(2026, 11, 28), terminal="t2"),
    Filters(date(2026, 11, 20), date(2026, 11, 28), sites=frozenset({"s2"})),
    Filters(date(2026, 11, 20), date(2026, 11, 28), sites=frozenset()),
]


#: Three keys (MAX_BY): some only the finest daily rollup holds, some a monthly one.
THREE_KEYS = [("hour", "weekday", "site"), ("hour", "reason", "lang"), ("terminal", "age_group", "input"),
              ("day", "site", "reason"), ("site", "terminal", "lang"), ("reason", "age_group", "lang")]


def check_everything(store, suspect):
    for base in FILTERS:
        filters = Filters(base.date_from, base.date_to, base.site, base.terminal, base.sites, suspect)
        assert store.summary(filters) == store.summary_raw(filters)
        for by in [(k,) for k in AGGREGATE_KEYS] + list(combinations(AGGREGATE_KEYS, 2)) + THREE_KEYS:
            found = store.aggregates(by, filters)
            assert dict(found) == raw_aggregates(store, by, filters), (by, filters)
            # Plain ints (a Decimal would compare equal above, and not go into JSON).
            assert {type(n) for _, dist in found for n in dist.values()} <= {int}, (by, filters)


@pytest.mark.parametrize("suspect", [None, False, True])
def test_rollups_equal_group_by(store, suspect):
    check_everything(store, suspect)


def test_flagging_suspects_moves_counts_and_deletes_nothing(store):
    total = store.counts()["ratings"]
    everything = Filters(date(2026, 9, 1), date(2027, 1, 31))
    before = store.summary(everything)
    pks = [row["pk"] for row in store.ratings_after(0)][::3]
    assert store.mark_suspect(pks) == len(pks)
    assert store.mark_suspect(pks) == 0  # flagging twice moves nothing
    assert store.counts()["ratings"] == total
    assert store.summary(everything) == before
    clean = store.summary(Filters(everything.date_from, everything.date_to, suspect=False))
    flagged = store.summary(Filters(everything.date_from, everything.date_to, suspect=True))
    assert sum(flagged.values()) == len(pks)
    assert {s: clean[s] + flagged[s] for s in before} == before
    for suspect in (None, False, True):
        check_everything(store, suspect)


ROLL_VIEWS = [(), ("hour",), ("day", "reason"), ("terminal", "age_group"), ("weekday", "lang"),
              ("site", "input")]


def answers(store, filters):
    return [store.aggregates(by, filters) for by in ROLL_VIEWS]


def assert_rollups_hold_exactly_the_ratings(store):
    """With nothing queued, each rollup is what a GROUP BY over the ratings makes of them."""
    assert store.counts()["rollup_queue"] == 0
    for name, dims in ROLLUPS:
        picked = ", ".join("substr(day, 1, 7)" if d == "month" else f"coalesce({d}, '')" if d in NULLABLE
                           else d for d in dims)
        ours = sorted(tuples(store, f"SELECT {', '.join(dims)}, suspect, {', '.join(SCORE_COUNTS)} FROM {name}"))
        theirs = sorted(tuples(store, f"SELECT {picked}, suspect, {', '.join(score_counts('score', '1'))}"
                                      f" FROM ratings GROUP BY {picked}, suspect"))
        assert ours == theirs, name


def random_batch(rng, seq, size):
    return [Rating(id=str(uuid.uuid4()), seq=seq + i, score=rng.randint(1, 5),
                   at=f"2026-11-{rng.randint(1, 30):02d}T{rng.randint(8, 19):02d}:10:00.000+09:00",
                   clock_synced=True, reason=rng.choice([None, "wait_time", "other"]),
                   age_group=rng.choice([None, "30s", "70plus"]), lang=rng.choice(["ko", "en"]),
                   input=rng.choice(["touch", "button"])) for i in range(size)]


def test_rolling_up_changes_no_answer_and_leaves_the_rollups_exact(backend):
    store = backend.open()
    rng = random.Random(21)
    november = Filters(date(2026, 11, 1), date(2026, 11, 30))
    views = [november, Filters(november.date_from, november.date_to, suspect=False),
             Filters(date(2026, 11, 3), date(2026, 11, 17), terminal="t2")]
    seq = 0
    for step in range(12):
        terminal = rng.choice(["t1", "t2"])
        store.ingest_batch("s1", terminal, random_batch(rng, seq + 1, rng.randint(1, 40)), RECEIVED)
        seq += 40
        if step % 4 == 3:
            store.mark_suspect([row["pk"] for row in store.ratings_after(0)][step::5])
        before = [answers(store, f) for f in views]
        moved = store.roll_up(limit=rng.randint(1, 30))
        assert moved > 0
        assert [answers(store, f) for f in views] == before
        for filters in views:
            assert store.summary(filters) == store.summary_raw(filters)
    while store.roll_up(limit=25):
        pass
    assert store.roll_up() == 0  # nothing left
    assert_rollups_hold_exactly_the_ratings(store)
    store.close()


def test_a_failed_roll_up_loses_nothing(backend, monkeypatch):
    store = backend.open()
    store.ingest_batch("s1", "t1", random_batch(random.Random(3), 1, 50), RECEIVED)
    november = Filters(date(2026, 11, 1), date(2026, 11, 30))
    before, queued = answers(store, november), store.counts()["rollup_queue"]

    def broken(counts):
        # As a full disk would fail the rollups' upserts, after the queue rows were taken.
        raise store.dialect.error("database or disk is full")
    monkeypatch.setattr(store, "_add_to_rollups", broken)
    with pytest.raises(StoreError):
        store.roll_up()
    assert store.counts()["rollup_queue"] == queued
    assert answers(store, november) == before
    monkeypatch.undo()
    assert store.roll_up() == queued
    assert answers(store, november) == before
    assert_rollups_hold_exactly_the_ratings(store)
    store.close()


def test_roll_ups_and_ingest_at_once_count_every_rating_once(backend):
    """Two connections rolling up while a third ingests and marks suspects: on
    PostgreSQL one roll-up runs at a time (the other finds the lock taken and
    returns 0), on SQLite they take turns on the write lock; no count is lost
    or moved twice, and no deadlock fails either."""
    writer, rollers = backend.open(), [backend.open(), backend.open()]
    stop, failures, moved = threading.Event(), [], []

    def roll(store):
        try:
            while not stop.is_set():
                moved.append(store.roll_up(limit=7))
        except Exception as exc:  # noqa: BLE001 - the test reports it
            failures.append(exc)
    threads = [threading.Thread(target=roll, args=(s,)) for s in rollers]
    for thread in threads:
        thread.start()
    rng = random.Random(5)
    try:
        for i in range(30):
            writer.ingest_batch("s1", f"t{i % 3}", random_batch(rng, i * 20 + 1, 20), RECEIVED)
            if i % 10 == 9:
                writer.mark_suspect([row["pk"] for row in writer.ratings_after(0)][i::4])
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert not failures
    assert sum(moved) > 0
    while writer.roll_up():
        pass
    assert_rollups_hold_exactly_the_ratings(writer)
    november = Filters(date(2026, 11, 1), date(2026, 11, 30))
    assert sum(writer.summary(november).values()) == 600
    for store in (writer, *rollers):
        store.close()


def test_only_one_roll_up_runs_at_a_time(backend):
    first, second = backend.open(), backend.open()
    first.ingest_batch("s1", "t1", random_batch(random.Random(4), 1, 10), RECEIVED)
    queued = first.counts()["rollup_queue"]
    if first.dialect.name == "postgresql":
        with first.transaction():
            assert first.dialect.exclusive(ROLL_UP_JOB)
            assert second.roll_up() == 0  # told at once, not made to wait
        assert second.counts()["rollup_queue"] == queued
    assert second.roll_up() == queued
    first.close()
    second.close()


def test_rollups_are_built_for_an_existing_database(tmp_path):
    # A database made before the rollups existed gets them filled by the migration.
    from sqlite_utils import Database

    from tests.legacy_schema import migrations
    path = tmp_path / "old.db"
    db = Database(path)
    migrations.apply(db, stop_before="m002_rollups_suspect_staff")
    db.execute("INSERT INTO ratings (id, site, terminal, seq, score, at, clock_synced, lang, input,"
               " received_at, day, hour, weekday) VALUES ('a', 's', 't', 1, 4, 'x', 1, 'ko', 'touch',"
               " 'y', '2026-11-27', 10, 5)")
    db.conn.commit()
    db.conn.close()
    store = SQLiteStore.open(path)
    assert store.summary(Filters(date(2026, 11, 27), date(2026, 11, 27)))[4] == 1
    store.close()


def test_postgres_migrations_are_versioned_and_run_once(postgres_database):
    import psycopg

    from server.schema import MIGRATIONS
    from server.store import PostgresStore
    url = postgres_database.new_schema()
    PostgresStore.open(url).close()
    PostgresStore.open(url).close()  # nothing left to do, nothing fails
    with psycopg.connect(url, autocommit=True) as conn:
        names = [row[0] for row in conn.execute("SELECT name FROM onetap_migrations ORDER BY name")]
        assert names == [name for name, _ in MIGRATIONS]
    postgres_database.drop_schema(url)


def expand(parts):
    """How often a range_parts() answer counts each local day (days taken off a month: -1)."""
    counted = Counter()
    for _, column, low, high, sign in parts:
        if column == "month":
            low, high = f"{low}-01", f"{high}-31"
        day = date.fromisoformat(low)
        while day.isoformat() <= high:
            counted[day] += sign
            day += timedelta(days=1)
    return {day: n for day, n in counted.items() if n}


def test_range_parts_count_every_day_once():
    rng = random.Random(14)
    for _ in range(600):
        first = date(2024, 1, 1) + timedelta(days=rng.randint(0, 1200))
        last = first + timedelta(days=rng.randint(-1, 800))
        for needed in ({"site"}, {"hour", "reason"}, {"weekday", "hour"}, {"terminal", "lang"}, {"day"},
                       {"weekday", "reason"}, {"hour", "reason", "lang"}):
            parts = range_parts(needed, first, last)
            assert expand(parts) == {first + timedelta(days=i): 1 for i in range((last - first).days + 1)}
            days = [p for p in parts if p[1] == "day"]
            if needed in ({"day"}, {"hour", "reason", "lang"}):
                # By day, or no monthly rollup holds them: the days themselves.
                assert parts == [(smallest_rollup(needed), "day", first.isoformat(), last.isoformat(), 1)]
            else:
                # At most half a month's days at either end, read or taken off.
                assert sum(len(expand([(*p[:4], 1)])) for p in days) <= 31 and len(days) <= 4


def test_range_parts_split_at_months():
    assert range_parts({"hour", "reason"}, date(2026, 1, 15), date(2026, 4, 10)) == [
        ("roll_site_hour_reason", "day", "2026-01-01", "2026-01-14", -1),
        ("roll_site_hour_reason", "day", "2026-04-01", "2026-04-10", 1),
        ("roll_month_hour_reason", "month", "2026-01", "2026-03", 1)]
    assert range_parts({"terminal"}, date(2025, 12, 1), date(2026, 2, 28)) == [
        ("roll_month_terminal", "month", "2025-12", "2026-02", 1)]
    assert range_parts(set(), date(2026, 1, 10), date(2026, 1, 20)) == [
        ("roll_site_day", "day", "2026-01-10", "2026-01-20", 1)]
    assert range_parts({"weekday"}, date(2026, 1, 2), date(2026, 1, 30)) == [
        ("roll_site_day", "day", "2026-01-01", "2026-01-01", -1),
        ("roll_site_day", "day", "2026-01-31", "2026-01-31", -1),
        ("roll_month_weekday_reason", "month", "2026-01", "2026-01", 1)]
    # A leap year's February ends on the 29th.
    assert range_parts(set(), date(2028, 2, 1), date(2028, 2, 28)) == [
        ("roll_site_day", "day", "2028-02-29", "2028-02-29", -1), ("roll_month_site", "month", "2028-02", "2028-02", 1)]
    assert range_parts(set(), date(2028, 2, 1), date(2028, 2, 29)) == [
        ("roll_month_site", "month", "2028-02", "2028-02", 1)]
    assert range_parts(set(), date(1, 1, 1), date(9999, 12, 31)) == [
        ("roll_month_site", "month", "0001-01", "9999-12", 1)]
    assert range_parts(set(), date(1, 1, 2), date(9999, 12, 30)) == [
        ("roll_site_day", "day", "0001-01-01", "0001-01-01", -1),
        ("roll_site_day", "day", "9999-12-31", "9999-12-31", -1),
        ("roll_month_site", "month", "0001-01", "9999-12", 1)]


@pytest.mark.parametrize("zone, december", [("Asia/Seoul", 1), ("UTC", 0)])
def test_a_month_is_the_local_calendar_month(backend, zone, december):
    # 15:30 UTC on 30 November is already 1 December in Seoul: its month is December there.
    store = backend.open(zone)
    store.ingest_batch("s1", "t1", [Rating(id=str(uuid.uuid4()), seq=1, score=3, at="2026-11-30T15:30:00.000+00:00",
                                           clock_synced=True)], RECEIVED)
    assert range_parts({"hour"}, date(2026, 12, 1), date(2026, 12, 31))[0][1:] == ("month", "2026-12", "2026-12", 1)
    for by in ((), ("hour",), ("weekday", "hour"), ("site", "terminal")):
        december_counts = store.aggregates(by, Filters(date(2026, 12, 1), date(2026, 12, 31)))
        november_counts = store.aggregates(by, Filters(date(2026, 11, 1), date(2026, 11, 30)))
        assert (len(december_counts), len(november_counts)) == (december, 1 - december), by
    assert sum(store.summary(Filters(date(2026, 12, 1), date(2026, 12, 31))).values()) == december
    store.close()


@pytest.mark.parametrize("migration", ["m008", "m010"])
def test_new_rollups_are_filled_from_the_counts_even_of_pruned_days(backend, migration):
    # A database from before the migration: its ratings of October are pruned, still counted in the rollups.
    store = backend.open()
    rng = random.Random(8)
    batch = [Rating(id=str(uuid.uuid4()), seq=i + 1, score=rng.randint(1, 5),
                    at=(f"2026-{rng.choice([10, 11, 12])}-{rng.randint(1, 28):02d}"
                        f"T{rng.randint(8, 19):02d}:00:00.000+09:00"),
                    clock_synced=True, reason=rng.choice([None, "wait_time"]), age_group=rng.choice([None, "30s"]),
                    input=rng.choice(["touch", "button"]))
             for i in range(300)]
    store.ingest_batch("s1", "t1", batch, RECEIVED)
    store.ingest_batch("s2", "t1", batch[:100], RECEIVED)
    store.mark_suspect([row["pk"] for row in store.ratings_after(0)][::7])
    # A few counts rolled up into the rollups, the rest still queued when the migration runs.
    assert store.roll_up(limit=4) == 4
    quarter = Filters(date(2026, 10, 1), date(2026, 12, 31))
    views = [(by, Filters(quarter.date_from, quarter.date_to, site, terminal, suspect=suspect))
             for by in [(), ("hour", "reason"), ("weekday", "hour"), ("terminal", "input"), ("day", "age_group")]
             for site, terminal in [(None, None), ("s1", None), ("s1", "t1"), (None, "t1")]
             for suspect in (None, False, True)]
    before = {view: store.aggregates(*view) for view in views}
    assert store.prune_ratings("2026-11-01") > 0
    new_tables = [step.table for name, steps in MIGRATIONS if name.startswith(migration) for step in steps
                  if isinstance(step, FillRollup)]
    for table in new_tables:
        execute(store, f"DROP TABLE {table}")
    # Every other rollup back as it was before m011 (a row per score), for m011 to run again after.
    for name, dims in ROLLUPS:
        if name not in new_tables:
            back_to_a_row_per_score(store, name, (*dims, *rollup_tail(dims)))
    record = "_sqlite_migrations" if store.dialect.name == "sqlite" else "onetap_migrations"
    execute(store, f"DELETE FROM {record} WHERE name LIKE '{migration}%' OR name LIKE 'm011%'")
    store.close()
    store = backend.open()  # the migration again: the tables are made and filled
    for view, expected in before.items():
        assert store.aggregates(*view) == expected, view
    while store.roll_up(limit=3):  # the queued counts reach the new tables too
        pass
    assert {table for table in new_tables if tuples(store, f"SELECT count(*) FROM {table}")[0][0]} == set(new_tables)
    for view, expected in before.items():
        assert store.aggregates(*view) == expected, view
    # Every new rollup holds exactly what roll_all holds, by its own key (a month
    # being its days' first seven characters).
    for table in new_tables:
        dims = dict(ROLLUPS)[table]
        theirs_cols = ", ".join((*dims, "suspect"))
        ours_cols = ", ".join("substr(day, 1, 7)" if d == "month" else d for d in (*dims, "suspect"))
        order = f"ORDER BY {', '.join(str(i + 1) for i in range(len(dims) + 1))}"
        theirs = tuples(store, f"SELECT {theirs_cols}, {', '.join(SCORE_COUNTS)} FROM {table} {order}")
        ours = tuples(store, f"SELECT {ours_cols}, {', '.join(f'sum({c})' for c in SCORE_COUNTS)}"
                             f" FROM roll_all GROUP BY {ours_cols} {order}")
        assert theirs == ours, table
    store.close()


def back_to_a_row_per_score(store, name, columns):
    execute(store, f"ALTER TABLE {name} RENAME TO {name}_wide")
    sql, = render(CreateTable(BY_SCORE_TABLES[name]), store.dialect.types, store.dialect.clustered)
    execute(store, sql)
    execute(store, f"INSERT INTO {name} ({', '.join(columns)}, score, n) "
            + " UNION ALL ".join(f"SELECT {', '.join(columns)}, {score}, {count} FROM {name}_wide WHERE {count} <> 0"
                                 for score, count in enumerate(SCORE_COUNTS, 1)))
    execute(store, f"DROP TABLE {name}_wide")


def test_a_rollup_keyed_by_site_or_terminal_first_is_read_only_when_the_filters_pin_it():
    first, last = date(2024, 1, 1), date(2026, 11, 27)
    keyed_first = {name: dims[0] for name, dims in ROLLUPS if dims[0] not in ("day", "month")}
    assert keyed_first  # the routing below is exercised
    for by in [(k,) for k in AGGREGATE_KEYS] + list(combinations(AGGREGATE_KEYS, 2)):
        for pinned in (set(), {"site"}, {"terminal"}, {"site", "terminal"}):
            for table, *_ in range_parts(set(by) | pinned, first, last, pinned):
                if table in keyed_first:
                    assert keyed_first[table] in pinned, (by, pinned, table)
    # One terminal by two fine keys over years: its own rows, months from a terminal-first rollup.
    assert range_parts({"site", "terminal", "hour", "reason"}, date(2024, 1, 1), date(2026, 12, 31),
                       {"site", "terminal"}) == [
        ("roll_terminal_month_hour_reason_lang_input", "month", "2024-01", "2026-12", 1)]
    # A day by hour: summed over sites when no site is asked for, else keyed by the site or terminal asked for.
    assert range_parts({"day", "hour"}, first, last)[0][0] == "roll_total_hour"
    assert range_parts({"day", "hour", "site"}, first, last, {"site"})[0][0] == "roll_site_first_hour"
    assert range_parts({"day", "hour", "site", "terminal"}, first, last,
                       {"site", "terminal"})[0][0] == "roll_terminal_first_hour"
    assert range_parts({"day", "hour", "site"}, first, last)[0][0] == "roll_site_hour"


def test_every_rollup_answers_some_query_checked_against_group_by():
    # check_everything compares each answer with a GROUP BY: a rollup no query of it
    # reads would go unchecked.
    read = set()
    for base in FILTERS:
        pinned = filter_columns(base)
        for by in [()] + [(k,) for k in AGGREGATE_KEYS] + list(combinations(AGGREGATE_KEYS, 2)) + THREE_KEYS:
            read |= {part[0] for part in range_parts(set(by) | pinned, base.date_from, base.date_to, pinned)}
    assert read == {name for name, _ in ROLLUPS}
