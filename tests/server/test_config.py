"""Server configuration: TOML, ONETAP_* overrides, flags, errors naming key and file."""

from pathlib import Path

import pytest

from kiosk.protocol import DEFAULT_REASONS
from server.__main__ import main
from server.config import KEYS, ServerConfig, load_config, parse_broker_url, parse_listen
from server.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "server.example.toml"


def write(tmp_path, text):
    path = tmp_path / "server.toml"
    path.write_text(text)
    return path


def test_defaults():
    config = load_config(env={})
    assert config == ServerConfig()
    assert config.client_id == "onetap-server" and config.timezone == "Asia/Seoul"
    assert config.reasons_for_site("any") == DEFAULT_REASONS
    assert config.listen_address == ("127.0.0.1", 8080)


def test_example_file_sets_every_key():
    config = load_config(EXAMPLE, env={})
    text = EXAMPLE.read_text()
    for name in KEYS:
        assert f"\n{name} = " in text, name
        assert KEYS[name].env in text, KEYS[name].env
    assert "parking" in config.reasons_for_site("gangnam-office")
    assert config.reasons_for_site("elsewhere") == DEFAULT_REASONS


def test_file_then_environment_then_flags(tmp_path):
    path = write(tmp_path, 'broker = "mqtt://file:1883"\ndb = "file.db"\nlisten = "0.0.0.0:9000"\n')
    env = {"ONETAP_BROKER": "mqtts://env:8883", "ONETAP_DB": "env.db",
           "ONETAP_MQTT_PASSWORD": "secret", "ONETAP_REASONS": "a,b"}
    config = load_config(path, env=env, overrides={"db": "flag.db", "broker": None})
    assert config.broker == "mqtts://env:8883" and config.broker_address.tls
    assert config.db == Path("flag.db")
    assert config.listen == "0.0.0.0:9000"
    assert config.password == "secret" and "secret" not in repr(config)
    assert config.reasons == ("a", "b")


@pytest.mark.parametrize("text, message", [
    ('brokr = "mqtt://x"\n', "unknown key 'brokr'"),
    ('broker = "http://x"\n', "broker"),
    ("session_expiry_s = -1\n", "session_expiry_s"),
    ('timezone = "Mars/Olympus"\n', "timezone"),
    ('listen = "8080"\n', "listen"),
    ('reasons = ["Bad Code"]\n', "reasons"),
    ("[sites.gangnam]\ncolour = 1\n", "sites.gangnam.colour"),
    ("[sites.Bad_Site]\nreasons = []\n", "sites.Bad_Site"),
    ("broker = \n", "not valid TOML"),
])
def test_errors_name_key_and_file(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert message in str(info.value) and str(path) in str(info.value)


def test_environment_errors_name_the_variable():
    with pytest.raises(ConfigError, match="ONETAP_SESSION_EXPIRY_S"):
        load_config(env={"ONETAP_SESSION_EXPIRY_S": "soon"})


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.toml", env={})


def test_parsers():
    assert parse_broker_url("mqtt://h") .port == 1883
    assert parse_broker_url("mqtts://h").port == 8883
    assert parse_listen("[::1]:80") == ("::1", 80)
    for bad in ("mqtt://u:p@h:1", "mqtt://h:99999", "mqtt://h/path", "mqtt://"):
        with pytest.raises(ValueError):
            parse_broker_url(bad)


def test_check_config_exit_codes(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ONETAP_BROKER", raising=False)
    assert main(["run", "--config", str(EXAMPLE), "--check-config"]) == 0
    assert "change-me" not in capsys.readouterr().out  # secrets are not printed
    bad = write(tmp_path, "nonsense = 1\n")
    assert main(["run", "--config", str(bad), "--check-config"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("onetap-server: error:") and "nonsense" in err and str(bad) in err
    assert main(["run", "--broker", "tcp://x", "--check-config"]) == 1
    assert "--broker" in capsys.readouterr().err


def test_db_may_be_a_postgres_url_and_role_is_checked(tmp_path, capsys):
    config = load_config(env={"ONETAP_DB": "postgresql://onetap:hunter2@db.example:5432/onetap",
                              "ONETAP_ROLE": "ingest"})
    assert config.db == "postgresql://onetap:hunter2@db.example:5432/onetap" and config.role == "ingest"
    assert "hunter2" not in repr(config)
    assert load_config(env={}).role == "all" and load_config(env={}).db == Path("/var/lib/onetap/onetap.db")
    with pytest.raises(ConfigError, match="ONETAP_DB.*no database"):
        load_config(env={"ONETAP_DB": "postgresql://db.example"})
    with pytest.raises(ConfigError, match=r"role.*all, ingest, api"):
        load_config(write(tmp_path, 'role = "worker"\n'), env={})
