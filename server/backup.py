"""Backups: `onetap-server backup --out FILE`, a consistent copy of a live database, mode 0600."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from server.errors import ServerError

log = logging.getLogger(__name__)

DEFAULT_CONFIG = "/etc/onetap/server.toml"
#: SQLite pages copied per step: small steps let ingest commit between them.
PAGES_PER_STEP = 1024


class BackupError(ServerError, RuntimeError):
    """The backup could not be made; nothing was left at --out."""


def _private_temp(out: Path) -> Path:
    """An empty file beside *out*, mode 0600 from its creation (never readable by others)."""
    tmp = out.with_name(f".{out.name}.partial")
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    return tmp


def _publish(tmp: Path, out: Path) -> None:
    os.chmod(tmp, 0o600)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, out)
    dir_fd = os.open(out.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def backup_sqlite(db: Path, out: Path) -> int:
    """Copy a live SQLite database with SQLite's online backup API; returns its size.

    The copy is one consistent snapshot even while the server writes (the
    backup restarts by itself when a write lands mid-copy); the result is
    checked with PRAGMA quick_check before it takes the name *out*.
    """
    db, out = Path(db), Path(out)
    if not db.is_file():
        raise BackupError(f"{db}: no such database file")
    tmp = _private_temp(out)
    try:
        source = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        target = sqlite3.connect(tmp)
        try:
            source.backup(target, pages=PAGES_PER_STEP)
            # A file that stands alone: no -wal beside it is needed to read it.
            target.execute("PRAGMA journal_mode=DELETE")
            verdict = target.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            target.close()
            source.close()
        if verdict != "ok":
            raise BackupError(f"the copy of {db} does not check out: {verdict}")
        _publish(tmp, out)
    except sqlite3.Error as exc:
        raise BackupError(f"{db}: {exc}") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return out.stat().st_size


def backup_postgres(url: str, out: Path) -> int:
    """pg_dump's custom format (restore with pg_restore), one consistent snapshot; returns its size."""
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        raise BackupError("pg_dump is not installed (apt-get install postgresql-client)")
    out = Path(out)
    tmp = _private_temp(out)
    try:
        result = subprocess.run([pg_dump, "--format=custom", "--no-owner", f"--file={tmp}",
                                 f"--dbname={url}"], capture_output=True, text=True)
        if result.returncode != 0:
            raise BackupError(f"pg_dump failed: {result.stderr.strip()[-2000:]}")
        _publish(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out.stat().st_size


def backup(db, out: Path) -> int:
    from server.backend import is_postgres_url

    out = Path(out)
    if not out.parent.is_dir():
        raise BackupError(f"--out {out}: directory {out.parent} does not exist")
    if is_postgres_url(str(db)):
        return backup_postgres(str(db), out)
    if Path(db).resolve() == out.resolve():
        raise BackupError("--out is the database itself")
    return backup_sqlite(Path(db), out)


# -- command line ---------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Write a consistent copy of the live database to FILE (mode 0600): SQLite through "
        "its online backup API, PostgreSQL through pg_dump (custom format). The server keeps "
        "running. Restore: docs/deploy.md, \"Backups and restore\".")
    parser.add_argument("--config", metavar="FILE", default=DEFAULT_CONFIG,
                        help=f"the server's TOML config, for its `db` (default {DEFAULT_CONFIG})")
    parser.add_argument("--db", metavar="PATH", help="database, if not the config's `db`")
    parser.add_argument("--out", metavar="FILE", required=True, help="the backup file to write")


def run(args: argparse.Namespace) -> int:
    from server.backend import describe
    from server.config import load_config

    config = load_config(args.config if Path(args.config).exists() or args.db is None else None,
                         env=os.environ, overrides={"db": args.db})
    size = backup(config.db, Path(args.out))
    print(f"backed up {describe(config.db)} to {args.out} ({size} bytes, mode 0600)",
          file=sys.stderr)
    return 0
