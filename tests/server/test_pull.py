"""`onetap-server pull` against live servers, each with its own token and its own counter-01, and hostile ones:
exact merge, terminals keyed by site, partial output marked, all-fail writes nothing, exit codes."""

import argparse
import csv
import http.server
import io
import json
import threading
import time
import uuid
from datetime import date, datetime, timezone

import pytest
from openpyxl import load_workbook

from kiosk.protocol import Rating
from server.__main__ import main
from server.api import create_app
from server.config import ServerConfig
from server.errors import ServerError
from server.pull import add_arguments, check_answer, last_complete_month, pull, request_keys, run
from server.store import SQLiteStore
from tests.broker import free_port
from tests.uvicorn_thread import serving

TOKENS = {"a": "gangnam-server-token-0123456789", "b": "seocho-server-token-9876543210"}
NOW = datetime(2026, 11, 27, 3, 0, tzinfo=timezone.utc)
DAY = ["--from", "2026-11-27", "--to", "2026-11-27"]


def facility_app(path, token, scores_by_site):
    """A facility server's app over a database holding *scores_by_site* at counter-01."""
    store = SQLiteStore.open(path)
    for site, scores in scores_by_site.items():
        # The low scores say why and who: codes a workbook must show as words.
        store.ingest_batch(site, "counter-01", [Rating(id=str(uuid.uuid4()), seq=i + 1, score=s,
                                                       at="2026-11-27T10:00:00.000+09:00", clock_synced=True,
                                                       reason="wait_time" if s <= 2 else None,
                                                       age_group="70plus" if s <= 2 else None)
                                                for i, s in enumerate(scores)], NOW)
    store.close()
    return create_app(lambda: SQLiteStore.open(path), ServerConfig(api_token=token), now=lambda: NOW)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Two facilities, each with its own token, and each with a counter-01."""
    base = tmp_path_factory.mktemp("pull")
    with serving(facility_app(base / "a.db", TOKENS["a"], {"gangnam": [5, 5, 4, 1], "shared": [3]})) as a, \
            serving(facility_app(base / "b.db", TOKENS["b"], {"seocho": [2, 2, 5], "shared": [4, 5]})) as b:
        yield a, b


@pytest.fixture
def tokens_file(servers, tmp_path):
    path = tmp_path / "tokens.toml"
    path.write_text(f'"{servers[0]}" = "{TOKENS["a"]}"\n"{servers[1]}/" = "{TOKENS["b"]}"\n')
    return path


def args(*argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


# -- hostile servers --------------------------------------------------------------

NESTED = b"[" * 100_000 + b"]" * 100_000


def good_body(by=("site",), **row):
    return json.dumps({"by": list(by), "rows": [{"site": "evil", "count": 1,
                                                 "distribution": {"1": 0, "2": 0, "3": 1, "4": 0, "5": 0},
                                                 **row}]}).encode()


#: name -> (status, content type, body, extra headers): what a broken or hostile server might answer.
HOSTILE = {
    "list-as-key": (200, "application/json", good_body(site=["a", "b"]), {}),
    "object-as-key": (200, "application/json", good_body(site={"x": 1}), {}),
    "nested": (200, "application/json", NESTED, {}),
    "nested-in-row": (200, "application/json",
                      b'{"by":["site"],"rows":[{"site":' + NESTED + b',"distribution":{}}]}', {}),
    "wrong-types": (200, "application/json", good_body(distribution={"1": "7", "2": 0, "3": 0, "4": 0, "5": 0}), {}),
    "huge-number": (200, "application/json", good_body(count=10 ** 30,
                                                       distribution={"1": 10 ** 30, "2": 0, "3": 0, "4": 0,
                                                                     "5": 0}), {}),
    "bignum-text": (200, "application/json", b'{"by":["site"],"rows":[{"site":"x","distribution":{"1":'
                    + b"9" * 5000 + b',"2":0,"3":0,"4":0,"5":0}}]}', {}),
    "negative": (200, "application/json", good_body(distribution={"1": -5, "2": 0, "3": 0, "4": 0, "5": 0},
                                                    count=-5), {}),
    "bool-count": (200, "application/json", good_body(distribution={"1": True, "2": 0, "3": 0, "4": 0, "5": 0},
                                                      count=True), {}),
    "surrogate-key": (200, "application/json", good_body(site="\ud800"), {}),
    "bad-site": (200, "application/json", good_body(site="=HYPERLINK(\"x\")"), {}),
    "rows-not-list": (200, "application/json", b'{"by":["site"],"rows":{"a":1}}', {}),
    "row-not-object": (200, "application/json", b'{"by":["site"],"rows":[[1,2]]}', {}),
    "answer-is-list": (200, "application/json", b"[1, 2, 3]", {}),
    "answer-is-number": (200, "application/json", b"1e999", {}),
    "other-by": (200, "application/json", good_body(by=("day",), day="2026-11-27"), {}),
    "missing-key": (200, "application/json", b'{"by":["site"],"rows":[{"distribution":{}}]}', {}),
    "not-json": (200, "application/json", b"{'by': ['site']", {}),
    "html": (200, "text/html", b"<html><body><h1>Welcome to nginx!</h1></body></html>", {}),
    "binary": (200, "application/octet-stream", bytes(range(256)) * 4, {}),
    "error-500": (500, "text/html", b"<h1>Internal Server Error</h1>", {}),
    "error-list-detail": (401, "application/json", b'["detail"]', {}),
    "error-object-detail": (403, "application/json", b'{"detail": {"a": [1]}}', {}),
    "retry-after-forever": (503, "text/plain", b"busy", {"Retry-After": "999999"}),
    "redirect": (302, "text/plain", b"", {"Location": "/elsewhere/api/v1/aggregates"}),
    "empty": (200, "application/json", b"", {}),
}


class Hostile(http.server.BaseHTTPRequestHandler):
    seen: list = []

    def do_GET(self):
        case = self.path.split("/")[1]
        Hostile.seen.append((case, self.headers.get("Authorization")))
        if case == "slow":
            time.sleep(3)
        if case == "trickle":
            self.send_response(200)
            self.send_header("Content-Length", "200")
            self.end_headers()
            try:
                for _ in range(200):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.2)
            except (BrokenPipeError, ConnectionResetError):
                pass  # pull gave up on us, as it should
            return
        status, kind, body, headers = HOSTILE.get(case, (200, "application/json", good_body(), {}))
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def hostile():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


# -- merging ------------------------------------------------------------------------


def test_merge_is_exact(servers):
    result = pull(list(servers), dict(zip(servers, TOKENS.values())), ["site"])
    assert not result.partial
    rows = {r["site"]: r for r in result.rows}
    assert rows["shared"]["distribution"] == {"1": 0, "2": 0, "3": 1, "4": 1, "5": 1}
    assert rows["shared"]["count"] == 3
    assert sum(r["count"] for r in result.rows) == 10


def test_a_terminal_is_keyed_by_its_site(servers, tokens_file, tmp_path):
    assert request_keys("terminal") == ("site", "terminal")
    assert request_keys("day,terminal") == ("day", "site", "terminal")
    assert request_keys("terminal,site") == ("terminal", "site")
    with pytest.raises(ValueError, match="terminal brings site"):
        request_keys("day,hour,terminal")
    out = tmp_path / "terminals.csv"
    assert run(args(*servers, "--tokens", str(tokens_file), "--by", "terminal", "--out", str(out), *DAY)) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8-sig"))))
    counts = {(r["site"], r["terminal"]): int(r["count"]) for r in rows}
    # Every facility has a counter-01: never added together across sites.
    assert counts == {("gangnam", "counter-01"): 4, ("shared", "counter-01"): 3, ("seocho", "counter-01"): 3}
    document_path = tmp_path / "three.json"
    assert run(args(*servers, "--tokens", str(tokens_file), "--by", "day,site,terminal", "--format", "json",
                    "--out", str(document_path), *DAY)) == 0
    document = json.loads(document_path.read_text())
    assert document["by"] == ["day", "site", "terminal"] and len(document["rows"]) == 3
    assert {(r["day"], r["site"], r["terminal"]) for r in document["rows"]} >= {("2026-11-27", "seocho", "counter-01")}
    book_path = tmp_path / "terminals.xlsx"
    assert run(args(*servers, "--tokens", str(tokens_file), "--by", "terminal", "--format", "xlsx",
                    "--out", str(book_path), *DAY)) == 0
    sheet = list(load_workbook(book_path)["집계"].iter_rows(values_only=True))
    assert sheet[0][:3] == ("기관", "단말기", "건수") and len(sheet) == 4


def test_each_server_gets_only_its_own_token(servers, hostile, tmp_path):
    Hostile.seen.clear()
    path = tmp_path / "tokens.toml"
    path.write_text(f'"{servers[0]}" = "{TOKENS["a"]}"\n"{servers[1]}" = "{TOKENS["b"]}"\n'
                    f'"{hostile}/spy" = "spy-server-own-token-000000"\n')
    out = tmp_path / "out.json"
    assert run(args(servers[0], f"{hostile}/spy", servers[1], "--tokens", str(path), "--format", "json",
                    "--out", str(out), *DAY)) == 0
    assert Hostile.seen == [("spy", "Bearer spy-server-own-token-000000")]
    assert json.loads(out.read_text())["total"]["count"] == 11  # the spy's one rating counts too
    # A redirect is not followed: the token never goes to where the server points.
    Hostile.seen.clear()
    result = pull([f"{hostile}/redirect"], {f"{hostile}/redirect": "redirect-own-token-0000"}, ["site"])
    assert [case for case, _ in Hostile.seen] == ["redirect"] and "redirect" in result.failed[0][1]
    # A server missing from the file is an error before anything is sent.
    Hostile.seen.clear()
    with pytest.raises(ServerError, match="no token for http://127.0.0.1:1"):
        run(args(f"{hostile}/spy", "http://127.0.0.1:1", "--tokens", str(path), *DAY))
    assert Hostile.seen == []


def test_token_and_tokens_are_exclusive(servers, tokens_file, capsys):
    with pytest.raises(SystemExit):
        args(servers[0], "--token", "x", "--tokens", str(tokens_file))
    assert "not allowed with" in capsys.readouterr().err


# -- hostile and failing servers ----------------------------------------------------------


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_any_answer_makes_that_server_partial_with_a_one_line_reason(servers, hostile, case, tmp_path, capsys):
    out = tmp_path / "out.csv"
    code = main(["pull", servers[0], f"{hostile}/{case}", "--token", TOKENS["a"], "--out", str(out),
                 "--retries", "1", "--timeout", "5", *DAY])
    err = capsys.readouterr().err
    assert code == 2, err
    failure = next(line for line in err.splitlines() if f"{hostile}/{case}" in line)
    assert "FAILED: " in failure and len(failure) < 300, failure
    assert "Traceback" not in err and "urllib3" not in err and "HTTPConnectionPool" not in err
    rows = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8-sig"))))
    assert all(r[-1].startswith("PARTIAL") and case in r[-1] for r in rows[1:])
    assert sum(int(r[1]) for r in rows[1:]) == 5  # the good server's figures, exactly


def test_reasons_say_what_happened(servers, hostile):
    down = f"http://127.0.0.1:{free_port()}"
    result = pull([servers[0], down, f"{hostile}/nested", f"{hostile}/html", f"{hostile}/error-500",
                   "http://no-such-host.invalid"], "wrong-token", ["site"], session=None, timeout=(3, 5))
    reasons = dict(result.failed)
    assert reasons[servers[0]].startswith("unauthorised") and "401" in reasons[servers[0]]
    assert reasons[down].startswith("refused")
    assert reasons[f"{hostile}/nested"] == "bad answer: the answer is JSON nested too deep"
    assert reasons[f"{hostile}/html"] == "bad answer: the answer is HTML"
    assert reasons[f"{hostile}/error-500"] == "HTTP 500"
    assert reasons["http://no-such-host.invalid"].startswith("unreachable")


def test_a_slow_server_times_out(hostile):
    started = time.monotonic()
    result = pull([f"{hostile}/slow"], "t", ["site"], timeout=(1, 1))
    assert result.failed[0][1] == "unreachable: timed out" and time.monotonic() - started < 30


def test_a_trickling_server_meets_the_deadline(hostile):
    started = time.monotonic()
    result = pull([f"{hostile}/trickle"], "t", ["site"], timeout=(1, 1))
    assert result.failed[0][1] == "bad answer: the answer took too long to arrive"
    assert time.monotonic() - started < 15


def test_check_answer_accepts_what_a_server_sends(servers):
    assert check_answer(json.loads(good_body(site="gangnam")), ["site"])[0]["site"] == "gangnam"
    assert check_answer({"by": ["reason"], "rows": [{"reason": None, "distribution": {
        "1": 1, "2": 0, "3": 0, "4": 0, "5": 0}}]}, ["reason"])[0]["count"] == 1


def test_all_servers_failing_is_exit_1_with_no_file(servers, hostile, tmp_path, capsys):
    down = f"http://127.0.0.1:{free_port()}"
    out = tmp_path / "none.csv"
    code = main(["pull", down, servers[0], f"{hostile}/nested", "--token", "not-the-token",
                 "--out", str(out), "--retries", "0", *DAY])
    err = capsys.readouterr().err
    assert code == 1 and not out.exists()
    lines = err.splitlines()
    assert any(down in line and "refused" in line for line in lines)
    assert any(servers[0] in line and "unauthorised" in line for line in lines)
    assert any("nested" in line and "bad answer" in line for line in lines)
    assert lines[-1].startswith("onetap-server: error: no server answered")
    assert "Traceback" not in err and "urllib3" not in err and "Max retries" not in err
    # Nothing on stdout either.
    assert main(["pull", down, "--token", "x", "--retries", "0", *DAY]) == 1
    assert capsys.readouterr().out == ""


def test_csv_and_xlsx_carry_the_partial_note_and_name_the_sources(servers, tmp_path):
    down = f"http://127.0.0.1:{free_port()}"
    out = tmp_path / "all.csv"
    token = TOKENS["a"]
    assert run(args(servers[0], down, "--token", token, "--out", str(out), "--retries", "0", *DAY)) == 2
    rows = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8-sig"))))
    assert rows[0][-1] == "note" and all(r[-1].startswith("PARTIAL") and down in r[-1] for r in rows[1:])
    book_path = tmp_path / "all.xlsx"
    assert run(args(servers[0], down, "--token", token, "--format", "xlsx", "--out", str(book_path),
                    "--retries", "0", *DAY)) == 2
    labels = {}
    for row in load_workbook(book_path)["요약"].iter_rows(values_only=True):
        labels.setdefault(row[0], []).append(row[1])
    assert labels["참고"][0].startswith("일부 서버의 자료가 빠진 집계") and labels["받은 서버"] == [servers[0]]
    assert down in labels["응답 없는 서버"][0]
    tokens = tmp_path / "t.toml"
    tokens.write_text(f'"{servers[0]}" = "{TOKENS["a"]}"\n"{servers[1]}" = "{TOKENS["b"]}"\n')
    assert run(args(*servers, "--tokens", str(tokens), "--format", "xlsx", "--out", str(book_path), *DAY)) == 0
    book = load_workbook(book_path)
    summary = list(book["요약"].iter_rows(values_only=True))
    assert [r[1] for r in summary if r[0] == "받은 서버"] == list(servers)
    assert [r[1:3] for r in summary if r[0] == "기간"] == [(datetime(2026, 11, 27), datetime(2026, 11, 27))]
    assert not any(r[0] in ("참고", "응답 없는 서버") for r in summary)
    sheet = list(book["집계"].iter_rows(values_only=True))
    assert sheet[0][:3] == ("기관", "건수", "1점") and sum(r[1] for r in sheet[1:]) == 10


def test_the_workbook_names_keys_and_labels_codes_in_korean_or_english(servers, tokens_file, tmp_path):
    book_path = tmp_path / "reasons.xlsx"
    for lang, sheet_name, header, words in (
            ("ko", "집계", ("날짜", "사유", "연령대", "건수"), {"응답 없음", "대기 시간", "70세 이상"}),
            ("en", "Aggregates", ("Day", "Reason", "Age group", "Count"), {"No answer", "Waiting time", "70 or over"})):
        assert run(args(*servers, "--tokens", str(tokens_file), "--by", "day,reason,age_group",
                        "--format", "xlsx", "--lang", lang, "--out", str(book_path), *DAY)) == 0
        sheet = list(load_workbook(book_path)[sheet_name].iter_rows(values_only=True))
        assert sheet[0][:4] == header
        cells = [value for row in sheet[1:] for value in row[:3]]
        # No raw code in a workbook for people: days are dates, answers are words.
        assert not {"wait_time", "staff_attitude", "70plus", "under20"} & set(cells), cells
        assert words <= set(cells) and all(isinstance(row[0], datetime) for row in sheet[1:])


def test_default_range_is_the_last_complete_month_and_said(servers, tokens_file, capsys):
    assert last_complete_month(date(2026, 12, 15)) == (date(2026, 11, 1), date(2026, 11, 30))
    assert last_complete_month(date(2026, 1, 1)) == (date(2025, 12, 1), date(2025, 12, 31))
    assert run(args(*servers, "--tokens", str(tokens_file), "--format", "json"), today=date(2026, 12, 3)) == 0
    captured = capsys.readouterr()
    assert "2026-11-01 to 2026-11-30 (the last complete month" in captured.err
    assert json.loads(captured.out)["total"]["count"] == 10  # the 27th is in November
    assert run(args(*servers, "--tokens", str(tokens_file), "--format", "json"), today=date(2027, 1, 3)) == 0
    assert json.loads(capsys.readouterr().out)["total"]["count"] == 0
    with pytest.raises(ServerError, match="both --from and --to"):
        run(args(*servers, "--tokens", str(tokens_file), "--from", "2026-11-01"))


def test_help_says_the_defaults(capsys):
    from server.__main__ import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["pull", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "last complete month" in text and "--tokens FILE" in text and "one to three" in text
    assert "terminal always comes with its site" in text and "1 none did" in text


def test_bad_arguments(servers):
    with pytest.raises(ServerError):
        pull([servers[0], servers[0] + "/"], TOKENS["a"], ["site"])  # counted twice
    with pytest.raises(ServerError):
        pull(["ftp://x"], TOKENS["a"], ["site"])
    with pytest.raises(ServerError):
        run(args(servers[0], "--format", "xlsx", "--token", TOKENS["a"]))


def test_bad_tokens_files(servers, tmp_path):
    path = tmp_path / "t.toml"
    for text, message in (('"x" = ', "not valid TOML"), (f'"{servers[0]}" = 5', "non-empty string"),
                          ('"ftp://x" = "t"', "not an http")):
        path.write_text(text)
        with pytest.raises(ServerError, match=message):
            run(args(servers[0], "--tokens", str(path), *DAY))
    with pytest.raises(ServerError, match="no such file"):
        run(args(servers[0], "--tokens", str(tmp_path / "nope.toml"), *DAY))


def test_onetap_server_pull_command(servers, tokens_file, capsys, monkeypatch):
    monkeypatch.delenv("ONETAP_PULL_TOKEN", raising=False)
    assert main(["pull", *servers, "--tokens", str(tokens_file), "--format", "json", "--by", "site,terminal",
                 *DAY]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["partial"] is False and document["total"]["count"] == 10
    assert main(["pull", servers[0], "--format", "json"]) == 1  # no token
    assert "no token" in capsys.readouterr().err
