"""The schema as the code before the one store (issue 10) made it, kept to build old databases in tests.

Copied unchanged from server/store.py (sqlite-utils migrations) and
server/postgres.py (MIGRATIONS) as they were at commit 3828386: a database
made by these must open with today's store and migrate forward without loss
(tests/server/test_schema.py). Never change them: they are history.
"""

from __future__ import annotations

import logging

import psycopg
from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

log = logging.getLogger(__name__)

migrations = Migrations("onetap-server")


@migrations()
def m001_initial(db: Database) -> None:
    # A rowid table with a unique index on the UUID: keying by the UUID
    # scattered inserts across the B-tree (0.88 s vs 0.34 s per 50k here).
    db.execute("""
        CREATE TABLE ratings (
            pk INTEGER PRIMARY KEY,
            id TEXT NOT NULL,
            site TEXT NOT NULL,
            terminal TEXT NOT NULL,
            seq INTEGER NOT NULL,
            score INTEGER NOT NULL CHECK (score BETWEEN 1 AND 5),
            at TEXT NOT NULL,
            clock_synced INTEGER NOT NULL,
            reason TEXT,
            age_group TEXT,
            lang TEXT NOT NULL,
            input TEXT NOT NULL,
            received_at TEXT NOT NULL,
            day TEXT NOT NULL,
            hour INTEGER NOT NULL,
            weekday INTEGER NOT NULL
        )""")
    db.execute("CREATE UNIQUE INDEX ratings_id ON ratings (id)")
    # Every query is a day range, often of one site or terminal.
    db.execute("CREATE INDEX ratings_day ON ratings (day, site, terminal)")
    db.execute("""
        CREATE TABLE quarantine (
            pk INTEGER PRIMARY KEY,
            received_at TEXT NOT NULL,
            topic TEXT,
            payload BLOB NOT NULL,
            reason TEXT NOT NULL,
            rating_id TEXT
        )""")
    db.execute("""
        CREATE TABLE terminals (
            site TEXT NOT NULL,
            terminal TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'unknown',
            last_seen TEXT,
            status TEXT NOT NULL DEFAULT '{}',
            updated_at TEXT NOT NULL,
            PRIMARY KEY (site, terminal)
        )""")


@migrations()
def m002_rollups_suspect_staff(db: Database) -> None:
    # Flagged by alerts' burst detection; never deleted, excludable from figures.
    db.execute("ALTER TABLE ratings ADD COLUMN suspect INTEGER NOT NULL DEFAULT 0")
    # Burst detection reads a terminal's ratings in seq order.
    db.execute("CREATE INDEX ratings_terminal_seq ON ratings (site, terminal, seq)")
    for name, dims in ROLLUPS:
        _create_rollup(db, name, dims)
    db.execute("""
        CREATE TABLE marks (
            pk INTEGER PRIMARY KEY,
            site TEXT,
            day TEXT NOT NULL,
            note TEXT NOT NULL,
            created_by TEXT NOT NULL,
            created_at TEXT NOT NULL
        )""")
    db.execute("""
        CREATE TABLE alerts (
            pk INTEGER PRIMARY KEY,
            site TEXT NOT NULL,
            terminal TEXT,
            kind TEXT NOT NULL,
            message TEXT NOT NULL,
            raised_at TEXT NOT NULL,
            cleared_at TEXT,
            acked_at TEXT,
            acked_by TEXT
        )""")
    db.execute("CREATE INDEX alerts_open ON alerts (cleared_at, site, terminal, kind)")
    db.execute("""
        CREATE TABLE sessions (
            token_hash TEXT PRIMARY KEY,
            user TEXT NOT NULL,
            csrf TEXT NOT NULL,
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL
        )""")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


@migrations()
def m003_rating_identity_site_terminal_id(db: Database) -> None:
    # A rating is (site, terminal, id): one terminal sending another's ids must
    # neither claim nor suppress them. Existing rows are unique by id, so also
    # by (site, terminal, id).
    db.execute("DROP INDEX ratings_id")
    db.execute("CREATE UNIQUE INDEX ratings_identity ON ratings (site, terminal, id)")


@migrations()
def m004_ratings_clock_suspect(db: Database) -> None:
    # 1: the kiosk's ``at`` was outside the time window; counted by receipt time.
    db.execute("ALTER TABLE ratings ADD COLUMN clock_suspect INTEGER NOT NULL DEFAULT 0")


@migrations()
def m005_quarantine_by_terminal(db: Database) -> None:
    # Per-terminal daily caps count a terminal's rows and bytes; retention
    # prunes by receipt time.
    db.execute("ALTER TABLE quarantine ADD COLUMN site TEXT")
    db.execute("ALTER TABLE quarantine ADD COLUMN terminal TEXT")
    rows = db.execute("SELECT pk, topic FROM quarantine WHERE topic LIKE 'onetap/v1/%'").fetchall()
    for pk, topic in rows:
        parts = topic.split("/")
        if len(parts) == 5:
            db.execute("UPDATE quarantine SET site = ?, terminal = ? WHERE pk = ?", [parts[2], parts[3], pk])
    db.execute("CREATE INDEX quarantine_terminal ON quarantine (site, terminal, received_at)")
    db.execute("CREATE INDEX quarantine_received ON quarantine (received_at)")


@migrations()
def m006_terminals_retired_at(db: Database) -> None:
    # `onetap-server terminal retire`: off the board and the alert rules, ratings kept.
    db.execute("ALTER TABLE terminals ADD COLUMN retired_at TEXT")


#: Count tables kept in the same transaction as each insert, smallest first:
#: a query reads the first one holding every column it groups or filters by,
#: so a year of ratings is summed from a few thousand rows, not millions.
#: Every one also has weekday (a function of day), suspect and score.
ROLLUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("roll_site_day", ("day", "site")),
    ("roll_day", ("day", "site", "terminal")),
    ("roll_site_hour", ("day", "hour", "site")),
    ("roll_hour", ("day", "hour", "site", "terminal")),
    ("roll_site_dims", ("day", "site", "reason", "age_group", "lang", "input")),
    ("roll_all", ("day", "hour", "site", "terminal", "reason", "age_group", "lang", "input")),
)
#: Nullable rating columns stand as '' in the rollups, so that a primary key
#: (where NULLs never conflict) can UPSERT them.
_NULLABLE = ("reason", "age_group")
def _create_rollup(db: Database, name: str, dims: tuple[str, ...]) -> None:
    types = {"hour": "INTEGER"}
    columns = ", ".join(f"{d} {types.get(d, 'TEXT')} NOT NULL" for d in dims)
    key = ", ".join(dims)
    db.execute(f"""
        CREATE TABLE {name} (
            {columns},
            weekday INTEGER NOT NULL,
            suspect INTEGER NOT NULL,
            score INTEGER NOT NULL,
            n INTEGER NOT NULL,
            PRIMARY KEY ({key}, suspect, score)
        ) WITHOUT ROWID""")
    select = ", ".join(f"coalesce({d}, '')" if d in _NULLABLE else d for d in dims)
    db.execute(f"INSERT INTO {name} ({key}, weekday, suspect, score, n)"
               f" SELECT {select}, min(weekday), suspect, score, count(*) FROM ratings"
               f" GROUP BY {select}, suspect, score")


_TEXT = 'text COLLATE "C"'


def _rollup_ddl(name: str, dims: tuple[str, ...]) -> list[str]:
    columns = ", ".join(f"{d} {'smallint' if d == 'hour' else _TEXT} NOT NULL" for d in dims)
    key = ", ".join(dims)
    select = ", ".join(f"coalesce({d}, '')" if d in _NULLABLE else d for d in dims)
    return [
        f"""CREATE TABLE {name} (
            {columns},
            weekday smallint NOT NULL,
            suspect smallint NOT NULL,
            score smallint NOT NULL,
            n integer NOT NULL,
            PRIMARY KEY ({key}, suspect, score))""",
        f"INSERT INTO {name} ({key}, weekday, suspect, score, n)"
        f" SELECT {select}, min(weekday), suspect, score, count(*) FROM ratings"
        f" GROUP BY {select}, suspect, score",
    ]


#: Versioned migrations: (name, statements), applied in order, each in one
#: transaction, recorded in onetap_migrations. Never edit an applied one: add one.
MIGRATIONS: list[tuple[str, list[str]]] = [
    ("m001_initial", [
        # A bigint key in insertion order plus a unique index on the UUID, as
        # in SQLite: keying by the UUID would scatter the table.
        f"""CREATE TABLE ratings (
            pk bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            id {_TEXT} NOT NULL,
            site {_TEXT} NOT NULL,
            terminal {_TEXT} NOT NULL,
            seq bigint NOT NULL,
            score smallint NOT NULL CHECK (score BETWEEN 1 AND 5),
            at {_TEXT} NOT NULL,
            clock_synced smallint NOT NULL,
            reason {_TEXT},
            age_group {_TEXT},
            lang {_TEXT} NOT NULL,
            input {_TEXT} NOT NULL,
            received_at {_TEXT} NOT NULL,
            day {_TEXT} NOT NULL,
            hour smallint NOT NULL,
            weekday smallint NOT NULL,
            suspect smallint NOT NULL DEFAULT 0)""",
        "CREATE UNIQUE INDEX ratings_id ON ratings (id)",
        "CREATE INDEX ratings_day ON ratings (day, site, terminal)",
        "CREATE INDEX ratings_terminal_seq ON ratings (site, terminal, seq)",
        f"""CREATE TABLE quarantine (
            pk bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            received_at {_TEXT} NOT NULL,
            topic text,
            payload bytea NOT NULL,
            reason text NOT NULL,
            rating_id text)""",
        f"""CREATE TABLE terminals (
            site {_TEXT} NOT NULL,
            terminal {_TEXT} NOT NULL,
            state text NOT NULL DEFAULT 'unknown',
            last_seen text,
            status text NOT NULL DEFAULT '{{}}',
            updated_at text NOT NULL,
            PRIMARY KEY (site, terminal))""",
        *[sql for name, dims in ROLLUPS for sql in _rollup_ddl(name, dims)],
        f"""CREATE TABLE marks (
            pk bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            site {_TEXT},
            day {_TEXT} NOT NULL,
            note text NOT NULL,
            created_by text NOT NULL,
            created_at text NOT NULL)""",
        f"""CREATE TABLE alerts (
            pk bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            site {_TEXT} NOT NULL,
            terminal {_TEXT},
            kind text NOT NULL,
            message text NOT NULL,
            raised_at text NOT NULL,
            cleared_at text,
            acked_at text,
            acked_by text)""",
        "CREATE INDEX alerts_open ON alerts (cleared_at, site, terminal, kind)",
        # "user" is a reserved word in PostgreSQL; the column keeps its name.
        """CREATE TABLE sessions (
            token_hash text PRIMARY KEY,
            "user" text NOT NULL,
            csrf text NOT NULL,
            created_at text NOT NULL,
            expires_at text NOT NULL)""",
        "CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL)",
    ]),
    # A rating is (site, terminal, id): one terminal sending another's ids must
    # neither claim nor suppress them. Rows unique by id are unique by this too.
    ("m003_rating_identity_site_terminal_id", [
        "DROP INDEX ratings_id",
        "CREATE UNIQUE INDEX ratings_identity ON ratings (site, terminal, id)",
    ]),
    # 1: the kiosk's ``at`` was outside the time window; counted by receipt time.
    ("m004_ratings_clock_suspect", [
        "ALTER TABLE ratings ADD COLUMN clock_suspect smallint NOT NULL DEFAULT 0",
    ]),
    # Per-terminal daily quarantine caps, and retention by receipt time.
    ("m005_quarantine_by_terminal", [
        f"ALTER TABLE quarantine ADD COLUMN site {_TEXT}",
        f"ALTER TABLE quarantine ADD COLUMN terminal {_TEXT}",
        "UPDATE quarantine SET site = split_part(topic, '/', 3), terminal = split_part(topic, '/', 4)"
        " WHERE topic LIKE 'onetap/v1/%/%/%' AND split_part(topic, '/', 6) = ''",
        "CREATE INDEX quarantine_terminal ON quarantine (site, terminal, received_at)",
        "CREATE INDEX quarantine_received ON quarantine (received_at)",
    ]),
    # `onetap-server terminal retire`: off the board and the alert rules, ratings kept.
    ("m006_terminals_retired_at", [
        "ALTER TABLE terminals ADD COLUMN retired_at text",
    ]),
]


def postgres_migrate(conn: psycopg.Connection) -> list[str]:
    """Apply the migrations not yet applied to the connection's schema; return their names.

    Several workers may start at once: an advisory lock (per schema) lets one
    migrate while the others wait and then find nothing left to do.
    """
    applied_now = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('onetap-migrations:' || current_schema()))")
        conn.execute("CREATE TABLE IF NOT EXISTS onetap_migrations ("
                     " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
        done = {row[0] for row in conn.execute("SELECT name FROM onetap_migrations")}
        for name, statements in MIGRATIONS:
            if name in done:
                continue
            for sql in statements:
                conn.execute(sql)
            conn.execute("INSERT INTO onetap_migrations (name) VALUES (%s)", [name])
            applied_now.append(name)
    if applied_now:
        log.info("database migrated: %s", ", ".join(applied_now))
    return applied_now
