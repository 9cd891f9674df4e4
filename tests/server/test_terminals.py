"""server/terminals.py: `onetap-server terminal list|retire` on both stores, the broker files and the alert rules."""

from __future__ import annotations

import io
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from kiosk.protocol import Rating, Status, format_timestamp
from server import passwd, provision, terminals
from server.__main__ import main
from server.alerts import AlertEngine
from server.config import ServerConfig
from server.store import Filters

KST = timezone(timedelta(hours=9))
NOW = datetime(2026, 11, 27, 11, 0, tzinfo=KST)  # a Friday, 11:00: opening hours
SITE = "gangnam-office"


def rate(store, terminal: str, count: int) -> None:
    ratings = [Rating(id=str(uuid.uuid4()), seq=seq, score=4, at=format_timestamp(NOW - timedelta(hours=1)),
                      clock_synced=True) for seq in range(1, count + 1)]
    store.ingest_batch(SITE, terminal, ratings, NOW - timedelta(hours=1))


def day_total(store) -> int:
    day = (NOW - timedelta(hours=1)).date()
    return sum(store.summary(Filters(date_from=day, date_to=day)).values())


def test_retired_terminal_keeps_its_ratings_and_leaves_board_and_alerts(store):
    rate(store, "counter-01", 3)
    rate(store, "counter-02", 2)
    for terminal in ("counter-01", "counter-02"):
        store.update_status(SITE, terminal, Status("offline"), NOW - timedelta(hours=1))
    engine = AlertEngine(store, ServerConfig())
    raised = engine.run_once(NOW)["raised"]
    assert {(a["terminal"], a["kind"]) for a in raised} == {("counter-01", "offline"),
                                                            ("counter-02", "offline")}
    assert store.retire_terminal(SITE, "counter-02", NOW)
    assert not store.retire_terminal(SITE, "counter-02", NOW + timedelta(minutes=1))
    assert [t["terminal"] for t in store.terminals()] == ["counter-01"]
    retired = [t for t in store.terminals(include_retired=True) if t["retired_at"]]
    assert [t["terminal"] for t in retired] == ["counter-02"]
    assert day_total(store) == 5, "a retired terminal's ratings must stay counted"
    changes = engine.run_once(NOW + timedelta(minutes=1))
    assert [(a["terminal"], a["kind"]) for a in changes["cleared"]] == [("counter-02", "offline")]
    assert {(a["terminal"], a["kind"]) for a in store.open_alerts()} == {("counter-01", "offline")}
    # A late status (a Last Will delivered after the retirement) does not bring it back.
    store.update_status(SITE, "counter-02", Status("offline"), NOW + timedelta(minutes=2))
    assert [t["terminal"] for t in store.terminals()] == ["counter-01"]
    assert not engine.run_once(NOW + timedelta(days=1))["raised"]


def test_a_terminal_provisioned_again_under_the_name_comes_back(store):
    """Retired, then a new kiosk is provisioned as counter-02: once it speaks
    (an online status or ratings), it is on the board and in the rules again."""
    rate(store, "counter-02", 2)
    assert store.retire_terminal(SITE, "counter-02", NOW)
    store.update_status(SITE, "counter-02", Status("online", {"backlog": 0}), NOW + timedelta(days=3))
    assert [t["terminal"] for t in store.terminals()] == ["counter-02"]
    assert store.terminals()[0]["retired_at"] is None
    # And it can be retired again.
    assert store.retire_terminal(SITE, "counter-02", NOW + timedelta(days=4))
    assert store.terminals() == []


def test_a_terminal_never_seen_can_be_retired(store):
    assert store.retire_terminal(SITE, "spare", NOW)
    assert store.terminals() == []
    assert store.terminals(include_retired=True)[0]["terminal"] == "spare"


def test_retiring_with_unsent_ratings_is_refused_without_force(store, tmp_path):
    store.update_status(SITE, "counter-03", Status("online", {"backlog": 7}), NOW)
    with pytest.raises(terminals.TerminalError, match="7 unsent ratings"):
        terminals.retire(store, SITE, "counter-03", now=NOW, passwd_path=None, acl_path=None)
    assert [t["terminal"] for t in store.terminals()] == ["counter-03"]
    terminals.retire(store, SITE, "counter-03", now=NOW, passwd_path=None, acl_path=None, force=True)
    assert store.terminals() == []


def test_the_command_removes_the_broker_account_and_lists_the_retired(tmp_path, backend):
    passwd_file, acl = tmp_path / "onetap.passwd", tmp_path / "onetap.acl"
    for terminal in ("counter-01", "counter-02"):
        provision.provision_terminal(SITE, terminal, "mqtt://127.0.0.1:1883", passwd_file, acl,
                                     tmp_path / terminal)
    provision.provision_service("onetap-server", passwd_file, acl, tmp_path / "etc")
    config = tmp_path / "etc" / "server.toml"
    config.write_text(config.read_text() + f'db = "{backend.db}"\n')
    store = backend.open()
    rate(store, "counter-02", 2)
    store.close()
    assert main(["terminal", "retire", "--config", str(config), "--site", SITE,
                 "--terminal", "counter-02", "--passwd", str(passwd_file)]) == 0
    assert passwd.read_registry(acl) == {(SITE, "counter-01")}
    assert "counter-02@" not in passwd_file.read_text() and "counter-01@" in passwd_file.read_text()
    assert "onetap-server:" in passwd_file.read_text()
    out = io.StringIO()
    args = build_args(["terminal", "list", "--config", str(config)])
    assert terminals.run(args, stdout=out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].startswith(f"{SITE}\tcounter-01\tnever seen")
    assert lines[1].startswith(f"{SITE}\tcounter-02\tretired ")
    store = backend.open()
    try:
        assert day_total(store) == 2
    finally:
        store.close()
    # An unknown terminal is an error, not a silent new row.
    assert main(["terminal", "retire", "--config", str(config), "--site", SITE,
                 "--terminal", "counter-99", "--passwd", str(passwd_file)]) == 1


def build_args(argv):
    from server.__main__ import build_parser

    return build_parser().parse_args(argv)


def test_acl_block_removal_keeps_every_other_line():
    text = ("# operator's header\n"
            "user a@s\n# onetap: terminal\ntopic write onetap/v1/s/a/ratings\npattern read $SYS/#\n\n"
            "user b@s\ntopic write onetap/v1/s/b/ratings\n")
    out = passwd.remove_acl_block(text, "a@s")
    assert out == ("# operator's header\npattern read $SYS/#\n"
                   "user b@s\ntopic write onetap/v1/s/b/ratings\n")
