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
        assert health == {"status": "ok", "broker": "connected", "db": "ok"}
        assert requests.get(f"{base}/api/v1/summary", timeout=5).status_code == 401

        count = 0
        while time.monotonic() < deadline:
            count = requests.get(f"{base}/api/v1/summary", timeout=5,
                                 headers={"Authorization": f"Bearer {token}"}).json()["count"]
            if count >= 2:
                break
            time.sleep(0.5)
        assert count >= 2, "the simulated kiosks' taps never reached the server"

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
