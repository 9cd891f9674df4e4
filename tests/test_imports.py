"""The packages import on a laptop without the kiosk's or the server's heavy extras."""

import subprocess
import sys

BLOCKED = ("kivy", "gpiozero", "fastapi", "uvicorn", "openpyxl", "psycopg", "amqtt", "requests")

PROBE = f"""
import sys
for name in {BLOCKED!r}:
    sys.modules[name] = None  # any import of it now raises ImportError
import kiosk, kiosk.protocol, kiosk.config, kiosk.outbox, kiosk.uplink, kiosk.flow
import kiosk.catalog, kiosk.survey, kiosk.simulator, kiosk.clock, kiosk.__main__
import server, server.config, server.store, server.ingest, server.link, server.aggregate
import server.alerts, server.compare, server.survey, server.registry, server.retention
import server.backend, server.provision, server.passwd, server.__main__
import server.supervisor, server.periodic, server.watchdog
print("ok")
"""


def test_core_modules_import_without_kivy_gpiozero_or_the_web_stack():
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True)
    assert done.stdout.strip() == "ok", done.stderr[-2000:]


def test_the_probe_does_block_what_it_names():
    probe = "import sys\nsys.modules['kivy'] = None\nimport kiosk.ui.shell\n"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode != 0 and "kivy" in done.stderr
