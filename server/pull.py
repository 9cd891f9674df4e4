"""Central office: `onetap-server pull` fetches /api/v1/aggregates from many servers and merges them exactly."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from dataclasses import dataclass, field
from datetime import date
from typing import IO, Any, Callable, Sequence
from urllib.parse import urlsplit

from server.aggregate import merge, merge_rows, parse_by, summarize
from server.errors import ServerError

PROG = "onetap-server pull"
TOKEN_ENV = "ONETAP_PULL_TOKEN"


@dataclass
class PullResult:
    by: tuple[str, ...]
    rows: list[dict[str, Any]]
    servers: list[str]
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def partial(self) -> bool:
        return bool(self.failed)

    def note(self) -> str:
        if not self.failed:
            return ""
        return "PARTIAL: no data from " + "; ".join(f"{url} ({error})" for url, error in self.failed)


def make_session(*, retries: int = 3, verify: bool | str = True) -> Any:
    """A requests.Session retrying GETs on connection errors, 429 and 5xx, verifying TLS."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    session = requests.Session()
    retry = Retry(total=retries, connect=retries, read=retries, status=retries, backoff_factor=0.5,
                  status_forcelist=(429, 500, 502, 503, 504), allowed_methods=frozenset({"GET"}),
                  raise_on_status=False)
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.verify = verify
    session.headers["User-Agent"] = "onetap-pull"
    return session


def _endpoint(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ServerError(f"{url!r} is not an http:// or https:// server URL")
    return url.rstrip("/") + "/api/v1/aggregates"


def pull(urls: Sequence[str], token: str, by: Sequence[str], *, date_from: date | None = None,
         date_to: date | None = None, session: Any = None, timeout: tuple[float, float] = (5.0, 60.0),
         progress: Callable[[int, int, str, str], None] | None = None) -> PullResult:
    """Fetch every server's aggregates and merge them; a failing server is listed, never skipped silently."""
    import requests

    by = parse_by(by)
    if len(set(urls)) != len(urls):
        raise ServerError("a server URL is given twice (its ratings would be counted twice)")
    endpoints = [_endpoint(url) for url in urls]
    session = session or make_session()
    params = {"by": ",".join(by)}
    if date_from:
        params["from"] = date_from.isoformat()
    if date_to:
        params["to"] = date_to.isoformat()
    row_sets, failed = [], []
    for number, (url, endpoint) in enumerate(zip(urls, endpoints), 1):
        try:
            response = session.get(endpoint, params=params, timeout=timeout,
                                   headers={"Authorization": f"Bearer {token}"})
            if response.status_code != 200:
                detail = ""
                try:
                    detail = f": {response.json().get('detail')}"
                except ValueError:
                    pass
                raise ValueError(f"HTTP {response.status_code}{detail}")
            body = response.json()
            if not isinstance(body, dict) or body.get("by") != list(by) or not isinstance(body.get("rows"), list):
                raise ValueError("the answer is not an aggregates document for this 'by'")
            # Validate this server's rows alone so one bad server cannot spoil the rest.
            merge_rows([body["rows"]], by)
            row_sets.append(body["rows"])
            status = f"ok, {len(body['rows'])} rows"
        except (requests.RequestException, ValueError) as exc:
            failed.append((url, str(exc) or type(exc).__name__))
            status = f"FAILED: {exc}"
        if progress is not None:
            progress(number, len(urls), url, status)
    return PullResult(by, merge_rows(row_sets, by), list(urls), failed)


def _flat(result: PullResult) -> tuple[list[str], list[list[Any]]]:
    header = [*result.by, "count", "1", "2", "3", "4", "5", "mean", "csat", "index"]
    rows = []
    for row in result.rows:
        s = summarize(row["distribution"])
        rows.append([*(row[k] for k in result.by), s.count, *(s.distribution[k] for k in range(1, 6)),
                     s.mean, s.csat, s.index])
    return header, rows


def write(result: PullResult, fmt: str, out: IO[bytes]) -> None:
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

        notes = [result.note()] if result.partial else []
        notes += [f"server: {url}" for url in result.servers]
        write_aggregates_xlsx(out, result.by, result.rows, notes)
    else:
        raise ServerError(f"unknown format {fmt!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("urls", nargs="+", metavar="URL", help="each server's base URL, e.g. https://gangnam.example.org")
    parser.add_argument("--token", help=f"bearer token valid on every server (or ${TOKEN_ENV})")
    parser.add_argument("--from", dest="date_from", type=date.fromisoformat, metavar="D", help="first day YYYY-MM-DD")
    parser.add_argument("--to", dest="date_to", type=date.fromisoformat, metavar="D", help="last day YYYY-MM-DD")
    parser.add_argument("--by", default="site", metavar="KEYS", help="one or two of day, hour, weekday, site,"
                        " terminal, reason, age_group, lang, input (default site)")
    parser.add_argument("--format", choices=("csv", "json", "xlsx"), default="csv")
    parser.add_argument("--out", metavar="FILE", help="output file (default stdout; xlsx needs a file)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")
    parser.add_argument("--retries", type=int, default=3, help="retries per server (default 3)")
    parser.add_argument("--ca", metavar="FILE", help="CA bundle for servers with a private CA (TLS is always verified)")


def run(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get(TOKEN_ENV)
    if not token:
        raise ServerError(f"no token: give --token or set {TOKEN_ENV}")
    if args.format == "xlsx" and not args.out:
        raise ServerError("--format xlsx needs --out FILE")
    try:
        by = parse_by(args.by)
    except ValueError as exc:
        raise ServerError(str(exc)) from None
    if args.date_from and args.date_to and args.date_from > args.date_to:
        raise ServerError("--from is after --to")

    def progress(number: int, total: int, url: str, status: str) -> None:
        print(f"{PROG}: [{number}/{total}] {url} {status}", file=sys.stderr, flush=True)

    session = make_session(retries=args.retries, verify=args.ca or True)
    result = pull(args.urls, token, by, date_from=args.date_from, date_to=args.date_to, session=session,
                  timeout=(min(10.0, args.timeout), args.timeout), progress=progress)
    if args.out:
        with open(args.out, "wb") as handle:
            write(result, args.format, handle)
    else:
        write(result, args.format, sys.stdout.buffer)
        sys.stdout.flush()
    if result.partial:
        for url, error in result.failed:
            print(f"{PROG}: error: {url}: {error}", file=sys.stderr)
        print(f"{PROG}: the output is PARTIAL: {len(result.failed)} of {len(result.servers)} servers failed",
              file=sys.stderr)
        return 2
    return 0
