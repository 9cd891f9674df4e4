"""Server configuration: TOML, ONETAP_* overrides, flags, errors naming key and file."""

from pathlib import Path

import pytest

from kiosk.protocol import DEFAULT_REASONS
from server.__main__ import main
from server.config import ENV_VARIABLES, ServerConfig, load_config, parse_broker_url, parse_listen
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
    # Top-level keys name their variable beside them (tables: tests/test_onetap_config.py).
    for dotted, variable in ENV_VARIABLES.items():
        if "." not in dotted:
            assert f"\n{dotted} = " in text, dotted
            assert variable in text, variable
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
    ('brokr = "mqtt://x"\n', "unknown key brokr (known in the file: alerts, allow_plain_remote"),
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
    good = write(tmp_path, 'api_token = "Zq3v-9Kp_w2Lx7Rt4Ym8Nb"\npassword = "Hj5k-Tq8w_Rx2Zc9Vb4N"\n')
    assert main(["run", "--config", str(good), "--check-config"]) == 0
    assert "Zq3v" not in capsys.readouterr().out  # secrets are not printed
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


def test_example_documents_every_http_key_and_its_variable(tmp_path):
    from server.config import HttpConfig

    text = EXAMPLE.read_text()
    section = text[text.index("\n[http]\n"):]
    for dotted, variable in ENV_VARIABLES.items():
        if dotted.startswith("http."):
            assert f"\n{dotted[5:]} = " in section, dotted
            assert variable in text, variable
    assert load_config(EXAMPLE, env={}).http == HttpConfig()  # the example shows the defaults
    config = load_config(write(tmp_path, "[http]\nlogin_lockout_s = 60\n"),
                         env={"ONETAP_HTTP_MAX_FORM_BYTES": "4096"})
    assert config.http.login_lockout_s == 60.0 and config.http.max_form_bytes == 4096
    with pytest.raises(ConfigError, match="unknown key http.login_lockout"):
        load_config(write(tmp_path, "[http]\nlogin_lockout = 60\n"), env={})
    with pytest.raises(ConfigError, match="http.max_concurrent_hashes"):
        load_config(write(tmp_path, "[http]\nmax_concurrent_hashes = 0\n"), env={})


def real_secrets(text):
    """The example file with its secrets replaced as an operator would."""
    from server.auth import hash_password, new_token, token_hash

    text = text.replace('"change-me-too"', f'"{new_token()}"').replace('"change-me"', f'"{new_token()}"')
    text = text.replace('"scrypt$32768$8$1$REPLACE-salt$REPLACE-key"', f'"{hash_password("pw")}"')
    text = text.replace('"$argon2id$v=19$m=65536,t=3,p=4$REPLACE$REPLACE"', f'"{hash_password("pw")}"')
    return text.replace('"' + "0" * 64 + '"', f'"{token_hash(new_token())}"')


def test_the_example_file_as_shipped_is_refused_and_every_placeholder_named(tmp_path, capsys, monkeypatch):
    import tomllib

    from server.config import EXAMPLE_SECRETS, secret_problems

    monkeypatch.delenv("ONETAP_BROKER", raising=False)
    assert main(["run", "--config", str(EXAMPLE), "--check-config"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("onetap-server: error: ") and len(err.splitlines()) == 1
    for name in ("api_token", "password", "users.admin.password_hash", "users.gangnam-staff.password_hash",
                 "tokens.central-office.sha256"):
        assert name in err, name
    # Every secret value the example shows is one the check knows.
    document = tomllib.loads(EXAMPLE.read_text())
    shown = {document["api_token"], document["password"], *(u["password_hash"] for u in document["users"].values()),
             *(t["sha256"] for t in document["tokens"].values())}
    assert shown <= EXAMPLE_SECRETS
    fixed = write(tmp_path, real_secrets(EXAMPLE.read_text()))
    assert secret_problems(load_config(fixed, env={})) == []
    assert main(["run", "--config", str(fixed), "--check-config"]) == 0


@pytest.mark.parametrize("token, why", [
    ("a", "too short"), ("change-me-too", "placeholder"), ("0123456789abcde", "too short"),
    ("aaaaaaaaaaaaaaaaaaaaaaaa", "not random enough"), ("abcabcabcabcabcabcabc", "not random enough"),
    ("my-api-token-CHANGEME-123", "placeholder"), ("our-secret-token-for-2026", "placeholder"),
])
def test_run_refuses_weak_api_tokens(tmp_path, capsys, monkeypatch, token, why):
    monkeypatch.delenv("ONETAP_BROKER", raising=False)
    monkeypatch.delenv("ONETAP_API_TOKEN", raising=False)
    db = str(tmp_path / "never.db")
    assert main(["run", "--api-token", token, "--db", db, "--check-config"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("onetap-server: error: api_token ") and why in err
    assert len(token) < 3 or token not in err  # the secret itself is not printed
    # run itself stops before opening anything.
    assert main(["run", "--api-token", token, "--db", db, "--listen", "127.0.0.1:1"]) == 1
    assert not (tmp_path / "never.db").exists()
    monkeypatch.setenv("ONETAP_API_TOKEN", token)
    assert main(["run", "--db", db, "--check-config"]) == 1


def test_site_display_names_and_the_institution(tmp_path):
    path = write(tmp_path, 'institution = "강남구청"\n[sites.gangnam-office]\nname = " 강남구청 민원실 "\n')
    config = load_config(path, env={})
    assert config.site_name("gangnam-office") == "강남구청 민원실" and config.site_name("other") == "other"
    assert config.institution == "강남구청"
    assert load_config(env={"ONETAP_INSTITUTION": "서초구청"}).institution == "서초구청"
    named = load_config(write(tmp_path, '[sites.s]\nterminals = { counter-01 = "1번 창구" }\n'), env={})
    assert named.terminal_name("s", "counter-01") == "1번 창구" and named.terminal_name("s", "c2") == "c2"
    for bad in ('{ "Bad Id" = "x" }', '{ counter-01 = "" }', '"1번 창구"'):
        with pytest.raises(ConfigError, match="sites.s.terminals"):
            load_config(write(tmp_path, f"[sites.s]\nterminals = {bad}\n"), env={})
    for bad in ('""', '"a\\u0007b"', '"' + "가" * 81 + '"', "3"):
        with pytest.raises(ConfigError, match="sites.gangnam-office.name"):
            load_config(write(tmp_path, f"[sites.gangnam-office]\nname = {bad}\n"), env={})


def test_mail_and_report_subscriptions(tmp_path):
    from onetap_config import key_names
    from server.config import MailConfig

    text = EXAMPLE.read_text()
    for name in key_names(MailConfig):
        if name != "password":  # from ONETAP_MAIL_PASSWORD only
            assert f"\n{name} = " in text.split("[mail]")[1], name
    config = load_config(EXAMPLE, env={"ONETAP_MAIL_PASSWORD": "secret"})
    assert config.mail.password == "secret" and config.mail.starttls and config.mail.port == 587
    [(name, schedule)] = config.reports.items()
    assert schedule.every == "monthly" and schedule.sites == ("gangnam-office",) and schedule.lang == "ko"
    mail = '[mail]\nhost = "smtp.example.go.kr"\nsender = "a@example.go.kr"\n'
    with pytest.raises(ConfigError, match="ONETAP_MAIL_PASSWORD"):
        load_config(write(tmp_path, mail + 'password = "x"\n'), env={})
    with pytest.raises(ConfigError, match="need a \\[mail\\]"):
        load_config(write(tmp_path, '[reports.x]\nto = ["a@b.kr"]\nevery = "daily"\nsites = ["s"]\n'), env={})
    for bad, key in (('every = "hourly"', "reports.x.every"), ('to = ["not-an-address"]', "reports.x.to"),
                     ('sites = ["Bad Site"]', "reports.x.sites")):
        body = {"every": 'every = "daily"', "to": 'to = ["a@b.kr"]', "sites": 'sites = ["s"]'}
        body[key.split(".")[-1]] = bad
        with pytest.raises(ConfigError, match=key):
            load_config(write(tmp_path, mail + "[reports.x]\n" + "\n".join(body.values()) + "\n"), env={})
    with pytest.raises(ConfigError, match="mail.sender is missing"):
        load_config(write(tmp_path, '[mail]\nhost = "smtp.example.go.kr"\n'), env={})


def test_groups_and_targets_are_read_checked_and_documented(tmp_path):
    config = load_config(EXAMPLE, env={})
    text = EXAMPLE.read_text()
    # Every key of a [groups.<id>] table and a site's target is shown in the example.
    from server.config import GroupConfig
    from dataclasses import fields as dataclass_fields

    for name in (f.name for f in dataclass_fields(GroupConfig)):
        assert f"\n{name} = " in text[text.index("[groups."):], name
    assert "\ntarget = " in text[text.index("[sites."):text.index("[groups.")]
    assert config.groups["gangnam-gu"].sites == ("gangnam-office", "yeoksam-office")
    assert config.group_name("gangnam-gu") == "강남구 권역" and config.group_name("other") == "other"
    assert config.target("gangnam-office") == 80 and config.target("yeoksam-office", "gangnam-gu") == 78
    assert config.target("elsewhere") is None
    for body, message in (('[groups.North]\nsites = ["a"]\n', "not an identifier"),
                          ('[groups.north]\nname = "x"\n', "groups.north.sites is missing"),
                          ('[groups.north]\nsites = ["a"]\ncolour = 1\n', "unknown key groups.north.colour"),
                          ('[groups.north]\nsites = ["a"]\ntarget = 101\n', "target"),
                          ("[sites.a]\ntarget = true\n", "sites.a.target")):
        with pytest.raises(ConfigError, match=message):
            load_config(write(tmp_path, body), env={})
