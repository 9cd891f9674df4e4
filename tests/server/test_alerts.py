"""Alerts: rules at a given time, suspect bursts on crafted taps, webhook delivery to a local receiver, MQTT payloads."""

import json
import threading
import uuid
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from kiosk.protocol import Rating, SiteAlerts, Status, format_timestamp
from server.alerts import AlertEngine, AlertRunner, detect_suspects, evaluate, is_open, terminal_state
from server.config import AlertsConfig, ServerConfig
from server.store import Filters, SQLiteStore

KST = timezone(timedelta(hours=9))
NOW = datetime(2026, 11, 27, 11, 0, tzinfo=KST)  # a Friday, 11:00 in Seoul
RULES = AlertsConfig()


def ts(moment):
    return format_timestamp(moment)


def tap(seq, at, score=5):
    return Rating(id=str(uuid.uuid4()), seq=seq, score=score, at=ts(at), clock_synced=True)


@pytest.fixture
def store(tmp_path):
    store = SQLiteStore.open(tmp_path / "onetap.db")
    yield store
    store.close()


def test_terminal_state_and_opening_hours():
    fresh = {"state": "online", "updated_at": ts(NOW - timedelta(seconds=90))}
    old = {"state": "online", "updated_at": ts(NOW - timedelta(seconds=121))}
    assert terminal_state(NOW, fresh, 60) == "online"
    assert terminal_state(NOW, old, 60) == "stale"
    assert terminal_state(NOW, {"state": "offline"}, 60) == "offline"
    assert terminal_state(NOW, {"state": "weird"}, 60) == "unknown"
    assert is_open(NOW, RULES.hours)
    assert not is_open(NOW.replace(hour=19), RULES.hours)
    assert not is_open(NOW + timedelta(days=1), RULES.hours)  # Saturday


def test_rules():
    terminals = [
        {"site": "s", "terminal": "off", "state": "offline", "updated_at": ts(NOW - timedelta(minutes=11))},
        {"site": "s", "terminal": "just-off", "state": "offline", "updated_at": ts(NOW - timedelta(minutes=2))},
        {"site": "s", "terminal": "stuck", "state": "online", "updated_at": ts(NOW), "backlog": 40,
         "oldest_pending_at": ts(NOW - timedelta(hours=1)), "clock_synced": False},
        {"site": "s", "terminal": "fine", "state": "online", "updated_at": ts(NOW), "backlog": 2,
         "oldest_pending_at": ts(NOW - timedelta(seconds=5)), "clock_synced": True},
    ]
    lows = [{"site": "s", "terminal": "fine", "score": 1, "at": ts(NOW - timedelta(minutes=m))} for m in (1, 5, 29)]
    lows += [{"site": "s", "terminal": "stuck", "score": 2, "at": ts(NOW - timedelta(minutes=m))} for m in (1, 2, 31)]
    kinds = {(c.terminal, c.kind) for c in evaluate(NOW, terminals, lows, RULES, KST)}
    assert kinds == {("off", "offline"), ("stuck", "backlog"), ("stuck", "clock"), ("fine", "low_scores")}
    # Closed: an offline terminal is no alarm.
    evening = NOW.replace(hour=20)
    assert ("off", "offline") not in {(c.terminal, c.kind) for c in evaluate(evening, terminals, [], RULES, KST)}


def test_a_kiosk_staff_call_raises_a_help_alert_even_after_hours():
    """The kiosk's help_requested status flag (its staff-call control) is an alert on the board."""
    calling = {"site": "s", "terminal": "k1", "state": "online", "updated_at": ts(NOW), "help_requested": True}
    quiet = {**calling, "terminal": "k2", "help_requested": False}
    for moment in (NOW, NOW.replace(hour=20)):
        conditions = evaluate(moment, [calling, quiet], [], RULES, KST)
        assert [(c.terminal, c.kind) for c in conditions] == [("k1", "help")]
    # The flag validates as part of a status; a non-boolean is refused.
    assert Status.decode(b'{"v":1,"state":"online","at":"2026-11-27T11:00:00+09:00","backlog":0,"seq":1,'
                         b'"help_requested":true}').fields["help_requested"] is True
    with pytest.raises(ValueError):
        Status.decode(b'{"v":1,"state":"online","at":"2026-11-27T11:00:00+09:00","backlog":0,"seq":1,'
                      b'"help_requested":"yes"}')


def test_detect_suspects_on_crafted_bursts():
    start = NOW - timedelta(minutes=30)
    rows, seq = [], 0

    def add(gap_s, score, n):
        nonlocal seq
        at = _last[0]
        for _ in range(n):
            at = at + timedelta(seconds=gap_s)
            seq += 1
            rows.append({"pk": seq, "seq": seq, "score": score, "at": ts(at)})
        _last[0] = at

    _last = [start]
    add(20, 4, 10)          # people: 1..10
    add(0.2, 5, 6)          # a burst of 6 taps 0.2 s apart: 11..16 (chain includes tap 10)
    add(30, 3, 3)           # 17..19
    add(2, 1, 25)           # 25 ones, 2 s apart: 20..44 (machine pace run)
    add(2, 2, 5)            # varied scores at 2 s: not a run, not a burst
    add(2, 4, 1)
    add(2, 5, 1)
    suspects = detect_suspects(rows, RULES)
    assert set(range(10, 17)) <= suspects
    assert set(range(20, 45)) <= suspects
    assert not suspects & set(range(1, 10))
    assert not suspects & set(range(17, 20))
    assert not suspects & set(range(45, 52))
    # a seq gap no longer breaks a chain: missing taps make the claimed pace faster, not slower
    gapped = [dict(r, seq=r["seq"] + (100 if r["pk"] > 12 else 0)) for r in rows[9:15]]
    assert detect_suspects(gapped, RULES) == {r["pk"] for r in gapped}


class Receiver:
    """A local webhook endpoint: fails the first *failures* requests with 503."""

    def __init__(self, failures=0):
        self.bodies, self.failures, self.calls = [], failures, 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.calls += 1
                if outer.calls <= outer.failures:
                    self.send_response(503)
                    self.end_headers()
                    return
                outer.bodies.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def config(**alerts):
    return ServerConfig(alerts=replace(RULES, **alerts))


def test_engine_raises_delivers_and_clears(store):
    receiver = Receiver(failures=2)
    published = []
    try:
        engine = AlertEngine(store, config(webhook_url=receiver.url, webhook_retries=3),
                             publish=lambda t, p: published.append((t, vars(SiteAlerts.decode(p)))))
        store.update_status("gangnam", "c1", Status("online", {"clock_synced": False}),
                            NOW - timedelta(seconds=30))
        changes = engine.run_once(NOW)
        assert [a["kind"] for a in changes["raised"]] == ["clock"]
        assert receiver.calls == 3  # two 503s, then delivered
        assert receiver.bodies == [{"v": 1, "event": "raised", "alert": changes["raised"][0]}]
        assert published[-1][0] == "onetap/v1/gangnam/alerts"
        assert [a["kind"] for a in published[-1][1]["alerts"]] == ["clock"]
        # The same condition in the next pass raises nothing new.
        assert engine.run_once(NOW + timedelta(seconds=30)) == {"raised": [], "cleared": []}
        store.update_status("gangnam", "c1", Status("online", {"clock_synced": True}), NOW + timedelta(minutes=1))
        changes = engine.run_once(NOW + timedelta(minutes=1))
        assert [a["kind"] for a in changes["cleared"]] == ["clock"]
        assert receiver.bodies[-1]["event"] == "cleared"
        assert published[-1][1]["alerts"] == ()  # the retained list is empty again
        assert store.open_alerts() == []
    finally:
        receiver.close()


def test_webhook_down_does_not_stop_evaluation(store):
    engine = AlertEngine(store, config(webhook_url="http://127.0.0.1:9/none", webhook_retries=1,
                                       webhook_timeout_s=1))
    store.update_status("s", "c1", Status("online", {"clock_synced": False}), NOW)
    assert len(engine.run_once(NOW)["raised"]) == 1
    assert len(store.open_alerts()) == 1  # still shown on the dashboard


def test_engine_flags_suspects_incrementally_and_never_deletes(store):
    engine = AlertEngine(store, config())
    start = NOW - timedelta(minutes=10)
    human = [tap(i, start + timedelta(seconds=20 * i), score=4) for i in range(1, 6)]
    store.ingest_batch("s", "c1", human, NOW)
    assert engine.run_once(NOW)["raised"] == []
    # A burst arriving in two batches, the chain crossing the pass boundary.
    t0 = start + timedelta(seconds=200)
    burst = [tap(5 + i, t0 + timedelta(seconds=0.1 * i), score=5) for i in range(1, 13)]
    store.ingest_batch("s", "c1", burst[:2], NOW)
    engine.run_once(NOW)
    store.ingest_batch("s", "c1", burst[2:], NOW)
    changes = engine.run_once(NOW + timedelta(seconds=30))
    assert [a["kind"] for a in changes["raised"]] == ["suspect"]
    day = Filters(date(2026, 11, 27), date(2026, 11, 27))
    assert store.counts()["ratings"] == 17
    flagged = store.summary(replace(day, suspect=True))
    assert sum(flagged.values()) >= 12  # the burst (and the human tap it began from)
    assert sum(store.summary(replace(day, suspect=False)).values()) + sum(flagged.values()) == 17
    # Acknowledging an event alert closes it.
    pk = changes["raised"][0]["pk"]
    assert store.ack_alert(pk, "kim", NOW)
    assert store.alerts()[0]["acked_by"] == "kim"


def test_runner_thread_evaluates_with_its_own_connection(tmp_path):
    path = tmp_path / "onetap.db"
    setup = SQLiteStore.open(path)
    setup.update_status("s", "c1", Status("online", {"clock_synced": False}), NOW)
    setup.close()
    runner = AlertRunner(config(interval_s=1), lambda: SQLiteStore.open(path), now=lambda: NOW).start()
    try:
        check = SQLiteStore.open(path)
        deadline = datetime.now() + timedelta(seconds=30)
        while not check.open_alerts() and datetime.now() < deadline:
            threading.Event().wait(0.05)
        assert [a["kind"] for a in check.open_alerts()] == ["clock"]
        check.close()
    finally:
        runner.stop()


def test_detect_suspects_on_the_servers_own_evidence():
    received = ts(NOW)
    start = NOW - timedelta(hours=2)
    # Claimed a minute apart (human), seqs skipping, all delivered at once: made up.
    holes = [{"pk": i, "seq": 3 * i, "score": 4, "at": ts(start + timedelta(minutes=i)),
              "received_at": received} for i in range(1, 6)]
    assert detect_suspects(holes, RULES) == {1, 2, 3, 4, 5}
    # The same seqs received live, each a minute apart: not evidence of anything.
    live = [dict(r, received_at=r["at"]) for r in holes]
    assert detect_suspects(live, RULES) == set()
    # A repeated seq inside one delivery is a hole too.
    repeats = [dict(r, seq=7) for r in holes]
    assert detect_suspects(repeats, RULES) == {1, 2, 3, 4, 5}
    # Equal scores claimed 3.5 s apart (just over run_interval_s) but delivered together.
    run = [{"pk": i, "seq": i, "score": 5, "at": ts(start + timedelta(seconds=3.5 * i)),
            "received_at": received} for i in range(1, RULES.run_length + 1)]
    assert detect_suspects(run, RULES) == set(range(1, RULES.run_length + 1))
    assert detect_suspects(run[1:], RULES) == set()  # one short of a run
    assert detect_suspects([dict(r, received_at=r["at"]) for r in run], RULES) == set()
    # A clock_suspect rating is timed by its receipt, not its far-off claim.
    far = [{"pk": i, "seq": i, "score": 3, "at": "9999-12-31T23:59:59Z", "clock_suspect": 1,
            "received_at": ts(NOW + timedelta(seconds=0.1 * i))} for i in range(1, 6)]
    assert detect_suspects(far, RULES) == {1, 2, 3, 4, 5}


def test_evaluate_never_converts_a_time_outside_the_window():
    terminals = [{"site": "s", "terminal": "t", "state": "online", "updated_at": ts(NOW), "backlog": 4,
                  "oldest_pending_at": "0001-01-01T00:00:00+14:00"},
                 {"site": "s", "terminal": "u", "state": "online", "updated_at": ts(NOW), "backlog": "x",
                  "oldest_pending_at": "9999-12-31T23:59:59Z"}]
    lows = [{"site": "s", "terminal": "t", "score": 1, "at": "0001-01-01T00:00:00+14:00"}]
    assert evaluate(NOW, terminals, lows, RULES, KST) == []
