"""The store's rollup tables answer exactly what a GROUP BY over the ratings would, suspects included."""

import random
import uuid
from datetime import date, datetime, timezone
from itertools import combinations

import pytest

from kiosk.protocol import AGE_GROUPS, Rating
from server.aggregate import AGGREGATE_KEYS, empty_distribution
from server.store import Filters, SQLiteStore
from tests.backends import BACKENDS, make_backend, tuples

RECEIVED = datetime(2026, 11, 27, 1, 30, tzinfo=timezone.utc)


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
    for _ in range(40):
        site, terminal = rng.choice(["s1", "s2"]), rng.choice(["t1", "t2", "t3"])
        batch = []
        for _ in range(rng.randint(1, 30)):
            seq[site, terminal] = seq.get((site, terminal), 0) + 1
            day = rng.randint(20, 28)
            batch.append(Rating(
                id=str(uuid.uuid4()), seq=seq[site, terminal], score=rng.randint(1, 5),
                at=f"2026-11-{day:02d}T{rng.randint(8, 19):02d}:{rng.randint(0, 59):02d}:00.000+09:00",
                clock_synced=rng.random() < 0.9, reason=rng.choice([None, None, "wait_time", "other"]),
                age_group=rng.choice([None, *AGE_GROUPS]), lang=rng.choice(["ko", "en"]),
                input=rng.choice(["touch", "button"])))
        store.ingest_batch(site, terminal, batch, RECEIVED)
        # resends are duplicates and change no count
        store.ingest_batch(site, terminal, batch[:3], RECEIVED)
    yield store
    store.close()
    backend.close()


FILTERS = [
    Filters(date(2026, 11, 1), date(2026, 11, 30)),
    Filters(date(2026, 11, 22), date(2026, 11, 24), site="s1"),
    Filters(date(2026, 11, 20), date(2026, 11, 28), terminal="t2"),
    Filters(date(2026, 11, 20), date(2026, 11, 28), sites=frozenset({"s2"})),
    Filters(date(2026, 11, 20), date(2026, 11, 28), sites=frozenset()),
]


def check_everything(store, suspect):
    for base in FILTERS:
        filters = Filters(base.date_from, base.date_to, base.site, base.terminal, base.sites, suspect)
        assert store.summary(filters) == store.summary_raw(filters)
        for by in [(k,) for k in AGGREGATE_KEYS] + list(combinations(AGGREGATE_KEYS, 2)):
            assert dict(store.aggregates(by, filters)) == raw_aggregates(store, by, filters), (by, filters)


@pytest.mark.parametrize("suspect", [None, False, True])
def test_rollups_equal_group_by(store, suspect):
    check_everything(store, suspect)


def test_flagging_suspects_moves_counts_and_deletes_nothing(store):
    total = store.counts()["ratings"]
    everything = Filters(date(2026, 11, 1), date(2026, 11, 30))
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
