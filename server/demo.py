"""`onetap-server demo`: a broker, the server and a kiosk together on one machine."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from server.broker import free_port, private_broker
from server.config import ServerConfig

log = logging.getLogger(__name__)

DEMO_SITE = "demo"
DEMO_TERMINAL = "counter-01"
# A simulated counter taps about once every few seconds, like a busy office.
SIMULATED_RATE = 0.3
SIMULATED_TERMINALS = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", metavar="HOST:PORT",
                        help="HTTP address (default 127.0.0.1:8080, or a free port if taken)")
    parser.add_argument("--data-dir", metavar="DIR", type=Path,
                        help="keep the demo's data here (default: a temporary directory, removed at exit)")
    parser.add_argument("--embedded-broker", action="store_true",
                        help="use the embedded Python broker even when mosquitto is installed")
    parser.add_argument("--kiosk", choices=("auto", "window", "simulated"), default="auto",
                        help="a kiosk window when there is a display (auto), or simulated terminals")
    parser.add_argument("--log-level", default="INFO", type=str.upper,
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="default INFO")


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def has_display(env: dict[str, str] | os._Environ) -> bool:
    return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


def kiosk_command(kind: str, broker_url: str, mqtt_protocol: str, data_dir: Path) -> list[str]:
    """The command line of the demo's kiosk: a window, or simulated terminals."""
    kiosk = shutil.which("onetap-kiosk") or str(Path(sys.executable).parent / "onetap-kiosk")
    if kind == "window":
        return [kiosk, "run", "--broker", broker_url, "--site", DEMO_SITE,
                "--terminal", DEMO_TERMINAL, "--data-dir", str(data_dir / "kiosk")]
    return [kiosk, "simulate", "--broker", broker_url, "--site", DEMO_SITE,
            "--terminals", str(SIMULATED_TERMINALS), "--taps", "1000000",
            "--rate", str(SIMULATED_RATE), "--data-dir", str(data_dir / "simulated"),
            "--mqtt-protocol", mqtt_protocol]


def choose_kiosk(requested: str, env) -> str:
    if requested != "auto":
        return requested
    if not has_display(env):
        return "simulated"
    try:
        import kiosk.ui  # noqa: F401 - only asks whether the UI is installed
    except ImportError:
        return "simulated"
    return "window"


def run(args: argparse.Namespace) -> int:
    from server.__main__ import serve

    logging.getLogger().setLevel(args.log_level)
    temporary = args.data_dir is None
    data_dir = Path(tempfile.mkdtemp(prefix="onetap-demo-")) if temporary else args.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    listen = args.listen
    if listen is None:
        listen = "127.0.0.1:8080" if _port_is_free("127.0.0.1", 8080) else f"127.0.0.1:{free_port()}"
    broker = private_broker(data_dir / "broker", embedded=args.embedded_broker)
    kiosk_process: subprocess.Popen | None = None
    try:
        broker.start()
        config = replace(
            ServerConfig(),
            broker=broker.url,
            mqtt_protocol=broker.mqtt_protocol,
            db=data_dir / "server.db",
            listen=listen,
            api_token=secrets.token_urlsafe(16),
        )
        kind = choose_kiosk(args.kiosk, os.environ)
        env = {**os.environ, "ONETAP_MQTT_PROTOCOL": broker.mqtt_protocol}
        kiosk_process = subprocess.Popen(
            kiosk_command(kind, broker.url, broker.mqtt_protocol, data_dir), env=env,
            stdout=subprocess.DEVNULL, stderr=open(data_dir / "kiosk.log", "ab"),
        )
        host, port = config.listen_address
        print(
            f"onetap demo is running (Ctrl-C stops it)\n"
            f"  dashboard:  http://{host}:{port}/\n"
            f"  API token:  {config.api_token}\n"
            f"  try:        curl -H 'Authorization: Bearer {config.api_token}' "
            f"http://{host}:{port}/api/v1/summary\n"
            f"  broker:     {broker.url} ({broker.kind})\n"
            f"  kiosk:      {'a window' if kind == 'window' else f'{SIMULATED_TERMINALS} simulated terminals'}"
            f" at site '{DEMO_SITE}'\n"
            f"  data:       {data_dir}{' (removed at exit)' if temporary else ''}",
            flush=True,
        )
        return serve(config)
    except KeyboardInterrupt:
        return 0  # Ctrl-C is how a demo ends
    finally:
        if kiosk_process is not None and kiosk_process.poll() is None:
            kiosk_process.terminate()
            try:
                kiosk_process.wait(10)
            except subprocess.TimeoutExpired:
                kiosk_process.kill()
                kiosk_process.wait()
        broker.stop()
        if temporary:
            shutil.rmtree(data_dir, ignore_errors=True)
        print("onetap demo stopped", flush=True)
