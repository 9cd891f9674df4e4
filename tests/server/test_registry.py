"""The terminal registry: provisioned terminals only, on their own site, re-read without a restart."""

from __future__ import annotations

import logging
import os

import pytest

from kiosk.protocol import encode_batch, topic
from server import provision
from server.config import ServerConfig
from server.errors import ConfigError
from server.link import Link
from server.registry import Registry
from server.store import SQLiteStore
from tests.server.test_link import DEADLINE, Terminal, rating

SITE = "gangnam-office"


def provisioned(tmp_path, *terminals: tuple[str, str]):
    passwd, acl, out = tmp_path / "passwd", tmp_path / "acl", tmp_path / "out"
    for site, terminal in terminals:
        provision.provision_terminal(site, terminal, "mqtt://127.0.0.1:1883", passwd, acl,
                                     out / terminal)
    return acl


def test_knows_provisioned_terminals_on_their_own_site_only(tmp_path):
    acl = provisioned(tmp_path, (SITE, "t1"), ("seocho-office", "t2"))
    provision.provision_service("onetap-server", tmp_path / "passwd", acl, tmp_path / "svc")
    registry = Registry(acl)
    assert registry.is_known(SITE, "t1") and registry.is_known("seocho-office", "t2")
    assert not registry.is_known("seocho-office", "t1")
    assert not registry.is_known(SITE, "t3")
    # The server's own account is no terminal.
    assert not any(name == "onetap-server" for _, name in registry.terminals)


def test_a_newly_provisioned_terminal_is_known_without_a_new_registry(tmp_path):
    acl = provisioned(tmp_path, (SITE, "t1"))
    registry = Registry(acl)
    assert not registry.is_known(SITE, "t2")
    provisioned(tmp_path, (SITE, "t2"))
    assert registry.is_known(SITE, "t2") and registry.is_known(SITE, "t1")


def test_an_edit_in_place_is_seen_too(tmp_path):
    acl = provisioned(tmp_path, (SITE, "t1"))
    registry = Registry(acl)
    before = os.stat(acl)
    with open(acl, "a", encoding="utf-8") as handle:
        handle.write(f"\nuser t9@{SITE}\ntopic write onetap/v1/{SITE}/t9/ratings\n")
    # Same inode; the size differs even where the clock's granularity would hide the mtime.
    assert os.stat(acl).st_ino == before.st_ino
    assert registry.is_known(SITE, "t9")


def test_missing_file_at_start_names_the_key_and_file(tmp_path):
    with pytest.raises(ConfigError, match=f"registry {tmp_path / 'nope.acl'}"):
        Registry(tmp_path / "nope.acl")


def test_unreadable_later_keeps_the_last_registry_and_says_so(tmp_path, caplog):
    acl = provisioned(tmp_path, (SITE, "t1"))
    registry = Registry(acl)
    acl.unlink()
    with caplog.at_level(logging.ERROR, logger="server.registry"):
        assert registry.is_known(SITE, "t1")
        assert registry.is_known(SITE, "t1")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, "logged once per outage, not once per message"
    assert "keeping the 1 terminals known" in errors[0].getMessage()
    assert not registry.is_known(SITE, "t2")


def test_link_accepts_only_registered_terminals_and_learns_new_ones(tmp_path, mosquitto):
    acl = provisioned(tmp_path, (SITE, "t1"))
    db_path = tmp_path / "onetap.db"
    config = ServerConfig(broker=mosquitto.url, client_id="onetap-registry-test", db=db_path,
                          session_expiry_s=600, registry=acl)
    link = Link(config, lambda: SQLiteStore.open(db_path)).start()
    assert link.wait_connected(DEADLINE)
    known = Terminal(mosquitto, db_path, site=SITE, terminal="t1")
    stranger = Terminal(mosquitto, db_path, site=SITE, terminal="t2")
    try:
        first, second = rating(1), rating(1)
        known.publish(topic(SITE, "t1", "ratings"), encode_batch(SITE, "t1", [first.encode()]))
        stranger.publish(topic(SITE, "t2", "ratings"), encode_batch(SITE, "t2", [second.encode()]))
        ack, stored = known.acks.get(timeout=DEADLINE)
        assert ack.accepted == (first.id,) and stored == 1
        ack, stored = stranger.acks.get(timeout=DEADLINE)
        assert ack.accepted == () and [i for i, _ in ack.rejected] == [second.id] and stored == 0
        assert "not provisioned" in ack.rejected[0][1]

        # Provisioned while the server runs: its next batch is accepted.
        provisioned(tmp_path, (SITE, "t2"))
        third = rating(2)
        stranger.publish(topic(SITE, "t2", "ratings"), encode_batch(SITE, "t2", [third.encode()]))
        ack, stored = stranger.acks.get(timeout=DEADLINE)
        assert ack.accepted == (third.id,) and stored == 1
    finally:
        known.close()
        stranger.close()
        link.stop()
    store = SQLiteStore.open(db_path)
    assert store.counts()["ratings"] == 2
    (row,) = store.quarantined()
    assert row["topic"] == topic(SITE, "t2", "ratings") and "not provisioned" in row["reason"]
    assert row["payload"] == encode_batch(SITE, "t2", [second.encode()])


def test_link_refuses_to_start_without_its_registry(tmp_path):
    config = ServerConfig(registry=tmp_path / "missing.acl", db=tmp_path / "x.db")
    with pytest.raises(ConfigError, match="missing.acl"):
        Link(config, lambda: SQLiteStore.open(config.db))
