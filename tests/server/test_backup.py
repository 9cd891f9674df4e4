"""server/backup.py: consistent copies of a live database (SQLite and PostgreSQL), mode 0600, restored as docs/deploy.md says."""

from __future__ import annotations

import shutil
import stat
import subprocess
import threading
import uuid
from datetime import date, datetime, timedelta, timezone

import pytest

from kiosk.protocol import Rating, format_timestamp
from server.__main__ import main
from server.backend import open_store
from server.store import Filters, SQLiteStore
from tests.backends import PostgresDatabase

KST = timezone(timedelta(hours=9))
AT = datetime(2026, 11, 27, 10, 0, tzinfo=KST)
DAY = Filters(date_from=date(2026, 11, 27), date_to=date(2026, 11, 27))


def batch(count: int) -> list[Rating]:
    return [Rating(id=str(uuid.uuid4()), seq=seq, score=1 + seq % 5, at=format_timestamp(AT),
                   clock_synced=True) for seq in range(1, count + 1)]


def total(store) -> int:
    return sum(store.summary(DAY).values())


def test_sqlite_backup_of_a_live_database_is_consistent_private_and_restores(tmp_path):
    db = tmp_path / "onetap.db"
    store = SQLiteStore.open(db)
    store.ingest_batch("s", "t", batch(200), AT)
    # Ingest goes on while the backup runs: the copy is one snapshot, with
    # rollups that agree with its raw ratings, whatever it caught.
    stop = threading.Event()

    def writer():
        own = SQLiteStore.open(db)
        while not stop.is_set():
            own.ingest_batch("s", "t", batch(50), AT)
        own.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for round_ in range(3):
            out = tmp_path / f"backup-{round_}.db"
            assert main(["backup", "--db", str(db), "--out", str(out)]) == 0
            assert stat.S_IMODE(out.stat().st_mode) == 0o600
            copy = SQLiteStore.open(out)
            raw = copy.db.conn.execute("SELECT count(*) FROM ratings").fetchone()[0]
            assert total(copy) == raw >= 200
            copy.close()
    finally:
        stop.set()
        thread.join()
    # Restore (docs/deploy.md): stop the server, put the copy in place, start it.
    store.close()
    restored = tmp_path / "restored" / "onetap.db"
    restored.parent.mkdir()
    shutil.copy(out, restored)
    again = SQLiteStore.open(restored)
    try:
        again.ingest_batch("s", "t", batch(1), AT)  # the restored database takes ratings
        assert total(again) == raw + 1
    finally:
        again.close()
    assert not list(tmp_path.glob(".*partial")), "a temporary file was left behind"


def test_a_backup_never_leaves_a_readable_or_partial_file(tmp_path, capsys):
    missing = tmp_path / "nope.db"
    assert main(["backup", "--db", str(missing), "--out", str(tmp_path / "b.db")]) == 1
    assert "no such database" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    assert main(["backup", "--db", str(missing), "--out", str(tmp_path / "no" / "b.db")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_backup_reads_db_from_the_config(tmp_path):
    db = tmp_path / "onetap.db"
    store = SQLiteStore.open(db)
    store.ingest_batch("s", "t", batch(3), AT)
    store.close()
    config = tmp_path / "server.toml"
    config.write_text(f'db = "{db}"\n')
    out = tmp_path / "b.db"
    assert main(["backup", "--config", str(config), "--out", str(out)]) == 0
    copy = SQLiteStore.open(out)
    assert total(copy) == 3
    copy.close()


@pytest.mark.skipif(shutil.which("pg_restore") is None, reason="postgresql-client not installed")
def test_postgres_backup_restores_into_an_empty_database(tmp_path):
    source, target = PostgresDatabase().create(), PostgresDatabase().create()
    try:
        store = open_store(source.url)
        store.ingest_batch("s", "t", batch(120), AT)
        store.close()
        out = tmp_path / "onetap.dump"
        assert main(["backup", "--db", source.url, "--out", str(out)]) == 0
        assert stat.S_IMODE(out.stat().st_mode) == 0o600
        # Restore (docs/deploy.md): pg_restore into the (new, empty) database.
        subprocess.run(["pg_restore", "--no-owner", f"--dbname={target.url}", str(out)],
                       check=True, capture_output=True)
        restored = open_store(target.url)
        try:
            assert total(restored) == 120
            restored.ingest_batch("s", "t", batch(1), AT)
            assert total(restored) == 121
        finally:
            restored.close()
    finally:
        source.drop()
        target.drop()
