"""Replacing a kiosk as docs/deploy.md says: its outbox moves to the new card, nothing stranded, seq goes on."""

from __future__ import annotations

import shutil
import sqlite3

import pytest

from kiosk.outbox import Outbox
from server import provision
from tests.deploy.facility import Kiosk, Server, provision_server
from tests.deploy.installed_broker import InstalledMosquitto

SITE, TERMINAL = "gangnam-office", "counter-04"

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None,
                                reason="mosquitto not installed (apt-get install mosquitto)")


def test_a_replacement_carries_the_old_outbox_and_continues_its_seq(pki, tmp_path):
    broker = InstalledMosquitto(pki)
    db = tmp_path / "onetap.db"
    try:
        _, config = provision_server(broker, tmp_path / "etc", db)
        url = f"mqtt://127.0.0.1:{broker.plain_port}"
        old_card = provision.provision_terminal(SITE, TERMINAL, url, broker.passwd, broker.acl,
                                                tmp_path / "old-card")
        broker.start()
        server = Server(config, tmp_path).start()
        try:
            # The old kiosk: some taps went out, then its network failed and
            # more waited in its outbox when it broke down.
            old_outbox = tmp_path / "old-card" / "var-lib-onetap-kiosk" / "outbox.db"
            old_outbox.parent.mkdir()
            old = Kiosk(old_card.config_path, old_outbox)
            sent = {old.tap() for _ in range(3)}
            old.drained()
            old.uplink.stop()
            stranded = {old.tap() for _ in range(4)}
            old.outbox.close()

            # docs/deploy.md, "Replacing a kiosk": provision it again (new
            # password and PIN), and before the new card's first start copy
            # the old card's outbox files into /var/lib/onetap-kiosk/.
            new_card = provision.provision_terminal(SITE, TERMINAL, url, broker.passwd, broker.acl,
                                                    tmp_path / "new-card")
            broker.reload()
            new_outbox = tmp_path / "new-card" / "var-lib-onetap-kiosk" / "outbox.db"
            new_outbox.parent.mkdir()
            for part in old_outbox.parent.glob("outbox.db*"):
                shutil.copy2(part, new_outbox.parent / part.name)
            new = Kiosk(new_card.config_path, new_outbox)
            later = {new.tap() for _ in range(2)}
            new.drained()
            new.close()
        finally:
            server.stop()
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT id, seq FROM ratings WHERE terminal = ?", [TERMINAL]).fetchall()
        assert {row[0] for row in rows} == sent | stranded | later, "a rating was stranded or doubled"
        assert sorted(row[1] for row in rows) == list(range(1, 10)), "seq restarted or jumped"
        after = Outbox.open(new_outbox)
        assert after.stats().backlog == 0
        after.close()
    finally:
        broker.cleanup()
