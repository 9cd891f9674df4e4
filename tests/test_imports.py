"""The packages import on a laptop without the kiosk's or the server's heavy extras."""

import subprocess
import sys

BLOCKED = ("kivy", "gpiozero", "fastapi", "uvicorn", "openpyxl", "psycopg", "amqtt", "requests")

PROBE = f"""
import sys
for name in {BLOCKED!r}:
    sys.modules[name] = None  # any import of it now raises ImportError
import kiosk, kiosk.protocol, kiosk.config, kiosk.outbox, kiosk.uplink, kiosk.flow
import kiosk.catalog, kiosk.survey, kiosk.simulator, kiosk.clock, kiosk.terminal, kiosk.__main__
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


# -- contracts: which module may import what -------------------------------------------

import ast  # noqa: E402
from pathlib import Path  # noqa: E402

KIOSK = Path(__file__).resolve().parents[1] / "kiosk"
HEAVY = ("paho", "gpiozero", "kivy", "sqlite3")


def imported_roots(path: Path) -> set[str]:
    """Top-level packages a module's own source imports (anywhere in it, lazily too)."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_the_kiosk_core_imports_no_paho_gpiozero_kivy_or_sqlite3():
    """kiosk.flow and kiosk.terminal, with everything they import in turn."""
    probe = ("import sys\nimport kiosk.flow, kiosk.terminal\n"
             f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_kivy_gpiozero_and_paho_each_live_behind_their_one_module():
    owners = {"kivy": lambda rel: rel.parts[0] == "ui",
              "gpiozero": lambda rel: rel == Path("buttons.py"),
              "paho": lambda rel: rel == Path("uplink.py")}
    modules = sorted(KIOSK.rglob("*.py"))
    assert len(modules) > 10
    trespassers = [f"{path.relative_to(KIOSK)} imports {name}"
                   for path in modules for name in imported_roots(path) & owners.keys()
                   if not owners[name](path.relative_to(KIOSK))]
    assert trespassers == []


def test_the_contract_check_sees_imports(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from kivy.app import App\n    import paho.mqtt.client\n")
    assert imported_roots(sample) == {"kivy", "paho"}
