"""server/provision.py: accounts, ACL blocks, the registry, files and the command line."""

import argparse
import os
import pwd
import re
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from kiosk.config import load_config
from kiosk.protocol import is_hashed_pin as is_hashed, pin_matches
from server import passwd, provision

ROOT = Path(__file__).resolve().parents[2]
SITE, OTHER = "gangnam-office", "seocho-office"


def run_cli(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="onetap-server provision")
    provision.add_arguments(parser)
    args = parser.parse_args(list(argv))
    import contextlib
    import io
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = provision.run(args)
    return code, out.getvalue(), err.getvalue()


def files(tmp_path):
    return tmp_path / "passwd", tmp_path / "acl", tmp_path / "out"


def test_terminal_account_rules_and_kiosk_toml(tmp_path):
    pw, acl, out = files(tmp_path)
    code, stdout, _ = run_cli("--site", SITE, "--terminal", "counter-03",
                              "--broker", "mqtt://127.0.0.1:1883",
                              "--passwd", str(pw), "--acl", str(acl), "--out", str(out))
    assert code == 0
    kiosk_toml = out / "kiosk.toml"
    assert stdout.strip() == str(kiosk_toml)
    assert stat.S_IMODE(kiosk_toml.stat().st_mode) == 0o600
    assert stat.S_IMODE(pw.stat().st_mode) == 0o600
    data = tomllib.loads(kiosk_toml.read_text())
    assert data == {
        "site": SITE, "terminal": "counter-03", "broker": "mqtt://127.0.0.1:1883",
        "mqtt": {"username": "counter-03@gangnam-office", "password": data["mqtt"]["password"]},
        "ui": {"maintenance_pin": data["ui"]["maintenance_pin"]},
        "audit": {"key_file": provision.KEY_FILE,
                  "chain_seed": data["audit"]["chain_seed"]},
    }
    user, hashed = pw.read_text().strip().split(":", 1)
    assert user == "counter-03@gangnam-office"
    assert passwd.verify_password(data["mqtt"]["password"], hashed)
    rules = [line for line in acl.read_text().splitlines()
             if line and not line.startswith("#")]
    assert rules == [
        "user counter-03@gangnam-office",
        "topic write onetap/v1/gangnam-office/counter-03/ratings",
        "topic write onetap/v1/gangnam-office/counter-03/status",
        "topic read onetap/v1/gangnam-office/counter-03/ack",
        "topic read onetap/v1/gangnam-office/counter-03/config",
    ]
    # The file the kiosk's own loader reads, unchanged.
    config = load_config(kiosk_toml, env={})
    assert (config.site, config.terminal, config.mqtt.username) == (
        SITE, "counter-03", "counter-03@gangnam-office")
    assert config.mqtt.password == data["mqtt"]["password"]


def test_service_account_and_server_toml(tmp_path):
    pw, acl, out = files(tmp_path)
    code, _, _ = run_cli("--service", "onetap-server", "--passwd", str(pw), "--acl", str(acl),
                         "--out", str(out))
    assert code == 0
    server_toml = out / "server.toml"
    assert stat.S_IMODE(server_toml.stat().st_mode) == 0o600
    data = tomllib.loads(server_toml.read_text())
    assert data["broker"] == provision.DEFAULT_SERVICE_BROKER
    assert data["username"] == data["client_id"] == "onetap-server"
    assert passwd.verify_password(data["password"], pw.read_text().split(":", 1)[1].strip())
    # Every key is one the server's config documents (deploy/server.example.toml).
    documented = tomllib.loads((ROOT / "deploy" / "server.example.toml").read_text())
    assert set(data) <= set(documented)
    assert "topic read onetap/v1/+/+/ratings" in acl.read_text()
    assert "topic write onetap/v1/+/+/ack" in acl.read_text()
    # A service is not a terminal.
    assert passwd.read_registry(acl) == set()


def test_rotation_changes_one_account_and_keeps_every_other_line(tmp_path):
    pw, acl, out = files(tmp_path)
    pw.write_text("# operator's own account\nadmin:$7$101$AAAA$BBBB\n")
    acl.write_text("# global\npattern read $SYS/#\n\nuser admin\ntopic readwrite #\n")
    a = provision.provision_terminal(SITE, "a", "mqtt://127.0.0.1", pw, acl, tmp_path / "ka")
    b = provision.provision_terminal(SITE, "b", "mqtt://127.0.0.1", pw, acl, tmp_path / "kb")
    before_pw = pw.read_text().splitlines()
    before_acl = acl.read_text()
    a2 = provision.provision_terminal(SITE, "a", "mqtt://127.0.0.1", pw, acl, tmp_path / "ka")
    assert a2.password != a.password
    after_pw = pw.read_text().splitlines()
    changed = [(old, new) for old, new in zip(before_pw, after_pw) if old != new]
    assert len(after_pw) == len(before_pw) and len(changed) == 1
    assert changed[0][1].startswith("a@gangnam-office:")
    assert passwd.verify_password(a2.password, changed[0][1].split(":", 1)[1])
    assert acl.read_text() == before_acl  # same rules, same place
    assert "admin:$7$101$AAAA$BBBB" in after_pw
    b_line = next(line for line in after_pw if line.startswith("b@"))
    assert passwd.verify_password(b.password, b_line.split(":", 1)[1])
    assert passwd.read_registry(acl) == {(SITE, "a"), (SITE, "b")}


def test_acl_block_replacement_keeps_operator_patterns():
    text = "user x@s\ntopic read old\npattern read $SYS/broker/#\nuser y@s\ntopic read y\n"
    out = passwd.set_acl_block(text, "x@s", ["topic read new"], "c")
    assert out == ("user x@s\n# onetap: c\ntopic read new\n\npattern read $SYS/broker/#\n"
                   "user y@s\ntopic read y\n")


def test_registry_reads_terminals_of_every_site(tmp_path):
    pw, acl, _ = files(tmp_path)
    for site, terminal in [(SITE, "counter-01"), (OTHER, "counter-01"), (SITE, "lobby")]:
        provision.provision_terminal(site, terminal, "mqtt://127.0.0.1", pw, acl,
                                     tmp_path / f"{site}-{terminal}")
    provision.provision_service("onetap-server", pw, acl, tmp_path / "srv")
    assert passwd.read_registry(acl) == {
        (SITE, "counter-01"), (OTHER, "counter-01"), (SITE, "lobby")}
    with pytest.raises(FileNotFoundError):
        passwd.read_registry(tmp_path / "missing.acl")


def test_usernames_are_unique_across_sites_and_never_a_service_name():
    assert passwd.terminal_username("a-b", "c") != passwd.terminal_username("a", "b-c")
    assert passwd.parse_terminal_username("counter-03@gangnam-office") == (
        SITE, "counter-03")
    assert passwd.parse_terminal_username("onetap-server") is None


@pytest.mark.parametrize("argv, message", [
    (["--site", "Gangnam", "--terminal", "t", "--broker", "mqtt://h"], "--site: 'Gangnam'"),
    (["--site", "s", "--terminal", "t/x", "--broker", "mqtt://h"], "--terminal: 't/x'"),
    (["--site", "s", "--terminal", "t"], "needs --broker"),
    (["--site", "s", "--broker", "mqtt://h"], "needs both --site and --terminal"),
    (["--service", "srv", "--site", "s", "--terminal", "t"], "not both"),
    (["--service", "Bad_Name"], "--service: 'Bad_Name'"),
    (["--site", "s", "--terminal", "t", "--broker", "http://h"], "mqtt:// or mqtts://"),
    (["--site", "s", "--terminal", "t", "--broker", "mqtt://u:p@h"], "not the URL"),
    (["--site", "s", "--terminal", "t", "--broker", "mqtt://h:99999"], "--broker"),
    (["--site", "s", "--terminal", "t", "--broker", "mqtt://h", "--ca-file", "/etc/hostname"],
     "--ca-file is set but the broker 'mqtt://h' is mqtt://, not mqtts://"),
    (["--site", "s", "--terminal", "t", "--broker", "mqtts://h", "--ca-file", "/etc/hostname"],
     "not a PEM certificate"),
    (["--site", "s", "--terminal", "t", "--broker", "mqtts://h", "--ca-file", "/nonexistent"],
     "cannot read it"),
])
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, argv, message):
    pw, acl, out = files(tmp_path)
    code, stdout, stderr = run_cli(*argv, "--passwd", str(pw), "--acl", str(acl),
                                   "--out", str(out))
    assert code == 1 and stdout == ""
    assert stderr.startswith("onetap-server: error: ") and message in stderr
    assert not pw.exists() and not acl.exists() and not out.exists()


def test_missing_directory_of_passwd_file_is_named(tmp_path):
    code, _, stderr = run_cli("--site", "s", "--terminal", "t", "--broker", "mqtt://h",
                              "--passwd", str(tmp_path / "no" / "pw"),
                              "--acl", str(tmp_path / "acl"), "--out", str(tmp_path / "o"))
    assert code == 1 and "--passwd" in stderr and str(tmp_path / "no") in stderr


def test_mqtts_with_ca_file_is_written(tmp_path):
    pw, acl, out = files(tmp_path)
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    provision.provision_terminal(SITE, "t", "mqtts://broker.example:8883", pw, acl, out,
                                 ca_file=str(ca))
    config = load_config(out / "kiosk.toml", env={})
    assert config.tls and config.mqtt.ca_file == ca


def test_existing_files_keep_their_mode_and_the_passwd_is_never_world_readable(tmp_path):
    pw, acl, out = files(tmp_path)
    pw.write_text("")
    pw.chmod(0o644)
    acl.write_text("")
    acl.chmod(0o640)
    out.mkdir()
    (out / "kiosk.toml").write_text("old")
    (out / "kiosk.toml").chmod(0o644)
    provision.provision_terminal(SITE, "t", "mqtt://127.0.0.1", pw, acl, out)
    assert stat.S_IMODE(pw.stat().st_mode) == 0o640
    assert stat.S_IMODE(acl.stat().st_mode) == 0o640
    assert stat.S_IMODE((out / "kiosk.toml").stat().st_mode) == 0o600
    assert not [p for p in tmp_path.rglob("*.tmp")]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can hand new files to mosquitto")
def test_as_root_new_broker_files_belong_to_the_broker_user(tmp_path):
    try:
        broker = pwd.getpwnam(provision.BROKER_USER)
    except KeyError:
        pytest.skip("no mosquitto user on this machine (apt-get install mosquitto)")
    pw, acl, out = files(tmp_path)
    provision.provision_terminal(SITE, "t", "mqtt://127.0.0.1", pw, acl, out)
    assert pw.stat().st_uid == acl.stat().st_uid == broker.pw_uid
    assert (out / "kiosk.toml").stat().st_uid == 0


def test_concurrent_provisions_lose_no_account(tmp_path):
    pw, acl, _ = files(tmp_path)
    script = (
        "import sys\nfrom pathlib import Path\nfrom server import provision\n"
        "w = sys.argv[1]\n"
        "for i in range(8):\n"
        "    provision.provision_terminal('s' + w, f't{i}', 'mqtt://127.0.0.1', Path(sys.argv[2]),"
        " Path(sys.argv[3]), Path(sys.argv[4]) / f'{w}-{i}')\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(w), str(pw), str(acl),
                               str(tmp_path / "out")], cwd=ROOT) for w in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 4
    expected = {(f"s{w}", f"t{i}") for w in range(4) for i in range(8)}
    assert passwd.read_registry(acl) == expected
    assert sorted(passwd.users(pw.read_text())) == sorted(f"{t}@{s}" for s, t in expected)


def test_awkward_text_round_trips_through_kiosk_toml(tmp_path):
    """Quotes, backslashes, control characters and Hangul survive TOML quoting."""
    pw, acl, out = files(tmp_path)
    ca_dir = tmp_path / 'ca "quoted" \\ 인증서\x01\x7f\nline'
    ca_dir.mkdir()
    ca = ca_dir / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    password = 'pa"ss\\word\t한글'
    account = provision.provision_terminal(SITE, "t", "mqtts://broker.example:8883", pw, acl, out,
                                           ca_file=str(ca), password=password)
    data = tomllib.loads(account.config_path.read_text(encoding="utf-8"))
    assert data["mqtt"]["password"] == password
    assert data["mqtt"]["ca_file"] == str(ca.absolute())
    config = load_config(account.config_path, env={})
    assert config.mqtt.password == password


def test_rotating_the_service_keeps_the_rest_of_server_toml(tmp_path):
    pw, acl, out = files(tmp_path)
    first = provision.provision_service("onetap-server", pw, acl, out)
    server_toml = out / "server.toml"
    server_toml.write_text(server_toml.read_text() + 'api_token = "keep-me"\n\n'
                           '[sites.gangnam-office]\nreasons = ["other"]\n')
    second = provision.provision_service("onetap-server", pw, acl, out,
                                         broker="mqtt://127.0.0.1:1884")
    data = tomllib.loads(server_toml.read_text())
    assert data["password"] == second.password != first.password
    assert data["broker"] == "mqtt://127.0.0.1:1884"
    assert data["api_token"] == "keep-me"
    assert data["sites"] == {"gangnam-office": {"reasons": ["other"]}}
    assert stat.S_IMODE(server_toml.stat().st_mode) == 0o600


def test_rotation_sets_top_level_keys_and_leaves_tables_and_comments(tmp_path):
    """A key of the same name inside a table is not the top-level one; missing
    keys go before the first table; comments and layout stay."""
    pw, acl, out = files(tmp_path)
    out.mkdir()
    server_toml = out / "server.toml"
    server_toml.write_text('# operator: keep me\n'
                           'db = "postgresql://onetap@127.0.0.1:5432/onetap"  # trailing note\n'
                           '\n'
                           '[sites.gangnam-office]\n'
                           '# about this site\n'
                           'reasons = ["other"]\n')
    account = provision.provision_service("onetap-server", pw, acl, out)
    text = server_toml.read_text()
    data = tomllib.loads(text)
    assert data["username"] == "onetap-server" and data["password"] == account.password
    assert data["sites"] == {"gangnam-office": {"reasons": ["other"]}}
    assert text.startswith('# operator: keep me\n'
                           'db = "postgresql://onetap@127.0.0.1:5432/onetap"  # trailing note\n')
    assert text.index("password =") < text.index("[sites.gangnam-office]")
    assert text.endswith('[sites.gangnam-office]\n# about this site\nreasons = ["other"]\n')


@pytest.mark.parametrize("broker, with_ca", [(None, False), ("mqtts://broker.example:8883", True)])
def test_server_toml_loads_as_the_servers_config(tmp_path, broker, with_ca):
    from server.config import load_config as load_server_config

    pw, acl, out = files(tmp_path)
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    account = provision.provision_service(
        "onetap-server", pw, acl, out, **({"broker": broker} if broker else {}),
        ca_file=str(ca) if with_ca else None)
    config = load_server_config(account.config_path, env={})
    assert config.username == config.client_id == "onetap-server"
    assert config.password == account.password
    assert config.broker == (broker or provision.DEFAULT_SERVICE_BROKER)
    assert config.ca_file == (ca if with_ca else None)
    assert config.broker_address.tls == with_ca
    # The server accepts exactly the terminals provisioned into the same ACL file.
    assert config.registry == acl.absolute()


def test_rotating_the_service_changes_only_what_it_was_asked(tmp_path):
    """Rotation without --broker keeps the broker, its CA and every comment (issue: it
    used to write mqtt://127.0.0.1:1883 back over an mqtts:// broker)."""
    pw, acl, out = files(tmp_path)
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    first = provision.provision_service("onetap-server", pw, acl, out,
                                        broker="mqtts://broker.example:8883", ca_file=str(ca))
    server_toml = out / "server.toml"
    server_toml.write_text(server_toml.read_text()
                           + '# the operator\'s note\napi_token = "keep-me"\n'
                           'db = "postgresql://onetap@127.0.0.1:5432/onetap"\n')
    before = server_toml.read_text()
    code, _, err = run_cli("--service", "onetap-server", "--passwd", str(pw), "--acl", str(acl),
                           "--out", str(out))
    assert code == 0, err
    assert "systemctl restart onetap-server" in err
    data = tomllib.loads(server_toml.read_text())
    assert data["password"] != first.password
    assert data["broker"] == "mqtts://broker.example:8883"
    assert data["ca_file"] == str(ca.absolute())
    assert data["db"] == "postgresql://onetap@127.0.0.1:5432/onetap"
    after = server_toml.read_text()
    assert [line for line in before.splitlines() if not line.startswith("password")] == \
        [line for line in after.splitlines() if not line.startswith("password")]
    assert passwd.verify_password(data["password"], dict(
        line.split(":", 1) for line in pw.read_text().splitlines())["onetap-server"])
    # No lock file is left beside the broker's files.
    assert sorted(p.name for p in pw.parent.iterdir() if p.name.endswith(".lock")) == []


def test_a_rotation_that_would_break_server_toml_writes_nothing(tmp_path):
    pw, acl, out = files(tmp_path)
    provision.provision_service("onetap-server", pw, acl, out)
    server_toml = out / "server.toml"
    server_toml.write_text(server_toml.read_text() + 'ca_file = "/etc/onetap/ca.crt"\n')
    before, passwd_before = server_toml.read_text(), pw.read_text()
    code, _, err = run_cli("--service", "onetap-server", "--passwd", str(pw), "--acl", str(acl),
                           "--out", str(out))
    assert code == 1 and "would not be valid" in err and "ca_file" in err
    assert server_toml.read_text() == before and pw.read_text() == passwd_before


def test_each_terminal_gets_its_own_random_maintenance_pin_shown_once(tmp_path):
    pw, acl, out = files(tmp_path)
    pins = []
    for terminal in ("counter-01", "counter-02"):
        code, _, err = run_cli("--site", SITE, "--terminal", terminal, "--broker",
                               "mqtt://127.0.0.1:1883", "--passwd", str(pw), "--acl", str(acl),
                               "--out", str(out / terminal))
        assert code == 0, err
        config = load_config(out / terminal / "kiosk.toml", env={})
        stored = config.ui.maintenance_pin
        pin = re.search(rf"maintenance PIN of {SITE}/{terminal}: (\d+) ", err)[1]
        assert pin != "0000" and len(pin) == provision.PIN_DIGITS
        # Only its hash is in kiosk.toml; the staff screen accepts the PIN and nothing else.
        assert pin not in (out / terminal / "kiosk.toml").read_text() and is_hashed(stored)
        assert pin_matches(pin, stored) and not pin_matches("0000", stored)
        assert not pin_matches(pin[:-1] + str((int(pin[-1]) + 1) % 10), stored)
        pins.append(pin)
    assert pins[0] != pins[1] or provision.new_pin() != pins[0]
    assert len({provision.new_pin() for _ in range(50)}) > 40


def test_terminal_gets_a_key_pair_private_beside_its_toml_public_in_the_registry(tmp_path):
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from kiosk import protocol
    from kiosk.uplink import load_signing_key
    from server.registry import Registry

    pw, acl = tmp_path / "passwd", tmp_path / "acl"
    provision.provision_terminal(SITE, "a", "mqtt://127.0.0.1", pw, acl, tmp_path / "ka")
    cfg = load_config(tmp_path / "ka" / "kiosk.toml", env={})
    assert cfg.key_path == tmp_path / "ka" / provision.KEY_FILE
    assert stat.S_IMODE(os.stat(cfg.key_path).st_mode) == 0o600
    key = load_signing_key(cfg.key_path)
    pub_path = tmp_path / "keys" / SITE / "a.pub"
    public = base64.b64decode(pub_path.read_text())
    registry = Registry(acl)
    assert registry.public_key(SITE, "a") == public
    assert registry.public_key(SITE, "nobody") is None
    assert cfg.audit.chain_seed == protocol.default_chain_seed(SITE, "a", public)
    Ed25519PublicKey.from_public_bytes(public).verify(key.sign(b"x"), b"x")
    # Provisioning again makes a new pair; the registry sees it without a restart.
    provision.provision_terminal(SITE, "a", "mqtt://127.0.0.1", pw, acl, tmp_path / "ka")
    assert registry.public_key(SITE, "a") not in (None, public)


def test_malformed_public_key_is_a_config_error(tmp_path):
    from server.errors import ConfigError
    from server.registry import load_public_key

    (tmp_path / SITE).mkdir()
    (tmp_path / SITE / "a.pub").write_text("bm90IGEga2V5\n")
    with pytest.raises(ConfigError, match="32-byte"):
        load_public_key(tmp_path, SITE, "a")
