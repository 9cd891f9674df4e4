"""Schema: every table, column, index and rollup of the server's database, and the migrations that build it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence, Union

# Column kinds, each rendered by server.dialect in its database's own type:
#   key    the table's integer row key, assigned in insertion order
#   name   text compared and sorted byte-wise (identifiers, days, timestamps)
#   text   free text        small  a small integer      big  a 64-bit integer
#   count  a rollup count   blob   raw bytes


@dataclass(frozen=True)
class Column:
    name: str
    kind: str
    null: bool = False
    #: An SQL literal, the same in every dialect.
    default: str | None = None
    check: str | None = None


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    #: Stored in key order (SQLite WITHOUT ROWID): the rollups, read by key range.
    clustered: bool = False

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"{self.name} has no column {name!r}")


@dataclass(frozen=True)
class Index:
    name: str
    table: str
    columns: tuple[str, ...]
    unique: bool = False


def _c(name: str, kind: str = "name", **kw) -> Column:
    return Column(name, kind, **kw)


# A rowid table keyed by insertion order with a unique index on the identity:
# keying by the UUID scattered inserts across the B-tree (0.88 s vs 0.34 s per 50k).
RATINGS = Table("ratings", (
    _c("pk", "key"),
    _c("id"), _c("site"), _c("terminal"),
    _c("seq", "big"),
    _c("score", "small", check="score BETWEEN 1 AND 5"),
    _c("at"),
    _c("clock_synced", "small"),
    _c("reason", null=True), _c("age_group", null=True),
    _c("lang"), _c("input"), _c("received_at"),
    # The local bucket, computed once at ingest in the server's time zone.
    _c("day"), _c("hour", "small"), _c("weekday", "small"),
    # Flagged by alerts' burst detection; never deleted, excludable from figures.
    _c("suspect", "small", default="0"),
    # 1: the kiosk's ``at`` was outside the time window; counted by receipt time.
    _c("clock_suspect", "small", default="0"),
    # The audit chain (docs/audit.md): the rating's chain and, on a batch's
    # highest-seq rating, the terminal's signature over it.
    _c("chain", "text", null=True), _c("head_sig", "text", null=True),
), key=("pk",))

QUARANTINE = Table("quarantine", (
    _c("pk", "key"), _c("received_at"),
    _c("topic", "text", null=True), _c("payload", "blob"), _c("reason", "text"),
    _c("rating_id", "text", null=True),
    # The terminal the topic names: per-terminal daily caps count its rows.
    _c("site", null=True), _c("terminal", null=True),
), key=("pk",))

TERMINALS = Table("terminals", (
    _c("site"), _c("terminal"),
    _c("state", "text", default="'unknown'"),
    _c("last_seen", "text", null=True),
    _c("status", "text", default="'{}'"),
    _c("updated_at", "text"),
    # `onetap-server terminal retire`: off the board and the alert rules, ratings kept.
    _c("retired_at", "text", null=True),
), key=("site", "terminal"))

MARKS = Table("marks", (
    _c("pk", "key"), _c("site", null=True), _c("day"), _c("note", "text"),
    _c("created_by", "text"), _c("created_at", "text"),
), key=("pk",))

ALERTS = Table("alerts", (
    _c("pk", "key"), _c("site"), _c("terminal", null=True), _c("kind", "text"),
    _c("message", "text"), _c("raised_at", "text"), _c("cleared_at", "text", null=True),
    _c("acked_at", "text", null=True), _c("acked_by", "text", null=True),
), key=("pk",))

# "user" is reserved in PostgreSQL: every statement quotes it.
SESSIONS = Table("sessions", (
    _c("token_hash", "text"), _c("user", "text"), _c("csrf", "text"),
    _c("created_at", "text"), _c("expires_at", "text"),
), key=("token_hash",))

META = Table("meta", (_c("key", "text"), _c("value", "text")), key=("key",))

#: Per terminal, what ingest verified of its chain (server/ingest.py ChainTracker).
CHAIN_STATE = Table("chain_state", (
    _c("site"), _c("terminal"),
    _c("contiguous_seq", "big", null=True), _c("max_seq", "big", null=True),
    _c("missing", "text"), _c("missing_since", "text", null=True), _c("status", "text"),
    _c("broken_seq", "big", null=True), _c("tip_seq", "big", null=True), _c("tip_chain", "text", null=True),
    _c("head_seq", "big", null=True), _c("head_chain", "text", null=True), _c("head_sig", "text", null=True),
    _c("head_at", "text", null=True), _c("checkpoint_seq", "big", null=True),
    _c("checkpoint_chain", "text", null=True), _c("checkpoint_sig", "text", null=True),
    _c("updated_at", "text"),
), key=("site", "terminal"))
#: The chain_state columns, in table order.
CHAIN_STATE_COLUMNS = tuple(c.name for c in CHAIN_STATE.columns)
#: What an audit export holds of a rating: its canonical fields, chain and head signature.
AUDIT_COLUMNS = "id, seq, score, at, clock_synced, reason, age_group, lang, input, chain, head_sig"

#: Count tables, smallest first
#: within each grain: a query reads the first one holding every column it
#: groups or filters by, so a year of ratings is summed from a few thousand
#: rows, not millions. The daily ones also carry weekday (a function of day).
#: Every one has suspect and score. A rollup's key is its dimensions in the
#: order given: most lead with their time, read as a range of it.
ROLLUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # Keyed by terminal first: one terminal's rows lie together, so a query of
    # one terminal reads only its rows (server/store.py smallest_rollup picks
    # such a rollup only then; for any other query it would be read whole).
    ("roll_terminal_first_day", ("terminal", "site", "day")),
    ("roll_terminal_first_reason", ("terminal", "site", "day", "reason")),
    ("roll_terminal_first_lang_input", ("terminal", "site", "day", "lang", "input")),
    ("roll_terminal_first_age", ("terminal", "site", "day", "age_group")),
    ("roll_terminal_first_hour", ("terminal", "site", "day", "hour")),
    ("roll_site_day", ("day", "site")),
    # Keyed by site first, for one site's days by a second key (as above).
    ("roll_site_first_age", ("site", "day", "age_group")),
    ("roll_site_first_hour", ("site", "day", "hour")),
    ("roll_site_first_terminal", ("site", "day", "terminal")),
    # Summed over sites: a day by a second key over years, for every site, is
    # read in as many rows as the answer has scores (not once per site).
    ("roll_total_reason", ("day", "reason")),
    ("roll_total_lang_input", ("day", "lang", "input")),
    ("roll_total_age", ("day", "age_group")),
    ("roll_total_hour", ("day", "hour")),
    ("roll_total_terminal", ("day", "terminal")),
    ("roll_site_day_reason", ("day", "site", "reason")),
    ("roll_site_day_lang_input", ("day", "site", "lang", "input")),
    ("roll_site_day_age", ("day", "site", "age_group")),
    ("roll_site_hour", ("day", "hour", "site")),
    ("roll_day", ("day", "site", "terminal")),
    ("roll_site_hour_reason", ("day", "hour", "site", "reason")),
    ("roll_day_terminal_lang_input", ("day", "site", "terminal", "lang", "input")),
    ("roll_day_terminal_reason", ("day", "site", "terminal", "reason")),
    ("roll_site_dims", ("day", "site", "reason", "age_group", "lang", "input")),
    ("roll_site_hour_lang_input", ("day", "hour", "site", "lang", "input")),
    ("roll_site_hour_age", ("day", "hour", "site", "age_group")),
    ("roll_day_terminal_age", ("day", "site", "terminal", "age_group")),
    ("roll_hour", ("day", "hour", "site", "terminal")),
    ("roll_all", ("day", "hour", "site", "terminal", "reason", "age_group", "lang", "input")),
    # By calendar month (local, YYYY-MM): a long range is read as its whole
    # months plus the days before and after them (server/store.py range_parts).
    # weekday is no function of a month, so these carry it only as a key.
    ("roll_month_site", ("month", "site")),
    ("roll_month_hour", ("month", "hour", "site")),
    ("roll_month_terminal", ("month", "site", "terminal")),
    # One terminal by two of its finer keys, terminal first (as roll_terminal_first_day).
    ("roll_terminal_month_hour_weekday", ("terminal", "site", "month", "hour", "weekday")),
    ("roll_terminal_month_weekday_age", ("terminal", "site", "month", "weekday", "age_group")),
    ("roll_terminal_month_reason_age_lang_input",
     ("terminal", "site", "month", "reason", "age_group", "lang", "input")),
    ("roll_terminal_month_weekday_reason_lang_input",
     ("terminal", "site", "month", "weekday", "reason", "lang", "input")),
    ("roll_terminal_month_hour_reason_lang_input",
     ("terminal", "site", "month", "hour", "reason", "lang", "input")),
    ("roll_terminal_month_hour_age", ("terminal", "site", "month", "hour", "age_group")),
    ("roll_month_reason_lang_input", ("month", "site", "reason", "lang", "input")),
    ("roll_month_weekday_reason", ("month", "weekday", "site", "reason")),
    ("roll_month_weekday_lang_input", ("month", "weekday", "site", "lang", "input")),
    ("roll_month_reason_age", ("month", "site", "reason", "age_group")),
    ("roll_month_hour_reason", ("month", "hour", "site", "reason")),
    ("roll_month_terminal_reason", ("month", "site", "terminal", "reason")),
    ("roll_month_hour_lang_input", ("month", "hour", "site", "lang", "input")),
    ("roll_month_terminal_lang_input", ("month", "site", "terminal", "lang", "input")),
    ("roll_month_age_lang_input", ("month", "site", "age_group", "lang", "input")),
    ("roll_month_weekday_age", ("month", "weekday", "site", "age_group")),
    ("roll_month_hour_weekday", ("month", "hour", "weekday", "site")),
    ("roll_month_terminal_weekday", ("month", "weekday", "site", "terminal")),
    ("roll_month_hour_age", ("month", "hour", "site", "age_group")),
    ("roll_month_terminal_age", ("month", "site", "terminal", "age_group")),
    ("roll_month_dims", ("month", "site", "reason", "age_group", "lang", "input")),
    ("roll_month_terminal_hour", ("month", "hour", "site", "terminal")),
)
#: A commit's counts, by every dimension, waiting to be added to the rollups.
#: Ingest writes one row per distinct key of a commit here instead of
#: upserting every rollup inside its transaction; a roll-up moves them into the
#: rollups in one transaction of its own (server/store.py roll_up), and every
#: query adds what still waits here, read in the same statement as the
#: rollups, so each rating is counted once whether rolled up or not. n is
#: negative where a rating marked suspect leaves its key.
ROLLUP_QUEUE = Table("rollup_queue", (
    _c("pk", "key"),
    _c("day"), _c("hour", "small"), _c("weekday", "small"), _c("site"), _c("terminal"),
    _c("reason"), _c("age_group"), _c("lang"), _c("input"), _c("suspect", "small"), _c("score", "small"),
    _c("month"), _c("n", "count"),
), key=("pk",))

#: Nullable rating columns stand as '' in the rollups, so that a primary key
#: (where NULLs never conflict) can UPSERT them.
NULLABLE = ("reason", "age_group")
#: The columns after a daily rollup's dimensions (weekday is not part of its key).
ROLLUP_TAIL = ("weekday", "suspect")
#: A rollup row's count of each score, 1 to 5 (m011). One row per key, not one
#: per score: a big answer (by day and hour over years) is read in a fifth of
#: the rows, and a roll-up upserts a terminal's key once however its taps scored.
SCORE_COUNTS = ("n1", "n2", "n3", "n4", "n5")
#: SQL summing each of them over a group of rollup rows.
SCORE_COUNT_SUMS = tuple(f"sum({c})" for c in SCORE_COUNTS)
#: The rollup that holds every dimension: the source new rollups are filled from,
#: since ratings may have been pruned (prune_ratings) and the rollups never are.
FULLEST_ROLLUP = "roll_all"


def rollup_tail(dims: tuple[str, ...]) -> tuple[str, ...]:
    """The columns after a rollup's dimensions: weekday rides along with a day."""
    return ROLLUP_TAIL if "day" in dims else ("suspect",)


def _dimension(name: str) -> Column:
    return Column(name, "name" if name == "month" else RATINGS.column(name).kind)


def _rollup_table(name: str, dims: tuple[str, ...]) -> Table:
    columns = [_dimension(d) for d in (*dims, *rollup_tail(dims))]
    return Table(name, (*columns, *(Column(c, "count") for c in SCORE_COUNTS)), key=(*dims, "suspect"),
                 clustered=True)


def _rollup_table_by_score(name: str, dims: tuple[str, ...]) -> Table:
    """A rollup as m002 to m010 made it: one row per key and score, its count in n."""
    columns = [_dimension(d) for d in (*dims, *rollup_tail(dims), "score")]
    return Table(name, (*columns, Column("n", "count")), key=(*dims, "suspect", "score"), clustered=True)


TABLES: dict[str, Table] = {t.name: t for t in (
    RATINGS, QUARANTINE, TERMINALS, MARKS, ALERTS, SESSIONS, META, CHAIN_STATE, ROLLUP_QUEUE,
    *(_rollup_table(name, dims) for name, dims in ROLLUPS))}

INDEXES: dict[str, Index] = {i.name: i for i in (
    # A rating's identity: one terminal can neither claim nor suppress another's.
    Index("ratings_identity", "ratings", ("site", "terminal", "id"), unique=True),
    # Every query is a day range, often of one site or terminal.
    Index("ratings_day", "ratings", ("day", "site", "terminal")),
    # Burst detection reads a terminal's ratings in seq order.
    Index("ratings_terminal_seq", "ratings", ("site", "terminal", "seq")),
    Index("quarantine_terminal", "quarantine", ("site", "terminal", "received_at")),
    Index("quarantine_received", "quarantine", ("received_at",)),
    Index("alerts_open", "alerts", ("cleared_at", "site", "terminal", "kind")),
)}

#: Columns of /api/v1/ratings.csv and of iter_ratings() rows, in order.
RATING_COLUMNS = ("id", "site", "terminal", "seq", "score", "at", "clock_synced",
                  "reason", "age_group", "lang", "input", "received_at")
#: What ingest writes of a rating, in the order of its row tuples: the audit
#: chain and head signature (m007) go in the same INSERT, never a later UPDATE.
INSERT_COLUMNS = (*RATING_COLUMNS, "day", "hour", "weekday", "clock_suspect", "chain", "head_sig")


# -- migrations -----------------------------------------------------------------
#
# Each step names what it does in terms of the definitions above; server.dialect
# renders it. Never edit an applied step: add one.


@dataclass(frozen=True)
class CreateTable:
    #: A table of TABLES by name, or a table as it was when the step was written.
    table: str | Table
    #: The columns it had when the step was written (None: all of today's).
    only: tuple[str, ...] | None = None


@dataclass(frozen=True)
class AddColumn:
    table: str
    column: str


@dataclass(frozen=True)
class CreateIndex:
    index: Index


@dataclass(frozen=True)
class DropIndex:
    name: str


@dataclass(frozen=True)
class FillRollup:
    """Count the ratings already stored into a new rollup (from *source*, a
    rollup holding all its columns, or else from the ratings table).

    *by_score*: both are rollups as m002 to m010 made them, a row per score."""
    table: str
    source: str | None = None
    by_score: bool = False


@dataclass(frozen=True)
class CountScoresInRow:
    """Rebuild a rollup made a row per score with its five counts in one row per key (m011)."""
    table: str


@dataclass(frozen=True)
class Backfill:
    """Rows rewritten in Python: fn(execute) with execute(sql, params) -> rows, ``?`` placeholders."""
    fn: Callable[[Callable[[str, Sequence], list]], None]


Step = Union[CreateTable, AddColumn, CreateIndex, DropIndex, FillRollup, CountScoresInRow, Backfill]


def _quarantine_terminals(execute: Callable[[str, Sequence], list]) -> None:
    for pk, topic in execute("SELECT pk, topic FROM quarantine WHERE topic LIKE ?", ["onetap/v1/%"]):
        parts = topic.split("/")
        if len(parts) == 5:
            execute("UPDATE quarantine SET site = ?, terminal = ? WHERE pk = ?", [parts[2], parts[3], pk])


#: Every rollup as m002 to m010 made it (a row per score), for those steps.
BY_SCORE_TABLES = {name: _rollup_table_by_score(name, dims) for name, dims in ROLLUPS}
#: The rollups m002 made.
_FIRST_ROLLUPS = ("roll_site_day", "roll_day", "roll_site_hour", "roll_hour", "roll_site_dims", "roll_all")
#: The rollups m008 made.
_M008_ROLLUPS = (
    "roll_site_day_reason", "roll_site_day_lang_input", "roll_site_day_age", "roll_site_hour_reason",
    "roll_day_terminal_lang_input", "roll_day_terminal_reason", "roll_site_hour_lang_input",
    "roll_site_hour_age", "roll_day_terminal_age", "roll_month_site", "roll_month_hour",
    "roll_month_terminal", "roll_month_weekday_reason", "roll_month_weekday_lang_input",
    "roll_month_hour_reason", "roll_month_terminal_reason", "roll_month_hour_lang_input",
    "roll_month_terminal_lang_input", "roll_month_weekday_age", "roll_month_hour_weekday",
    "roll_month_terminal_weekday", "roll_month_hour_age", "roll_month_terminal_age", "roll_month_dims",
    "roll_month_terminal_hour", "roll_month_reason_lang_input", "roll_month_reason_age",
    "roll_month_age_lang_input")
#: The rollups m010 made, each with the rollup it is filled from.
_M010_ROLLUPS = {
    "roll_terminal_first_day": "roll_day",
    "roll_terminal_first_reason": "roll_day_terminal_reason",
    "roll_terminal_first_lang_input": "roll_day_terminal_lang_input",
    "roll_terminal_first_age": "roll_day_terminal_age",
    "roll_terminal_first_hour": "roll_hour",
    "roll_site_first_age": "roll_site_day_age",
    "roll_site_first_hour": "roll_site_hour",
    "roll_site_first_terminal": "roll_day",
    "roll_total_reason": "roll_site_day_reason",
    "roll_total_lang_input": "roll_site_day_lang_input",
    "roll_total_age": "roll_site_day_age",
    "roll_total_hour": "roll_site_hour",
    "roll_total_terminal": "roll_day",
    "roll_terminal_month_hour_weekday": "roll_hour",
    "roll_terminal_month_weekday_age": "roll_day_terminal_age",
    "roll_terminal_month_reason_age_lang_input": FULLEST_ROLLUP,
    "roll_terminal_month_weekday_reason_lang_input": FULLEST_ROLLUP,
    "roll_terminal_month_hour_reason_lang_input": FULLEST_ROLLUP,
    "roll_terminal_month_hour_age": FULLEST_ROLLUP,
}
_FIRST = ("pk", "id", "site", "terminal", "seq", "score", "at", "clock_synced", "reason", "age_group",
          "lang", "input", "received_at", "day", "hour", "weekday")

MIGRATIONS: list[tuple[str, list[Step]]] = [
    ("m001_initial", [
        CreateTable("ratings", _FIRST),
        CreateIndex(Index("ratings_id", "ratings", ("id",), unique=True)),
        CreateIndex(INDEXES["ratings_day"]),
        CreateTable("quarantine", ("pk", "received_at", "topic", "payload", "reason", "rating_id")),
        CreateTable("terminals", ("site", "terminal", "state", "last_seen", "status", "updated_at")),
    ]),
    ("m002_rollups_suspect_staff", [
        AddColumn("ratings", "suspect"),
        CreateIndex(INDEXES["ratings_terminal_seq"]),
        *(s for name in _FIRST_ROLLUPS
          for s in (CreateTable(BY_SCORE_TABLES[name]), FillRollup(name, by_score=True))),
        CreateTable("marks"), CreateTable("alerts"), CreateIndex(INDEXES["alerts_open"]),
        CreateTable("sessions"), CreateTable("meta"),
    ]),
    # Existing rows are unique by id, so also by (site, terminal, id).
    ("m003_rating_identity_site_terminal_id", [
        DropIndex("ratings_id"), CreateIndex(INDEXES["ratings_identity"]),
    ]),
    ("m004_ratings_clock_suspect", [AddColumn("ratings", "clock_suspect")]),
    ("m005_quarantine_by_terminal", [
        AddColumn("quarantine", "site"), AddColumn("quarantine", "terminal"),
        Backfill(_quarantine_terminals),
        CreateIndex(INDEXES["quarantine_terminal"]), CreateIndex(INDEXES["quarantine_received"]),
    ]),
    ("m006_terminals_retired_at", [AddColumn("terminals", "retired_at")]),
    ("m007_audit_chain", [
        AddColumn("ratings", "chain"), AddColumn("ratings", "head_sig"), CreateTable("chain_state"),
    ]),
    # Every rollup m002 did not make. Filled from roll_all, not ratings: pruned days are still counted there.
    ("m008_monthly_and_pair_rollups", [
        s for name in _M008_ROLLUPS
        for s in (CreateTable(BY_SCORE_TABLES[name]), FillRollup(name, FULLEST_ROLLUP, by_score=True))
    ]),
    # The rollups are up to date when this runs: the queue starts empty.
    ("m009_rollup_queue", [CreateTable("rollup_queue")]),
    # Each filled from the smallest rollup that holds its columns (every rollup
    # counts every rating, pruned or not): minutes less than from roll_all.
    ("m010_terminal_first_and_total_rollups", [
        s for name, source in _M010_ROLLUPS.items()
        for s in (CreateTable(BY_SCORE_TABLES[name]), FillRollup(name, source, by_score=True))
    ]),
    # A fifth of the rows to read and upsert (SCORE_COUNTS); the queue keeps a row per score.
    ("m011_rollups_score_counts_in_row", [CountScoresInRow(name) for name, _ in ROLLUPS]),
]


def render(step: Step, types: Mapping[str, str], clustered_suffix: str) -> list[str]:
    """The SQL of one step, given a dialect's column types (by kind) and the
    suffix it puts after a clustered table."""
    if isinstance(step, CreateTable):
        table = step.table if isinstance(step.table, Table) else TABLES[step.table]
        columns = [c for c in table.columns if step.only is None or c.name in step.only]
        return [_create_sql(table.name, table, columns, types, clustered_suffix)]
    if isinstance(step, AddColumn):
        column = TABLES[step.table].column(step.column)
        return [f"ALTER TABLE {step.table} ADD COLUMN {_column_sql(column, types)}"]
    if isinstance(step, CreateIndex):
        index = step.index
        unique = "UNIQUE " if index.unique else ""
        return [f"CREATE {unique}INDEX {index.name} ON {index.table} ({', '.join(index.columns)})"]
    if isinstance(step, DropIndex):
        return [f"DROP INDEX {step.name}"]
    if isinstance(step, FillRollup):
        dims = dict(ROLLUPS)[step.table]
        tail = rollup_tail(dims)
        if step.source is None:
            picked = [f"coalesce({d}, '')" if d in NULLABLE else d for d in dims]
        else:
            # A rollup already holds '' for NULL; a month is its days' first seven characters.
            picked = ["substr(day, 1, 7)" if d == "month" else d for d in dims]
        select = ", ".join(picked)
        weekday = "min(weekday), " if "weekday" in tail else ""
        if step.by_score:
            count = "count(*)" if step.source is None else "sum(n)"
            return [f"INSERT INTO {step.table} ({', '.join((*dims, *tail))}, score, n)"
                    f" SELECT {select}, {weekday}suspect, score, {count} FROM {step.source or 'ratings'}"
                    f" GROUP BY {select}, suspect, score"]
        counts = (score_counts("score", "1") if step.source is None
                  else SCORE_COUNT_SUMS)
        return [f"INSERT INTO {step.table} ({', '.join((*dims, *tail, *SCORE_COUNTS))})"
                f" SELECT {select}, {weekday}suspect, {', '.join(counts)} FROM {step.source or 'ratings'}"
                f" GROUP BY {select}, suspect"]
    if isinstance(step, CountScoresInRow):
        dims = dict(ROLLUPS)[step.table]
        table = TABLES[step.table]
        new = f"{step.table}_m011"
        weekday = "min(weekday), " if "weekday" in rollup_tail(dims) else ""
        # The old key is (dims, suspect, score): grouped by its prefix, read in key order, no sort.
        return [_create_sql(new, table, table.columns, types, clustered_suffix),
                f"INSERT INTO {new} ({', '.join((*dims, *rollup_tail(dims), *SCORE_COUNTS))})"
                f" SELECT {', '.join(dims)}, {weekday}suspect, {', '.join(score_counts('score', 'n'))}"
                f" FROM {step.table} GROUP BY {', '.join(dims)}, suspect",
                f"DROP TABLE {step.table}",
                f"ALTER TABLE {new} RENAME TO {step.table}"]
    return []


def score_counts(score: str, n: str) -> tuple[str, ...]:
    """SQL of five sums, each the *n* of rows whose *score* is 1, ..., 5: rows
    a row per score (the queue, ratings with *n* ``1``) as SCORE_COUNTS."""
    return tuple(f"coalesce(sum({n}) FILTER (WHERE {score} = {s}), 0)" for s in range(1, 6))


def _create_sql(name: str, table: Table, columns: Sequence[Column], types: Mapping[str, str],
                clustered_suffix: str) -> str:
    lines = [_column_sql(c, types) for c in columns]
    if table.key != ("pk",):
        lines.append(f"PRIMARY KEY ({', '.join(table.key)})")
    suffix = clustered_suffix if table.clustered else ""
    return f"CREATE TABLE {name} ({', '.join(lines)}){suffix}"


def _column_sql(column: Column, types: Mapping[str, str]) -> str:
    sql = f'{_quoted(column.name)} {types[column.kind]}'
    if column.kind != "key" and not column.null:
        sql += " NOT NULL"
    if column.default is not None:
        sql += f" DEFAULT {column.default}"
    if column.check is not None:
        sql += f" CHECK ({column.check})"
    return sql


def _quoted(name: str) -> str:
    return f'"{name}"' if name == "user" else name
