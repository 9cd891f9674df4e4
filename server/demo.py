"""`onetap-server demo`: a broker, the server and a kiosk together on one machine."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from server.broker import free_port, private_broker
from server.config import ServerConfig, UserConfig
from server.passwd import new_secret

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
    parser.add_argument("--no-history", action="store_true",
                        help="do not seed 30 days of past ratings for the dashboard's trends")
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


def seed_history(config: ServerConfig, days: int = 30, seed: int = 20261127) -> int:
    """Store *days* of plausible past ratings for the demo's terminals, so trends have data.

    Through the real store, so the dashboard reads them as it reads live ones.
    """
    import random
    import uuid
    from datetime import datetime, time as clock, timedelta, timezone

    from kiosk.protocol import AGE_GROUPS, DEFAULT_REASONS, Rating, format_timestamp
    from server.store import SQLiteStore

    rng = random.Random(seed)
    tz = config.tz
    today = datetime.now(tz).date()
    store = SQLiteStore.open(config.db, config.timezone)
    total = 0
    try:
        for n, terminal in enumerate(("hist-01", "hist-02", "hist-03")):
            ratings = []
            seq = 0
            for back in range(days, 0, -1):
                day = today - timedelta(days=back)
                if day.isoweekday() > 5:
                    continue
                # A queue system arrives two weeks ago: waits, and scores, improve.
                better = back <= 14
                for _ in range(rng.randint(25, 45)):
                    seq += 1
                    moment = datetime.combine(day, clock(rng.randint(9, 17), rng.randrange(60)), tz)
                    weights = (2, 4, 10, 30, 30) if better else (6, 10, 20, 28, 18)
                    score = rng.choices((1, 2, 3, 4, 5), weights)[0]
                    reason = rng.choice(("wait_time", "wait_time", *DEFAULT_REASONS)) \
                        if score <= 2 else None
                    ratings.append(Rating(
                        str(uuid.UUID(int=rng.getrandbits(128), version=4)), seq, score,
                        format_timestamp(moment), True, reason,
                        rng.choice((None, *AGE_GROUPS)), rng.choice(("ko",) * 8 + ("en", "zh", "vi")),
                        "touch" if n else rng.choice(("touch", "button"))))
            received = datetime.now(timezone.utc)
            for start in range(0, len(ratings), 500):
                store.ingest_many([(DEMO_SITE, terminal, ratings[start:start + 500])], received)
            total += len(ratings)
    finally:
        store.close()
    return total


def choose_kiosk(requested: str, env) -> str:
    """A kiosk window where there is a display and Kivy is installed, else simulated terminals."""
    if requested != "auto":
        return requested
    if not has_display(env):
        return "simulated"
    # kiosk.ui is part of every installation; Kivy, which it needs, only of the kiosk's.
    if importlib.util.find_spec("kivy") is None:
        return "simulated"
    return "window"


def run(args: argparse.Namespace) -> int:
    from server.service import serve

    logging.getLogger().setLevel(args.log_level)
    from server.auth import hash_password

    password = new_secret(9)
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
            api_token=new_secret(16),
            users={"demo": UserConfig(hash_password(password), None)},
            survey={"question": {"ko": "오늘 받으신 서비스에 만족하셨나요?",
                                 "en": "Were you satisfied with our service today?"},
                    "reason_threshold": 2, "age_group": True},
        )
        seeded = seed_history(config) if not args.no_history else 0
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
            f"  login:      demo / {password}\n"
            f"  API token:  {config.api_token}\n"
            f"  try:        curl -H 'Authorization: Bearer {config.api_token}' "
            f"http://{host}:{port}/api/v1/summary\n"
            f"  broker:     {broker.url} ({broker.kind})\n"
            f"  kiosk:      {'a window' if kind == 'window' else f'{SIMULATED_TERMINALS} simulated terminals'}"
            f" at site '{DEMO_SITE}'\n"
            f"  history:    {seeded} ratings over the past 30 days (terminals hist-01..03)\n"
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
