"""Central office: `onetap-server pull` fetches /api/v1/aggregates from many servers and merges them exactly."""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import IO, Any, Callable, Mapping, Sequence
from urllib.parse import urlsplit

from kiosk.protocol import is_identifier
from onetap_config import read_toml
from server.aggregate import AGGREGATE_KEYS, MAX_BY, merge, merge_rows, parse_by, summarize
from server.errors import ServerError
from server.outbound import retrying_session

log = logging.getLogger(__name__)

PROG = "onetap-server pull"
TOKEN_ENV = "ONETAP_PULL_TOKEN"
#: An answer larger than this is not an aggregates document (a year by day and
#: terminal for a large facility is a few MiB).
MAX_ANSWER_BYTES = 64 * 1024 * 1024
#: No real count comes near this; a bigger one is a broken or hostile server.
MAX_COUNT = 10 ** 12
#: Longest text a key value (a reason, a language...) may have.
MAX_KEY_TEXT = 64


class BadAnswer(ValueError):
    """A server answered, but not with a usable aggregates document."""


@dataclass
class PullResult:
    by: tuple[str, ...]
    rows: list[dict[str, Any]]
    servers: list[str]
    failed: list[tuple[str, str]] = field(default_factory=list)
    #: The days asked for (None: each server's default).
    date_from: date | None = None
    date_to: date | None = None

    @property
    def partial(self) -> bool:
        return bool(self.failed)

    @property
    def answered(self) -> list[str]:
        failed = {url for url, _ in self.failed}
        return [url for url in self.servers if url not in failed]

    def note(self) -> str:
        if not self.failed:
            return ""
        return "PARTIAL: no data from " + "; ".join(f"{url} ({error})" for url, error in self.failed)


def make_session(*, retries: int = 3, verify: bool | str = True) -> Any:
    """A requests.Session retrying GETs on connection errors, 429 and 5xx, verifying TLS
    (see server.outbound: our own bounded back-off, never the server's Retry-After)."""
    return retrying_session(retries=retries, methods=("GET",), user_agent="onetap-pull", verify=verify)


def _endpoint(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ServerError(f"{url!r} is not an http:// or https:// server URL")
    return url.rstrip("/") + "/api/v1/aggregates"


def _same_server(url: str) -> str:
    """A server URL as a --tokens key: scheme and host in lower case, no trailing slash."""
    parts = urlsplit(url.strip())
    return parts._replace(scheme=parts.scheme.lower(), netloc=parts.netloc.lower(),
                          path=parts.path.rstrip("/")).geturl()


def request_keys(by: str | Sequence[str]) -> tuple[str, ...]:
    """The keys to ask every server for: *by*, with ``site`` before ``terminal``
    when only ``terminal`` is named (every facility has a ``counter-01``)."""
    keys = [k.strip() for k in by.split(",")] if isinstance(by, str) else list(by)
    if "terminal" in keys and "site" not in keys:
        keys.insert(keys.index("terminal"), "site")
        if len(keys) > MAX_BY:
            raise ValueError(f"by: at most {MAX_BY} keys, and terminal brings site with it"
                             f" ({','.join(keys)})")
    return parse_by(keys)


def _why(exc: BaseException) -> str:
    """One line saying why a request failed, without urllib3's trace."""
    import requests

    reason: BaseException | None = exc
    seen = set()
    # requests wraps urllib3's MaxRetryError, which wraps the real cause.
    while reason is not None and id(reason) not in seen:
        seen.add(id(reason))
        text = str(reason).lower()
        if isinstance(reason, requests.exceptions.SSLError) or "certificate" in text:
            return "unreachable: its TLS certificate was not accepted"
        if isinstance(reason, (requests.exceptions.ConnectTimeout, requests.exceptions.ReadTimeout)) \
                or "timed out" in text:
            return "unreachable: timed out"
        if "refused" in text:
            return "refused: nothing listens there (connection refused)"
        if "name or service not known" in text or "nodename nor servname" in text \
                or "failed to resolve" in text or "temporary failure in name resolution" in text:
            return "unreachable: the host name is unknown"
        if "reset by peer" in text or "remotedisconnected" in text or "connection aborted" in text:
            return "unreachable: the connection was closed before an answer"
        reason = getattr(reason, "reason", None) or reason.__cause__ or reason.__context__ or (
            reason.args[0] if reason.args and isinstance(reason.args[0], BaseException) else None)
    if isinstance(exc, requests.exceptions.TooManyRedirects):
        return "bad answer: redirects"
    return f"unreachable: {type(exc).__name__}"


def _status_reason(status: int, body: Any) -> str:
    detail = body.get("detail") if isinstance(body, dict) else None
    said = f": {detail}" if isinstance(detail, str) and len(detail) <= 200 and detail.isprintable() else ""
    if status == 401:
        return f"unauthorised: the token was refused (HTTP 401{said})"
    if status == 403:
        return f"forbidden: the token may not read this (HTTP 403{said})"
    if 300 <= status < 400:
        return f"bad answer: a redirect (HTTP {status}), not followed with the token"
    return f"HTTP {status}{said}"


def _key_value(key: str, value: Any) -> Any:
    """*value* if it can be a *key* of a row, else BadAnswer."""
    if value is None and key not in ("day", "hour", "weekday", "site", "terminal"):
        return value
    if key in ("hour", "weekday"):
        top = 23 if key == "hour" else 7
        if type(value) is not int or not 0 <= value <= top:
            raise BadAnswer(f"a row's {key} is {_short(value)}, not 0..{top}")
        return value
    if not isinstance(value, str):
        raise BadAnswer(f"a row's {key} is {_short(value)}, not text")
    if key == "day":
        try:
            date.fromisoformat(value)
        except ValueError:
            raise BadAnswer(f"a row's day is {_short(value)}, not a date") from None
        if len(value) != 10:
            raise BadAnswer(f"a row's day is {_short(value)}, not YYYY-MM-DD")
    elif key in ("site", "terminal"):
        if not is_identifier(value):
            raise BadAnswer(f"a row's {key} is {_short(value)}, not an identifier")
    elif len(value) > MAX_KEY_TEXT or not value.isprintable() or any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise BadAnswer(f"a row's {key} is {_short(value)}, not a short printable code")
    return value


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, (list, dict)) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def check_answer(body: Any, by: Sequence[str]) -> list[dict[str, Any]]:
    """The rows of an aggregates answer for *by*, each checked; BadAnswer saying what is wrong."""
    if not isinstance(body, dict):
        raise BadAnswer(f"the answer is a JSON {type(body).__name__}, not an aggregates object")
    if body.get("by") != list(by):
        raise BadAnswer(f"the answer is grouped by {_short(body.get('by'))}, not {list(by)}")
    rows = body.get("rows")
    if not isinstance(rows, list):
        raise BadAnswer("the answer has no list of rows")
    out = []
    for row in rows:
        if not isinstance(row, dict):
            raise BadAnswer(f"a row is {_short(row)}, not an object")
        clean = {key: _key_value(key, row.get(key)) if key in row else _missing(key) for key in by}
        distribution = row.get("distribution")
        if not isinstance(distribution, dict) or set(distribution) != {"1", "2", "3", "4", "5"}:
            raise BadAnswer(f"a row's distribution is {_short(distribution)}, not counts for scores 1..5")
        for score, count in distribution.items():
            if type(count) is not int or not 0 <= count <= MAX_COUNT:
                raise BadAnswer(f"a row's count for score {score} is {_short(count)}")
        count = row.get("count", sum(distribution.values()))
        if count != sum(distribution.values()) or type(count) is not int:
            raise BadAnswer(f"a row's count {_short(count)} is not the sum of its distribution")
        out.append({**clean, "count": count, "distribution": dict(distribution)})
    return out


def _missing(key: str) -> Any:
    raise BadAnswer(f"a row has no {key}")


def _read_json(response: Any, deadline: float) -> Any:
    """The response body as JSON, read at most MAX_ANSWER_BYTES and until *deadline*."""
    chunks, size = [], 0
    # read1 returns what has arrived, so a server trickling a byte at a time
    # meets the deadline instead of holding one read open for hours.
    while chunk := response.raw.read1(65536):
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise BadAnswer(f"the answer is larger than {MAX_ANSWER_BYTES // (1024 * 1024)} MiB")
        if time.monotonic() > deadline:
            raise BadAnswer("the answer took too long to arrive")
        chunks.append(chunk)
    data = b"".join(chunks)
    try:
        return json.loads(data)
    except RecursionError:
        raise BadAnswer("the answer is JSON nested too deep") from None
    except (ValueError, UnicodeDecodeError):
        kind = "HTML" if data.lstrip()[:1] == b"<" else "not JSON"
        raise BadAnswer(f"the answer is {kind}") from None


def pull(urls: Sequence[str], token: str | Mapping[str, str], by: Sequence[str], *, date_from: date | None = None,
         date_to: date | None = None, session: Any = None, timeout: tuple[float, float] = (5.0, 60.0),
         progress: Callable[[int, int, str, str], None] | None = None) -> PullResult:
    """Fetch every server's aggregates and merge them; a failing server is listed, never skipped silently.

    *token* is one token for every server, or each server URL's own token: a
    server is only ever sent its own."""
    import requests

    by = parse_by(by)
    if len({_same_server(url) for url in urls}) != len(urls):
        raise ServerError("a server URL is given twice (its ratings would be counted twice)")
    endpoints = [_endpoint(url) for url in urls]
    if isinstance(token, str):
        tokens = {url: token for url in urls}
    else:
        own = {_same_server(url): value for url, value in token.items()}
        missing = [url for url in urls if _same_server(url) not in own]
        if missing:
            raise ServerError(f"no token for {', '.join(missing)}")
        tokens = {url: own[_same_server(url)] for url in urls}
    session = session or make_session()
    params = {"by": ",".join(by)}
    if date_from:
        params["from"] = date_from.isoformat()
    if date_to:
        params["to"] = date_to.isoformat()
    row_sets, failed = [], []
    for number, (url, endpoint) in enumerate(zip(urls, endpoints), 1):
        try:
            rows = _fetch(session, endpoint, params, tokens[url], timeout, by)
            row_sets.append(rows)
            status = f"ok, {len(rows)} rows"
        except BadAnswer as exc:
            failed.append((url, str(exc)))
            status = f"FAILED: {failed[-1][1]}"
        except requests.RequestException as exc:
            failed.append((url, _why(exc)))
            status = f"FAILED: {failed[-1][1]}"
        except Exception as exc:  # noqa: BLE001 - whatever a server sends, the others' figures still come out
            log.debug("unexpected failure pulling %s", url, exc_info=True)
            failed.append((url, f"bad answer: {type(exc).__name__}"))
            status = f"FAILED: {failed[-1][1]}"
        if progress is not None:
            progress(number, len(urls), url, status)
    return PullResult(by, merge_rows(row_sets, by), list(urls), failed, date_from, date_to)


def _fetch(session: Any, endpoint: str, params: dict, token: str, timeout: tuple[float, float],
           by: Sequence[str]) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout[0] + 2 * timeout[1]
    # No redirects: a redirect could carry this server's token to another host.
    with session.get(endpoint, params=params, timeout=timeout, stream=True, allow_redirects=False,
                     headers={"Authorization": f"Bearer {token}"}) as response:
        if response.status_code != 200:
            try:
                body = _read_json(response, deadline)
            except BadAnswer:
                body = None
            raise BadAnswer(_status_reason(response.status_code, body))
        try:
            return check_answer(_read_json(response, deadline), by)
        except BadAnswer as exc:
            raise BadAnswer(f"bad answer: {exc}") from None


def last_complete_month(today: date) -> tuple[date, date]:
    last = today.replace(day=1) - timedelta(days=1)
    return last.replace(day=1), last


def _flat(result: PullResult) -> tuple[list[str], list[list[Any]]]:
    header = [*result.by, "count", "1", "2", "3", "4", "5", "mean", "csat", "index"]
    rows = []
    for row in result.rows:
        s = summarize(row["distribution"])
        rows.append([*(row[k] for k in result.by), s.count, *(s.distribution[k] for k in range(1, 6)),
                     s.mean, s.csat, s.index])
    return header, rows


def write(result: PullResult, fmt: str, out: IO[bytes], lang: str = "ko") -> None:
    """*result* as *fmt*; *lang* is the workbook's (the CSV and JSON carry codes, for programs)."""
    if fmt == "json":
        total = summarize(merge(r["distribution"] for r in result.rows))
        document = {"by": list(result.by), "partial": result.partial, "servers": result.servers,
                    "failed": [{"url": u, "error": e} for u, e in result.failed],
                    "note": result.note() or None, "total": total.to_json(), "rows": [
                        {**row, **{k: v for k, v in summarize(row["distribution"]).to_json().items()
                                   if k in ("mean", "csat", "index")}} for row in result.rows]}
        out.write(json.dumps(document, ensure_ascii=False, indent=1).encode("utf-8") + b"\n")
    elif fmt == "csv":
        from server.export import csv_cell

        header, rows = _flat(result)
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\r\n")
        text.write("\ufeff")
        # A partial answer says so on every row, so no copy of the figures loses it.
        writer.writerow(header + (["note"] if result.partial else []))
        note = [result.note()] if result.partial else []
        for row in rows:
            writer.writerow([csv_cell(v) for v in row] + note)
        if result.partial and not rows:
            writer.writerow([""] * len(header) + note)
        out.write(text.getvalue().encode("utf-8"))
    elif fmt == "xlsx":
        from server.export import write_aggregates_xlsx

        write_aggregates_xlsx(out, result.by, result.rows, answered=result.answered,
                              failed=result.failed, period=(result.date_from, result.date_to), lang=lang)
    else:
        raise ServerError(f"unknown format {fmt!r}")


def read_tokens(path: str) -> dict[str, str]:
    """``--tokens FILE``: a TOML table of server URL -> that server's token."""
    table = read_toml(Path(path), ServerError, label=f"--tokens {path}", what="file")
    for url, token in table.items():
        if not isinstance(token, str) or not token:
            raise ServerError(f'--tokens {path}: "{url}" must be = "its token" (a non-empty string)')
        _endpoint(url)
    return table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("urls", nargs="+", metavar="URL", help="each server's base URL, e.g. https://gangnam.example.org")
    tokens = parser.add_mutually_exclusive_group()
    tokens.add_argument("--token", help=f"one bearer token valid on every server (or ${TOKEN_ENV})")
    tokens.add_argument("--tokens", metavar="FILE", help='TOML file of "URL" = "token", one token per server'
                        " (each server is sent only its own)")
    parser.add_argument("--from", dest="date_from", type=date.fromisoformat, metavar="D",
                        help="first day YYYY-MM-DD (with --to; default: the last complete month)")
    parser.add_argument("--to", dest="date_to", type=date.fromisoformat, metavar="D",
                        help="last day YYYY-MM-DD (with --from; default: the last complete month)")
    parser.add_argument("--by", default="site", metavar="KEYS",
                        help=f"one to three of {', '.join(AGGREGATE_KEYS)}, comma-separated (default site);"
                             " terminal always comes with its site")
    parser.add_argument("--format", choices=("csv", "json", "xlsx"), default="csv")
    parser.add_argument("--out", metavar="FILE", help="output file (default stdout; xlsx needs a file)")
    parser.add_argument("--lang", choices=("ko", "en"), default="ko",
                        help="the workbook's language (xlsx; default ko): named keys, labelled codes")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")
    parser.add_argument("--retries", type=int, default=3, help="retries per server (default 3)")
    parser.add_argument("--ca", metavar="FILE", help="CA bundle for servers with a private CA (TLS is always verified)")
    parser.epilog = ("Exit status: 0 every server answered; 2 some did not (the output is marked PARTIAL);"
                     " 1 none did (nothing is written).")


def run(args: argparse.Namespace, today: date | None = None) -> int:
    if args.tokens:
        token: str | dict[str, str] = read_tokens(args.tokens)
    else:
        token = args.token or os.environ.get(TOKEN_ENV) or ""
        if not token:
            raise ServerError(f"no token: give --token, --tokens FILE or set {TOKEN_ENV}")
    if args.format == "xlsx" and not args.out:
        raise ServerError("--format xlsx needs --out FILE")
    try:
        by = request_keys(args.by)
    except ValueError as exc:
        raise ServerError(str(exc)) from None
    if (args.date_from is None) != (args.date_to is None):
        raise ServerError("give both --from and --to, or neither (the last complete month)")
    date_from, date_to = args.date_from, args.date_to
    if date_from is None:
        date_from, date_to = last_complete_month(today or date.today())
        print(f"{PROG}: {date_from} to {date_to} (the last complete month; --from/--to for another range)",
              file=sys.stderr, flush=True)
    if date_from > date_to:
        raise ServerError("--from is after --to")
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise ServerError("--timeout must be a positive number of seconds")

    def progress(number: int, total: int, url: str, status: str) -> None:
        print(f"{PROG}: [{number}/{total}] {url} {status}", file=sys.stderr, flush=True)

    session = make_session(retries=max(0, args.retries), verify=args.ca or True)
    result = pull(args.urls, token, by, date_from=date_from, date_to=date_to, session=session,
                  timeout=(min(10.0, args.timeout), args.timeout), progress=progress)
    if not result.answered:
        raise ServerError(f"no server answered ({len(result.servers)} tried); nothing written")
    if args.out:
        with open(args.out, "wb") as handle:
            write(result, args.format, handle, args.lang)
    else:
        write(result, args.format, sys.stdout.buffer, args.lang)
        sys.stdout.flush()
    if result.partial:
        print(f"{PROG}: the output is PARTIAL: {len(result.failed)} of {len(result.servers)} servers failed",
              file=sys.stderr)
        return 2
    return 0
