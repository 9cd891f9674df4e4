"""Store query speed with many ratings: rollup answers vs a plain GROUP BY over the ratings table.

    .venv/bin/python bench/bench_store.py --ratings 10000000 --db /tmp/onetap-bench.db
    .venv/bin/python bench/bench_store.py --ingest-only --repeat 7 [--postgres] [--varied]
    .venv/bin/python bench/bench_store.py --reuse --all-keys [--postgres-queries 2000000]

Generates the ratings (3 sites x 10 terminals, ~3 years, realistic optional
fields) with executemany in big transactions, fills the rollups as the
migration does, then times summary/aggregates for several ranges (median of
5 runs) both ways, the dashboard's first view, and ingest_batch throughput.
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import sys
import time
import uuid
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kiosk.protocol import AGE_GROUPS, Rating  # noqa: E402
from server.store import Filters, SQLiteStore  # noqa: E402

SITES = ("gangnam-office", "seocho-office", "songpa-office")
TERMINALS = tuple(f"counter-{i:02d}" for i in range(1, 11))
REASONS = ("wait_time", "staff_attitude", "resolution", "information", "facilities", "other")


def generate(store: SQLiteStore, total: int, last_day: date, rng: random.Random) -> tuple[date, date]:
    per_day_terminal = 305
    days = max(1, total // (per_day_terminal * len(SITES) * len(TERMINALS)))
    first_day = last_day - timedelta(days=days - 1)
    conn = store.db.conn
    sql = ("INSERT INTO ratings (id, site, terminal, seq, score, at, clock_synced, reason, age_group, lang,"
           " input, received_at, day, hour, weekday) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
    made, started = 0, time.perf_counter()
    seqs = {}
    batch = []
    scores, weights = (1, 2, 3, 4, 5), (4, 6, 15, 35, 40)
    for d in range(days):
        day = first_day + timedelta(days=d)
        day_text, weekday = day.isoformat(), day.isoweekday()
        for site in SITES:
            for terminal in TERMINALS:
                n = min(per_day_terminal, total - made)
                if n <= 0:
                    break
                seq = seqs.get((site, terminal), 0)
                for score in rng.choices(scores, weights, k=n):
                    seq += 1
                    hour = rng.randint(9, 17)
                    at = f"{day_text}T{hour:02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}.000+09:00"
                    reason = rng.choice(REASONS) if score <= 2 and rng.random() < 0.7 else None
                    age = rng.choice(AGE_GROUPS) if rng.random() < 0.3 else None
                    lang = "ko" if rng.random() < 0.93 else "en"
                    batch.append((f"{rng.getrandbits(128):032x}", site, terminal, seq, score, at, 1, reason, age,
                                  lang, "touch" if rng.random() < 0.9 else "button", at, day_text, hour, weekday))
                seqs[site, terminal] = seq
                made += n
                if len(batch) >= 200_000:
                    with store.db.atomic():
                        conn.executemany(sql, batch)
                    batch.clear()
                    rate = made / (time.perf_counter() - started)
                    print(f"\r  generated {made:,} ratings ({rate:,.0f}/s)", end="", file=sys.stderr, flush=True)
    if batch:
        with store.db.atomic():
            conn.executemany(sql, batch)
    print(file=sys.stderr)
    # Fill the rollups as the migrations would: the fullest from ratings, the rest from it.
    from server.dialect import SQLite
    from server.schema import FULLEST_ROLLUP, ROLLUPS, FillRollup, render

    started = time.perf_counter()
    with store.db.atomic():
        for name, _ in ROLLUPS:
            conn.execute(f"DELETE FROM {name}")
        for name in (FULLEST_ROLLUP, *(name for name, _ in ROLLUPS if name != FULLEST_ROLLUP)):
            source = None if name == FULLEST_ROLLUP else FULLEST_ROLLUP
            for statement in render(FillRollup(name, source), SQLite.types, SQLite.clustered):
                conn.execute(statement)
    print(f"  rollups filled in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return first_day, last_day


def timed(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def raw_aggregates(store, by, filters: Filters):
    where, params = store._where(filters)
    cols = ", ".join(by)
    return store._rows(f"SELECT {cols}, score, count(*) FROM ratings WHERE {where} GROUP BY {cols}, score", params)


def raw_groups(store, by, filters: Filters) -> dict:
    """raw_aggregates as aggregates() answers it (no answer as None, a distribution per key)."""
    groups: dict = {}
    for *key, score, count in raw_aggregates(store, by, filters):
        groups.setdefault(tuple(key), {s: 0 for s in range(1, 6)})[score] = count
    return groups


def bench_queries(store, first: date, last: date, all_keys: bool) -> float:
    """summary and aggregates from the rollups against a plain GROUP BY over ratings
    (any backend); the slowest rollup answer in ms."""
    ranges = {
        "1 day": Filters(last, last),
        "30 days": Filters(last - timedelta(days=29), last),
        "1 year": Filters(last - timedelta(days=364), last),
        "everything": Filters(first, last),
        "everything, 1 site": Filters(first, last, site=SITES[0]),
        "everything, 1 terminal": Filters(first, last, site=SITES[1], terminal=TERMINALS[3]),
        "everything, exclude suspect": Filters(first, last, suspect=False),
    }
    print(f"\n{'query':<52} {'rollup ms':>10} {'GROUP BY ms':>12}")
    worst = 0.0
    for label, filters in ranges.items():
        fast = timed(lambda: store.summary(filters))
        slow = timed(lambda: store.summary_raw(filters), repeat=1)
        assert store.summary(filters) == store.summary_raw(filters)
        worst = max(worst, fast)
        print(f"summary {label:<44} {fast:>10.1f} {slow:>12.0f}")
    for by in (("day",), ("hour", "weekday"), ("site", "terminal"), ("reason",), ("age_group", "lang"),
               ("hour", "reason"), ("terminal", "input")):
        for label in ("1 year", "everything"):
            filters = ranges[label]
            fast = timed(lambda: store.aggregates(by, filters))
            slow = timed(lambda: raw_aggregates(store, by, filters), repeat=1)
            assert {key: dist for key, dist in store.aggregates(by, filters)} == raw_groups(store, by, filters), by
            worst = max(worst, fast)
            print(f"aggregates by={','.join(by):<18} {label:<24} {fast:>10.1f} {slow:>12.0f}")
    if all_keys:
        # Every by of one or two keys over every range (rollups only: the plain
        # GROUP BY takes seconds each); a split near the widest: a month less
        # 15 days, a month, 16 days.
        ranges["Aug 16 - Oct 15: 31 days + 2 months"] = Filters(date(2026, 8, 16), date(2026, 10, 15))
        ranges["everything, sites scope (2)"] = Filters(first, last, sites=frozenset(SITES[:2]))
        keys = ("day", "hour", "weekday", "site", "terminal", "reason", "age_group", "lang", "input")
        slowest = []
        for by in [(k,) for k in keys] + list(itertools.combinations(keys, 2)):
            for label, filters in ranges.items():
                slowest.append((timed(lambda: store.aggregates(by, filters), repeat=3), ",".join(by), label))
        slowest.sort(reverse=True)
        over = [entry for entry in slowest if entry[0] > 50]
        print(f"\nevery by of 1-2 keys x {len(ranges)} ranges: {len(slowest)} queries,"
              f" {len(over)} over 50 ms; median {statistics.median(e[0] for e in slowest):.1f} ms")
        for ms, by, label in over or slowest[:5]:
            print(f"  {ms:8.1f} ms  by={by:<20} {label}")
        worst = max(worst, slowest[0][0])
    return worst


def postgres_queries(source: SQLiteStore, limit: int, all_keys: bool) -> float:
    """bench_queries on PostgreSQL: the newest *limit* ratings of *source* copied into a
    fresh database (ONETAP_TEST_POSTGRES), its rollups filled as the migrations fill them."""
    from server.schema import FULLEST_ROLLUP, ROLLUPS, FillRollup, render
    from server.store import PostgresStore
    from tests.backends import PostgresDatabase

    columns = ("id, site, terminal, seq, score, at, clock_synced, reason, age_group, lang, input,"
               " received_at, day, hour, weekday")
    database = PostgresDatabase().create(durable=True)
    try:
        store = PostgresStore.open(database.url)
        started = time.perf_counter()
        top = source.db.conn.execute("SELECT max(pk) FROM ratings").fetchone()[0]
        with store.conn.cursor() as cur, cur.copy(f"COPY ratings ({columns}) FROM STDIN") as copy:
            for row in source.db.conn.execute(f"SELECT {columns} FROM ratings WHERE pk > ?", [top - limit]):
                copy.write_row(row)
        print(f"  copied {limit:,} ratings in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        started = time.perf_counter()
        with store.conn.transaction():
            for name in (FULLEST_ROLLUP, *(name for name, _ in ROLLUPS if name != FULLEST_ROLLUP)):
                source_table = None if name == FULLEST_ROLLUP else FULLEST_ROLLUP
                for statement in render(FillRollup(name, source_table), store.dialect.types, ""):
                    store.conn.execute(statement)
        store.conn.execute("VACUUM ANALYZE")
        print(f"  rollups filled in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        first, last = (date.fromisoformat(d) for d in store._rows("SELECT min(day), max(day) FROM ratings")[0])
        print(f"PostgreSQL: {store.counts()['ratings']:,} ratings from {first} to {last}")
        worst = bench_queries(store, first, last, all_keys)
        store.close()
        return worst
    finally:
        database.drop()


def bench_chain_ingest(path: Path, db: str | None = None, batches: int = 100) -> None:
    """Ingest.handle() of the same 500-rating batches, audit chain off (unchained, unsigned)
    and on (chained, signed, the key registered: signature, links and state verified), in one run."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from kiosk import protocol
    from server.backend import open_store
    from server.ingest import Ingest

    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    seconds_by: dict[bool, list[float]] = {False: [], True: []}
    # Alternating rounds, medians: a warm-up or a neighbour's burst does not favour either side.
    for round_no, chained in [(r, c) for r in range(3) for c in (False, True)]:
        target = db or str(path.with_suffix(f".chain-{int(chained)}-{round_no}.db"))
        store = open_store(target)
        terminal = f"t-{int(chained)}-{uuid.uuid4().hex[:6]}"
        head = protocol.default_chain_seed("s1", terminal, public)
        payloads = []
        for b in range(batches):
            ratings = []
            for i in range(500):
                rating = Rating(id=str(uuid.uuid4()), seq=b * 500 + i + 1, score=random.randint(1, 5),
                                at=f"2026-11-27T10:{i % 60:02d}:00.000+09:00", clock_synced=True,
                                reason=random.choice([None, "wait_time"]), age_group=random.choice([None, "30s"]))
                if chained:
                    head = protocol.chain_next(head, rating)
                    rating = Rating(**{**rating.to_dict(), "chain": head})
                ratings.append(rating.encode())
            sig = base64.b64encode(key.sign(protocol.head_message(head))).decode() if chained else None
            payloads.append(protocol.encode_batch("s1", terminal, ratings, sig))
        ingest = Ingest(store, public_key=lambda site, name: public if chained else None)
        topic = protocol.topic("s1", terminal, "ratings")
        started = time.perf_counter()
        for payload in payloads:
            ingest.handle([(topic, payload)])
        seconds_by[chained].append(time.perf_counter() - started)
        store.close()
        if not target.startswith("postgresql"):
            for suffix in ("", "-wal", "-shm"):
                Path(target + suffix).unlink(missing_ok=True)
    total = 500 * batches
    for chained in (False, True):
        seconds = statistics.median(seconds_by[chained])
        print(f"Ingest.handle, audit chain {'on ' if chained else 'off'} ({'postgres' if db else 'sqlite'}):"
              f" {total / seconds:,.0f} ratings/s, {seconds / total * 1e6:.1f} µs per rating"
              f" (median of 3, {batches} batches of 500)")


def ingest_rate(open_store, now: datetime, batches: int = 100, varied: bool = False) -> float:
    """ratings/s of ingest_batch: *batches* batches of 500 into a fresh store, one
    FULL commit each, rollups included (the same calls before and after a change;
    with the rollup queue, the roll-ups too).

    Like a live batch, each is one terminal's taps within an hour; *varied*: 4
    terminals, 3 days, 7 hours, every answer at random, so nearly every rating is
    its own key in every rollup (the worst case for the rollups' upserts)."""
    rng = random.Random(3)
    if varied:
        work = [[Rating(id=str(uuid.UUID(int=rng.getrandbits(128), version=4)), seq=b * 500 + i + 1,
                        score=rng.randint(1, 5),
                        at=(f"2026-11-{rng.randint(25, 27):02d}T{rng.randint(8, 14):02d}"
                            f":{rng.randint(0, 59):02d}:00.000+09:00"),
                        clock_synced=True, reason=rng.choice([None, *REASONS[:4]]),
                        age_group=rng.choice([None, *AGE_GROUPS]), lang=rng.choice(["ko", "en"]),
                        input=rng.choice(["touch", "button"]))
                 for i in range(500)] for b in range(batches)]
    else:
        work = [[Rating(id=str(uuid.UUID(int=rng.getrandbits(128), version=4)), seq=b * 500 + i + 1,
                        score=rng.randint(1, 5), at=f"2026-11-27T10:{i % 60:02d}:00.000+09:00",
                        clock_synced=True, reason=rng.choice([None, "wait_time"]),
                        age_group=rng.choice([None, "30s"]))
                 for i in range(500)] for b in range(batches)]
    store = open_store()
    # Code with the rollup queue: the counts are moved every 10 batches (5,000
    # ratings, about what a worker rolls up each second at 5,000 taps/s) and at
    # the end, inside the time measured, so both sides do all their work.
    roll_up = getattr(store, "roll_up", None)
    started, cpu = time.perf_counter(), time.process_time()
    for b, batch in enumerate(work):
        store.ingest_batch("s1", f"t{b % 4}" if varied else "t1", batch, now)
        if roll_up is not None and b % 10 == 9:
            roll_up()
    while roll_up is not None and roll_up():
        pass
    rate = batches * 500 / (time.perf_counter() - started)
    #: Ratings per second of this process's own CPU: on a shared machine the
    #: wall-clock figure moves with the neighbours' load, this much less.
    ingest_rate.per_cpu_s = batches * 500 / (time.process_time() - cpu)
    store.close()
    return rate


def ingest_only(repeat: int, postgres: bool, workdir: Path, varied: bool = False) -> int:
    """The ingest figure alone, *repeat* times on fresh stores; prints each and the median."""
    now = datetime(2026, 11, 27, 6, 0, tzinfo=timezone.utc)
    from server.backend import open_store

    rates, per_cpu = [], []
    for run in range(repeat):
        if postgres:
            from tests.backends import PostgresDatabase

            database = PostgresDatabase().create(durable=True)
            try:
                rates.append(ingest_rate(lambda: open_store(database.url), now, varied=varied))
            finally:
                database.drop()
        else:
            path = workdir / f"ingest-{run}.db"
            rates.append(ingest_rate(lambda: open_store(path), now, varied=varied))
            for suffix in ("", "-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)
        per_cpu.append(ingest_rate.per_cpu_s)
        print(f"  run {run + 1}: {rates[-1]:,.0f} ratings/s", file=sys.stderr)
    kind = f"{'postgresql' if postgres else 'sqlite'}{', varied' if varied else ''}"
    print(f"ingest_batch ({kind}): median {statistics.median(rates):,.0f}"
          f" ratings/s over {repeat} runs (min {min(rates):,.0f}, max {max(rates):,.0f});"
          f" median {statistics.median(per_cpu):,.0f} ratings per CPU-second")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", type=int, default=10_000_000)
    parser.add_argument("--db", default="/tmp/onetap-bench.db")
    parser.add_argument("--reuse", action="store_true", help="keep an existing database of the right size")
    parser.add_argument("--ingest-only", action="store_true", help="only the ingest figure, --repeat times")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--all-keys", action="store_true",
                        help="also time every by of one or two keys over every range (rollups only)")
    parser.add_argument("--postgres", action="store_true",
                        help="--ingest-only into a fresh PostgreSQL database (ONETAP_TEST_POSTGRES)")
    parser.add_argument("--varied", action="store_true",
                        help="--ingest-only with varied batches (every rating its own rollup key)")
    parser.add_argument("--postgres-queries", type=int, metavar="N",
                        help="the query benchmark on PostgreSQL instead, with the newest N ratings of --db")
    parser.add_argument("--chain-only", action="store_true",
                        help="only Ingest.handle with the audit chain off and on (no big database)")
    parser.add_argument("--chain-postgres", metavar="URL",
                        help="with --chain-only: also on this PostgreSQL database")
    args = parser.parse_args()
    path = Path(args.db)
    if args.ingest_only:
        return ingest_only(args.repeat, args.postgres, path.parent, args.varied)
    if args.chain_only:
        bench_chain_ingest(path)
        if args.chain_postgres:
            bench_chain_ingest(path, args.chain_postgres)
        return 0
    today = date(2026, 11, 27)
    if not args.reuse:
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
    store = SQLiteStore.open(path)
    count = store.db.conn.execute("SELECT count(*) FROM ratings").fetchone()[0]
    if count == 0:
        print(f"generating {args.ratings:,} ratings into {path}", file=sys.stderr)
        started = time.perf_counter()
        first, last = generate(store, args.ratings, today, random.Random(1))
        print(f"  {time.perf_counter() - started:.0f} s in all", file=sys.stderr)
    first = date.fromisoformat(store.db.conn.execute("SELECT min(day) FROM roll_site_day").fetchone()[0])
    last = date.fromisoformat(store.db.conn.execute("SELECT max(day) FROM roll_site_day").fetchone()[0])
    count = store.db.conn.execute("SELECT count(*) FROM ratings").fetchone()[0]
    from server.schema import ROLLUPS

    sizes = {name: store.db.conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0] for name, _ in ROLLUPS}
    print(f"ratings: {count:,} from {first} to {last}; rollup rows: {sizes}")
    all_keys = args.all_keys
    if args.postgres_queries:
        print(f"\nslowest rollup query: {postgres_queries(store, args.postgres_queries, all_keys):.1f} ms")
        return 0

    worst = bench_queries(store, first, last, all_keys)
    print(f"\nslowest rollup query: {worst:.1f} ms")

    # The dashboard's first view (terminals board + today) and trends page, over HTTP in-process.
    from fastapi.testclient import TestClient

    from server.api import create_app
    from server.auth import hash_password
    from server.config import ServerConfig, UserConfig

    config = ServerConfig(db=path, api_token="b" * 20, users={"admin": UserConfig(hash_password("pw"), None)})
    now = datetime(2026, 11, 27, 6, 0, tzinfo=timezone.utc)
    app = create_app(lambda: SQLiteStore.open(path), config, now=lambda: now)
    with TestClient(app) as client:
        page = client.get("/login")
        csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
        client.post("/login", data={"username": "admin", "password": "pw", "csrf": csrf}, follow_redirects=False)
        home = timed(lambda: client.get("/"))
        trends = timed(lambda: client.get("/trends"))
        trends_year = timed(lambda: client.get(f"/trends?from={last - timedelta(days=364)}&to={last}"))
    print(f"dashboard first view (/): {home:.0f} ms; /trends (30 days): {trends:.0f} ms;"
          f" /trends (1 year): {trends_year:.0f} ms")

    # Ingest throughput with the rollups kept in the same transaction.
    ingest_path = path.with_suffix(".ingest.db")
    rate = ingest_rate(lambda: SQLiteStore.open(ingest_path), now)
    for suffix in ("", "-wal", "-shm"):
        Path(str(ingest_path) + suffix).unlink(missing_ok=True)
    print(f"ingest_batch: {rate:,.0f} ratings/s (100 batches of 500, one FULL commit each, rollups included)")
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
