"""`onetap-server demo`: the whole system starts, ratings flow, Ctrl-C stops it all."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.broker import free_port

BIN = Path(sys.executable).parent


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("broker_flag", [[], ["--embedded-broker"]], ids=["mosquitto", "embedded"])
def test_demo_serves_ratings_and_stops_cleanly(tmp_path, broker_flag):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    process = subprocess.Popen(
        [str(BIN / "onetap-server"), "demo", "--listen", f"127.0.0.1:{port}",
         "--data-dir", str(tmp_path / "demo"), *broker_flag],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        # A shell's background job ignores SIGINT; a person's Ctrl-C does not.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        banner = ""
        deadline = time.monotonic() + 60
        while "data:" not in banner and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            banner += line
        assert f"http://127.0.0.1:{port}/" in banner, process.stderr.read() if process.poll() else banner
        token = re.search(r"API token:\s+(\S+)", banner).group(1)
        broker_port = int(re.search(r"broker:\s+mqtt://127.0.0.1:(\d+)", banner).group(1))
        expected = "embedded" if broker_flag else "mosquitto"
        assert f"({expected})" in banner
        assert "simulated terminals" in banner, "no display: the demo simulates its kiosks"
        user, password = re.search(r"login:\s+(\S+) / (\S+)", banner).groups()

        base = f"http://127.0.0.1:{port}"
        health = {}
        while time.monotonic() < deadline:
            try:
                health = requests.get(f"{base}/healthz", timeout=2).json()
            except requests.RequestException:
                health = {}
            if health.get("broker") == "connected":
                break
            time.sleep(0.2)
        assert {k: health.get(k) for k in ("status", "broker", "db")} == {
            "status": "ok", "broker": "connected", "db": "ok"}
        assert health["threads"]["onetap-ingest"] == "running"
        assert requests.get(f"{base}/api/v1/summary", timeout=5).status_code == 401

        count = 0
        while time.monotonic() < deadline:
            count = requests.get(f"{base}/api/v1/summary", timeout=5,
                                 headers={"Authorization": f"Bearer {token}"}).json()["count"]
            if count >= 2:
                break
            time.sleep(0.5)
        assert count >= 2, "the simulated kiosks' taps never reached the server"

        # The dashboard login printed works, and 30 days of history are there.
        session = requests.Session()
        login_page = session.get(f"{base}/login", timeout=5)
        csrf = re.search(r'name="csrf" value="([^"]+)"', login_page.text).group(1)
        home = session.post(f"{base}/login", timeout=5, data={
            "username": user, "password": password, "csrf": csrf})
        assert home.status_code == 200 and "/login" not in home.url, "the printed login was refused"
        assert session.cookies, "no session after logging in with the printed login"
        history = requests.get(f"{base}/api/v1/summary", timeout=5,
                               headers={"Authorization": f"Bearer {token}"},
                               params={"from": "2000-01-01", "site": "demo"}).json()
        assert history["count"] > 500

        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
        assert "onetap demo stopped" in process.stdout.read()
        assert not _port_open(port), "the HTTP server outlived the demo"
        assert not _port_open(broker_port), "the broker outlived the demo"
        leftovers = subprocess.run(["pgrep", "-f", str(tmp_path / "demo")],
                                   capture_output=True, text=True).stdout.split()
        assert leftovers == [], "a kiosk or broker process outlived the demo"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_demo_with_a_kiosk_window(tmp_path):
    """Where there is a display the demo opens the real kiosk app (here SDL's offscreen one)."""
    port = free_port()
    env = {**os.environ, "SDL_VIDEODRIVER": "offscreen", "KIVY_NO_ARGS": "1",
           "KIVY_HOME": str(tmp_path / "kivy"), "KIVY_NO_CONSOLELOG": "1"}
    process = subprocess.Popen(
        [str(BIN / "onetap-server"), "demo", "--listen", f"127.0.0.1:{port}", "--kiosk", "window",
         "--no-history", "--data-dir", str(tmp_path / "demo")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        banner = ""
        while "data:" not in banner:
            line = process.stdout.readline()
            assert line, process.stderr.read()
            banner += line
        assert "kiosk:      a window" in banner
        token = re.search(r"API token:\s+(\S+)", banner).group(1)
        terminals = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                terminals = requests.get(f"http://127.0.0.1:{port}/api/v1/terminals", timeout=5,
                                         headers={"Authorization": f"Bearer {token}"}).json()
            except requests.RequestException:
                terminals = []
            if any(t["terminal"] == "counter-01" and t["state"] == "online" for t in terminals):
                break
            time.sleep(0.5)
        assert [(t["site"], t["terminal"], t["state"]) for t in terminals] == \
            [("demo", "counter-01", "online")], (tmp_path / "demo" / "kiosk.log").read_text()[-3000:]
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def without_kivy(directory: Path) -> str:
    """A PYTHONPATH like this venv's site-packages with Kivy left out (as a server-only install)."""
    import site

    directory.mkdir()
    for packages in site.getsitepackages():
        for entry in Path(packages).iterdir():
            if not entry.name.lower().startswith("kivy") and not (directory / entry.name).exists():
                (directory / entry.name).symlink_to(entry)
    return os.pathsep.join([str(Path(__file__).resolve().parents[2]), str(directory)])


def test_demo_without_kivy_simulates_its_terminals_even_with_a_display(tmp_path):
    """kiosk.ui imports on every install; only Kivy tells whether a window can open."""
    port = free_port()
    env = {**os.environ, "DISPLAY": ":99", "PYTHONPATH": without_kivy(tmp_path / "site")}
    probe = subprocess.run([sys.executable, "-S", "-c", "import kivy"], env=env, capture_output=True, text=True)
    assert "No module named 'kivy'" in probe.stderr  # the environment really lacks Kivy
    process = subprocess.Popen(
        [sys.executable, "-S", "-c", "import sys; from server.__main__ import main; sys.exit(main())",
         "demo", "--listen", f"127.0.0.1:{port}", "--no-history", "--data-dir", str(tmp_path / "demo")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        banner = ""
        while "data:" not in banner:
            line = process.stdout.readline()
            assert line, process.stderr.read()
            banner += line
        assert "kiosk:      3 simulated terminals" in banner
        token = re.search(r"API token:\s+(\S+)", banner).group(1)
        online = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(online) < 3:
            try:
                terminals = requests.get(f"http://127.0.0.1:{port}/api/v1/terminals", timeout=5,
                                         headers={"Authorization": f"Bearer {token}"}).json()
            except requests.RequestException:
                terminals = []
            online = sorted(t["terminal"] for t in terminals if t["state"] == "online")
            time.sleep(0.5)
        assert online == ["sim-001", "sim-002", "sim-003"], (tmp_path / "demo" / "kiosk.log").read_text()[-3000:]
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
