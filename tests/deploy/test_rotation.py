"""Rotating the server's broker password as docs/deploy.md says, on the installed broker: no rating lost or doubled."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import tomllib

import pytest

from server import provision
from tests.deploy.facility import BIN, Kiosk, Server, provision_server
from tests.deploy.installed_broker import InstalledMosquitto, login

SITE, TERMINAL = "gangnam-office", "counter-04"

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None,
                                reason="mosquitto not installed (apt-get install mosquitto)")


def test_rotating_the_server_password_loses_and_doubles_nothing(pki, tmp_path):
    broker = InstalledMosquitto(pki)
    etc_onetap = tmp_path / "etc-onetap"
    db = tmp_path / "onetap.db"
    try:
        first, config = provision_server(broker, etc_onetap, db)
        terminal = provision.provision_terminal(SITE, TERMINAL, f"mqtt://127.0.0.1:{broker.plain_port}",
                                                broker.passwd, broker.acl, tmp_path / "kiosk")
        broker.start()
        server = Server(config, tmp_path).start()
        kiosk = Kiosk(terminal.config_path, tmp_path / "outbox.db")
        try:
            taps = {kiosk.tap() for _ in range(3)}
            kiosk.drained()

            # docs/deploy.md: provision --service again, reload mosquitto, restart the server.
            code = subprocess.run(
                [str(BIN / "onetap-server"), "provision", "--service", "onetap-server",
                 "--passwd", str(broker.passwd), "--acl", str(broker.acl), "--out", str(etc_onetap)],
                capture_output=True, text=True)
            assert code.returncode == 0, code.stderr
            assert f"127.0.0.1:{broker.plain_port}" in config.read_text(), "the broker was rewritten"
            broker.reload()
            # Taps while the rotation is under way: the broker drops what it
            # gets for the server between the reload and the restart; the
            # kiosk's outbox resends it after its Ack timeout.
            taps |= {kiosk.tap() for _ in range(3)}
            server.restart()
            taps |= {kiosk.tap() for _ in range(3)}
            kiosk.drained()
            assert server.health()["broker"] == "connected"
        finally:
            kiosk.close()
            server.stop()
        # The old password is dead at the broker, the new one lives.
        assert login(broker.plain_port, "onetap-server", first.password).is_failure
        new_password = tomllib.loads(config.read_text())["password"]
        assert not login(broker.plain_port, "onetap-server", new_password).is_failure
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT id FROM ratings").fetchall()
        assert sorted(row[0] for row in rows) == sorted(taps), \
            "a rating was lost or counted twice across the rotation"
    finally:
        broker.cleanup()
