"""Kiosk config: defaults, TOML, ONETAP_* environment, flags, and errors that name key and file."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from kiosk.config import KioskConfig, load_config, parse_broker_url
from kiosk.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "kiosk.example.toml"


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "kiosk.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_are_a_demo_terminal(tmp_path):
    cfg = load_config(env={"XDG_DATA_HOME": str(tmp_path)})
    assert (cfg.site, cfg.terminal, cfg.broker) == ("demo", "counter-01", "mqtt://127.0.0.1:1883")
    assert cfg.data_dir == tmp_path / "onetap"
    assert cfg.outbox_path == tmp_path / "onetap" / "outbox.db"
    assert cfg.mqtt.status_interval_s == 60 and cfg.mqtt.session_expiry_s == 7 * 24 * 3600
    assert cfg.source is None and not cfg.tls


def test_default_data_dir_without_xdg():
    assert load_config(env={}).data_dir == Path.home() / ".local" / "share" / "onetap"


def test_example_file_is_valid_and_describes_every_key():
    cfg = load_config(EXAMPLE, env={})
    assert cfg.site == "gangnam-office" and cfg.tls
    text = EXAMPLE.read_text()
    for key, value in cfg.redacted().items():
        keys = value.keys() if isinstance(value, dict) else [key]
        if isinstance(value, dict):
            assert f"[{key}]" in text
        for sub in keys:
            assert f"{sub} =" in text, f"{sub} is not described in {EXAMPLE.name}"


def test_file_values(tmp_path):
    path = write(tmp_path, """
site = "s1"
terminal = "t-9"
broker = "mqtts://broker.example"
data_dir = "~/onetap-data"
[mqtt]
username = "t-9"
password = "pw"
ack_timeout_s = 5
[outbox]
retention_days = 7
""")
    cfg = load_config(path, env={})
    assert cfg.source == path
    assert cfg.mqtt.ack_timeout_s == 5.0 and isinstance(cfg.mqtt.ack_timeout_s, float)
    assert cfg.mqtt.username == "t-9" and cfg.outbox.retention_days == 7
    assert cfg.data_dir == Path.home() / "onetap-data"
    assert cfg.redacted()["mqtt"]["password"] == "***"
    assert parse_broker_url(cfg.broker) == ("mqtts", "broker.example", 8883)


@pytest.mark.parametrize("text, named", [
    ('colour = "red"\n', "unknown key colour"),
    ('[mqtt]\nuser = "x"\n', "unknown key mqtt.user"),
    ('[gpio]\npin = 3\n', "unknown key gpio"),
    ('mqtt = 3\n', "mqtt: must be a table"),
])
def test_unknown_keys_name_key_and_file(tmp_path, text, named):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert named in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize("text, named", [
    ('site = "Gangnam Office"\n', "site"),
    ('terminal = 7\n', "terminal"),
    ('broker = "http://x:1"\n', "broker"),
    ('[mqtt]\nack_timeout_s = "soon"\n', "mqtt.ack_timeout_s"),
    ('[mqtt]\nack_timeout_s = 0\n', "mqtt.ack_timeout_s"),
    ('[mqtt]\nsession_expiry_s = 1.5\n', "mqtt.session_expiry_s"),
    ('[mqtt]\npassword = "x"\n', "mqtt.password"),
    ('[outbox]\nretention_days = -1\n', "outbox.retention_days"),
    ('[outbox]\nretention_days = true\n', "outbox.retention_days"),
])
def test_bad_values_name_key_and_file(tmp_path, text, named):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert f"{named} =" in str(err.value) and str(path) in str(err.value)


def test_broken_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "site = \n"), env={})
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.toml", env={})


def test_environment_overrides_file_and_flags_override_environment(tmp_path):
    path = write(tmp_path, 'site = "from-file"\nterminal = "t1"\n[mqtt]\nusername = "file-user"\n')
    env = {"ONETAP_SITE": "from-env", "ONETAP_BROKER": "mqtt://10.0.0.2:1884",
           "ONETAP_MQTT_ALLOW_PLAIN_REMOTE": "true",
           "ONETAP_MQTT_USERNAME": "env-user", "ONETAP_MQTT_PASSWORD": "secret",
           "ONETAP_DATA_DIR": str(tmp_path / "d"), "ONETAP_OUTBOX_RETENTION_DAYS": "3",
           "ONETAP_MQTT_ACK_TIMEOUT_S": "2.5"}
    cfg = load_config(path, env=env)
    assert cfg.site == "from-env" and cfg.terminal == "t1"
    assert cfg.broker == "mqtt://10.0.0.2:1884"
    assert (cfg.mqtt.username, cfg.mqtt.password) == ("env-user", "secret")
    assert cfg.data_dir == tmp_path / "d" and cfg.outbox.retention_days == 3
    assert cfg.mqtt.ack_timeout_s == 2.5
    cfg = load_config(path, env=env, overrides={"site": "from-flag", "terminal": None,
                                               "data_dir": tmp_path / "flag"})
    assert cfg.site == "from-flag" and cfg.terminal == "t1" and cfg.data_dir == tmp_path / "flag"


def test_bad_environment_value_names_the_variable():
    with pytest.raises(ConfigError, match="ONETAP_OUTBOX_RETENTION_DAYS.*outbox.retention_days"):
        load_config(env={"ONETAP_OUTBOX_RETENTION_DAYS": "a week"})
    with pytest.raises(ConfigError, match="environment ONETAP_BROKER: broker"):
        load_config(env={"ONETAP_BROKER": "tcp://x"})


def test_bad_flag_names_the_command_line():
    with pytest.raises(ConfigError, match="--terminal: terminal = 'Counter 1' is not an identifier"):
        load_config(env={}, overrides={"terminal": "Counter 1"})
    with pytest.raises(ConfigError, match="unknown key colour"):
        load_config(env={}, overrides={"colour": "red"})


def test_config_is_frozen():
    cfg = KioskConfig()
    with pytest.raises(AttributeError):
        cfg.site = "x"  # type: ignore[misc]


@pytest.mark.parametrize("url, parsed", [
    ("mqtt://127.0.0.1:1883", ("mqtt", "127.0.0.1", 1883)),
    ("mqtt://broker", ("mqtt", "broker", 1883)),
    ("mqtts://b.example:8884/", ("mqtts", "b.example", 8884)),
    ("mqtt://[::1]:1999", ("mqtt", "::1", 1999)),
])
def test_parse_broker_url(url, parsed):
    assert parse_broker_url(url) == parsed


@pytest.mark.parametrize("url, reason", [
    ("", "empty"),
    ("broker:1883", "scheme"),
    ("ws://b:80", "scheme"),
    ("mqtt://", "no host"),
    ("mqtt://b:99999", "not a broker URL"),
    ("mqtt://b:port", "not a broker URL"),
    ("mqtt://user:pw@b:1883", "not the URL"),
    ("mqtt://b:1883/topic", "no path"),
    ("mqtt://b:1883?x=1", "no path"),
])
def test_parse_broker_url_rejects(url, reason):
    with pytest.raises(ValueError, match=reason):
        parse_broker_url(url)


def test_check_config_exits_0_or_1(tmp_path, capsys, monkeypatch):
    from kiosk.__main__ import main
    for name in [n for n in os.environ if n.startswith("ONETAP_")]:
        monkeypatch.delenv(name)
    good = write(tmp_path, 'site = "s"\nterminal = "t"\n[mqtt]\nusername = "t"\npassword = "pw"\n')
    assert main(["run", "--config", str(good), "--check-config", "--terminal", "t2"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["terminal"] == "t2" and printed["mqtt"]["password"] == "***"
    bad = tmp_path / "bad.toml"
    bad.write_text("[mqtt]\nusernme = 'x'\n")
    assert main(["run", "--config", str(bad), "--check-config"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("onetap-kiosk: error:") and str(bad) in err and "mqtt.usernme" in err
    assert main(["run", "--broker", "mqtt://", "--check-config"]) == 1
    assert "broker" in capsys.readouterr().err


def test_run_without_the_ui_is_a_clear_error(tmp_path, capsys, monkeypatch):
    from kiosk.__main__ import main
    monkeypatch.setitem(sys.modules, "kiosk.ui", None)
    monkeypatch.setitem(sys.modules, "kiosk.ui.app", None)
    assert main(["run", "--data-dir", str(tmp_path)]) == 1
    assert "onetap-kiosk: error:" in capsys.readouterr().err


def test_plain_mqtt_to_another_machine_is_refused_unless_allowed(tmp_path):
    path = write(tmp_path, 'broker = "mqtt://broker.example.org:1883"\n')
    with pytest.raises(ConfigError, match=r"broker = .*plain MQTT to another machine"):
        load_config(path, env={})
    assert load_config(path, env={"ONETAP_MQTT_ALLOW_PLAIN_REMOTE": "true"}).mqtt.allow_plain_remote
    assert load_config(path, env={"ONETAP_BROKER": "mqtt://localhost:1883"}).broker


def test_client_certificate_needs_both_files_and_tls(tmp_path):
    path = write(tmp_path, 'broker = "mqtts://b.example.org"\n[mqtt]\ncertfile = "/c.pem"\n')
    with pytest.raises(ConfigError, match="keyfile"):
        load_config(path, env={})
    path = write(tmp_path, 'broker = "mqtt://127.0.0.1"\n[mqtt]\nca_file = "/ca.pem"\n')
    with pytest.raises(ConfigError, match="mqtts"):
        load_config(path, env={})


def test_audit_section_key_file_and_chain_seed(tmp_path):
    from kiosk import protocol

    seed = protocol.default_chain_seed("s", "t", b"k" * 32)
    cfg = load_config(write(tmp_path, f'site = "s"\nterminal = "t"\n[audit]\nkey_file = "{tmp_path}/a.key"\n'
                                      f'chain_seed = "{seed}"\n'), env={})
    assert cfg.key_path == tmp_path / "a.key" and cfg.chain_seed == seed
    relative = load_config(write(tmp_path, '[audit]\nkey_file = "audit.key"\n'), env={})
    assert relative.key_path == tmp_path / "audit.key"  # beside the config file
    # Without [audit] (provisioned before keys): the keyless default seed.
    cfg = load_config(write(tmp_path, 'site = "s"\nterminal = "t"\n'), env={})
    assert cfg.audit.key_file is None and cfg.chain_seed == protocol.default_chain_seed("s", "t")
    with pytest.raises(ConfigError, match="chain_seed"):
        load_config(write(tmp_path, '[audit]\nchain_seed = "abc"\n'), env={})


def test_ntp_servers_are_a_list_of_host_names(tmp_path):
    path = tmp_path / "kiosk.toml"
    path.write_text('ntp = ["ntp1.gov.example", "10.0.0.5", "fd00::1"]\n')
    assert load_config(path, env={}).ntp == ("ntp1.gov.example", "10.0.0.5", "fd00::1")
    assert load_config(None, env={"ONETAP_NTP": "a.example,b.example"}).ntp == ("a.example", "b.example")
    path.write_text('ntp = ["ntp.example; reboot"]\n')
    with pytest.raises(ConfigError, match=r"kiosk.toml.*ntp.*not a host name"):
        load_config(path, env={})
