"""A real mosquitto installed as docs/deploy.md says: Debian's stock mosquitto.conf, our conf.d files.

Only paths and ports are moved: Debian's file keeps every line (pid file,
persistence, log, include_dir), and deploy/mosquitto/*.conf are copied into the
included directory with their /etc/mosquitto/ paths pointed at a temporary
"etc" and their listener ports at free ones.
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from server.broker import BrokerError, free_port, launch_mosquitto
from server.process import stop_process
from tests.pki import Pki

DEPLOY_MOSQUITTO = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"
#: Debian 12's /etc/mosquitto/mosquitto.conf as the package ships it
#: (test_mosquitto_install.py checks it against dpkg's record when it can).
DEBIAN_STOCK = Path(__file__).resolve().parent / "debian-bookworm-mosquitto.conf"
#: What docs/deploy.md installs into /etc/mosquitto/conf.d/.
INSTALLED = ("onetap.conf", "onetap-secure.conf")


class InstalledMosquitto:
    """mosquitto -c <copy of Debian's mosquitto.conf> with deploy/mosquitto/ files in its conf.d."""

    def __init__(self, pki: Pki, extra_files: dict[str, str] | None = None):
        # Not pytest's tmp_path: run as root, mosquitto drops to its own user,
        # which must be able to reach its files as on a real server.
        self.root = Path(tempfile.mkdtemp(prefix="onetap-mosquitto-"))
        self.root.chmod(0o755)
        self.etc = self.root / "etc"
        self.conf_d = self.etc / "conf.d"
        self.certs = self.etc / "certs"
        for directory in (self.conf_d, self.certs, self.root / "run", self.root / "lib",
                          self.root / "log"):
            directory.mkdir(parents=True)
        self.plain_port = free_port()
        self.tls_port = free_port()
        self.passwd = self.etc / "onetap.passwd"
        self.acl = self.etc / "onetap.acl"
        self.log = self.root / "log" / "mosquitto.log"
        self.process: subprocess.Popen | None = None
        shutil.copy(pki.cert, self.certs / "broker.crt")
        shutil.copy(pki.key, self.certs / "broker.key")
        self.conf = self.etc / "mosquitto.conf"
        self.conf.write_text(self._stock())
        for name in INSTALLED:
            (self.conf_d / name).write_text(self.moved((DEPLOY_MOSQUITTO / name).read_text()))
        for name, text in (extra_files or {}).items():
            (self.conf_d / name).write_text(self.moved(text))
        if os.geteuid() == 0:
            # What Debian's package (/var/lib, /var/log) and unit (/run) do, and
            # docs/deploy.md step 2 does for the key.
            self._give_to_mosquitto(self.root / "run", self.root / "lib", self.root / "log",
                                    self.certs / "broker.key")

    @staticmethod
    def _give_to_mosquitto(*paths: Path) -> None:
        entry = pwd.getpwnam("mosquitto")
        for path in paths:
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _stock(self) -> str:
        moves = {
            "/run/mosquitto/mosquitto.pid": f"{self.root}/run/mosquitto.pid",
            "/var/lib/mosquitto/": f"{self.root}/lib/",
            "/var/log/mosquitto/mosquitto.log": str(self.log),
            "/etc/mosquitto/conf.d": str(self.conf_d),
        }
        text = DEBIAN_STOCK.read_text()
        for old, new in moves.items():
            assert old in text, f"Debian's mosquitto.conf no longer says {old}"
            text = text.replace(old, new)
        return text

    def moved(self, text: str) -> str:
        """A conf.d file with its paths under our etc and its listeners on our ports."""
        text = text.replace("/etc/mosquitto/", f"{self.etc}/")
        text = re.sub(r"^listener 1883 ", f"listener {self.plain_port} ", text, flags=re.M)
        return re.sub(r"^listener 8883\b", f"listener {self.tls_port}", text, flags=re.M)

    def start(self) -> "InstalledMosquitto":
        try:
            self.process = launch_mosquitto(self.conf, [self.plain_port, self.tls_port])
        except BrokerError as exc:
            raise RuntimeError(f"{exc}{self.read_log()}") from None
        return self

    def read_log(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def reload(self) -> None:
        """systemctl reload mosquitto: SIGHUP re-reads the password and ACL files."""
        os.kill(self.process.pid, signal.SIGHUP)

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def listening_sockets(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket *pid* listens on, read from /proc."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            address, port = local.split(":")
            found.add((_address(address), int(port, 16)))
    return found


def _address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    # /proc prints each 32-bit word in host (little-endian) order.
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def login(port: int, username: str, password: str, timeout: float = 10.0):
    """The CONNACK reason code mosquitto gives this account on loopback (MQTT 5)."""
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    answered = threading.Event()
    reasons = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.username_pw_set(username, password)
    client.on_connect = lambda c, u, f, rc, p: (reasons.append(rc), answered.set())
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        if not answered.wait(timeout):
            raise TimeoutError("no CONNACK")
    finally:
        client.disconnect()
        client.loop_stop()
    return reasons[0]
