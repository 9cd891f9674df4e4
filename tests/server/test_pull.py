"""`onetap-server pull` against two live servers and one that is down: exact merge, partial output marked, exit code."""

import argparse
import csv
import io
import json
import threading
import time
import uuid
from datetime import datetime, timezone

import pytest
from openpyxl import load_workbook

from kiosk.protocol import Rating
from server.api import create_app
from server.config import ServerConfig
from server.errors import ServerError
from server.pull import add_arguments, pull, run
from server.store import SQLiteStore
from tests.broker import free_port

TOKEN = "central-office-token-123"
NOW = datetime(2026, 11, 27, 3, 0, tzinfo=timezone.utc)


def start_server(path, scores_by_site):
    import uvicorn

    store = SQLiteStore.open(path)
    for site, scores in scores_by_site.items():
        store.ingest_batch(site, "t1", [Rating(id=str(uuid.uuid4()), seq=i + 1, score=s,
                                               at="2026-11-27T10:00:00.000+09:00", clock_synced=True)
                                        for i, s in enumerate(scores)], NOW)
    store.close()
    port = free_port()
    app = create_app(lambda: SQLiteStore.open(path), ServerConfig(api_token=TOKEN), now=lambda: NOW)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    return server, thread, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    base = tmp_path_factory.mktemp("pull")
    a = start_server(base / "a.db", {"gangnam": [5, 5, 4, 1], "shared": [3]})
    b = start_server(base / "b.db", {"seocho": [2, 2, 5], "shared": [4, 5]})
    yield a[2], b[2]
    for server, thread, _ in (a, b):
        server.should_exit = True
        thread.join(10)


def args(*argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_merge_is_exact(servers):
    result = pull(list(servers), TOKEN, ["site"])
    assert not result.partial
    rows = {r["site"]: r for r in result.rows}
    assert rows["shared"]["distribution"] == {"1": 0, "2": 0, "3": 1, "4": 1, "5": 1}
    assert rows["shared"]["count"] == 3
    assert sum(r["count"] for r in result.rows) == 10


def test_cli_json_with_a_server_down_is_partial(servers, tmp_path, capsys):
    down = f"http://127.0.0.1:{free_port()}"
    out = tmp_path / "all.json"
    code = run(args(servers[0], down, servers[1], "--token", TOKEN, "--by", "site", "--format", "json",
                    "--out", str(out), "--from", "2026-11-27", "--to", "2026-11-27", "--retries", "1",
                    "--timeout", "5"))
    assert code != 0
    err = capsys.readouterr().err
    assert "[2/3]" in err and down in err and "PARTIAL" in err
    document = json.loads(out.read_text())
    assert document["partial"] is True and document["failed"][0]["url"] == down
    assert document["total"]["count"] == 10  # the two that answered, exactly
    shared = next(r for r in document["rows"] if r["site"] == "shared")
    assert shared["mean"] == 4.0 and shared["csat"] == pytest.approx(66.67) and shared["index"] == 75.0


def test_csv_and_xlsx_carry_the_partial_note(servers, tmp_path):
    down = f"http://127.0.0.1:{free_port()}"
    out = tmp_path / "all.csv"
    assert run(args(servers[0], down, "--token", TOKEN, "--out", str(out), "--retries", "0",
                    "--from", "2026-11-27", "--to", "2026-11-27")) == 2
    rows = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8-sig"))))
    assert rows[0][-1] == "note" and all(r[-1].startswith("PARTIAL") and down in r[-1] for r in rows[1:])
    book_path = tmp_path / "all.xlsx"
    assert run(args(servers[0], down, "--token", TOKEN, "--format", "xlsx", "--out", str(book_path),
                    "--retries", "0", "--from", "2026-11-27", "--to", "2026-11-27")) == 2
    book = load_workbook(book_path)
    notes = [row[1] for row in book["summary"].iter_rows(values_only=True) if row[0] == "NOTE"]
    assert notes and notes[0].startswith("PARTIAL")
    assert run(args(servers[0], servers[1], "--token", TOKEN, "--format", "xlsx", "--out", str(book_path),
                    "--from", "2026-11-27", "--to", "2026-11-27")) == 0
    sheet = list(load_workbook(book_path)["aggregates"].iter_rows(values_only=True))
    assert sheet[0][:3] == ("site", "count", "1") and sum(r[1] for r in sheet[1:]) == 10


def test_wrong_token_is_a_failure_not_an_empty_answer(servers, capsys):
    result = pull([servers[0]], "wrong", ["day"])
    assert result.partial and "401" in result.failed[0][1] and result.rows == []


def test_bad_arguments(servers):
    with pytest.raises(ServerError):
        pull([servers[0], servers[0]], TOKEN, ["site"])  # counted twice
    with pytest.raises(ServerError):
        pull(["ftp://x"], TOKEN, ["site"])
    with pytest.raises(ServerError):
        run(args(servers[0], "--format", "xlsx", "--token", TOKEN))


def test_onetap_server_pull_command(servers, capsys):
    from server.__main__ import main

    assert main(["pull", *servers, "--token", TOKEN, "--format", "json", "--by", "site,terminal",
                 "--from", "2026-11-27", "--to", "2026-11-27"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["partial"] is False and document["total"]["count"] == 10
    assert main(["pull", servers[0], "--format", "json"]) == 1  # no token
    assert "no token" in capsys.readouterr().err
