"""The settings loader of both sides: every key documented in its example file, origins in errors, env rules."""

import collections.abc
import re
import typing
from pathlib import Path

import pytest

import onetap_config
from kiosk.config import KioskConfig
from kiosk.errors import ConfigError as KioskConfigError
from server.config import ServerConfig

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
EXAMPLES = [(KioskConfig, DEPLOY / "kiosk.example.toml"), (ServerConfig, DEPLOY / "server.example.toml")]


def sections(text):
    """Table header ("" for the top) -> its text, "[users.<name>]" families joined."""
    out: dict[str, str] = {}
    name = ""
    for line in text.splitlines(keepends=True):
        header = re.match(r"\s*#?\s*\[([a-z0-9_.<>-]+)\]\s*$", line)
        if header:
            name = header[1]
            continue
        out[name] = out.get(name, "") + line
    return out


def documented_in(found, table, named):
    """The text of *table*'s section(s): [users.<name>] matches every [users.x]."""
    if named:
        pattern = re.compile(re.escape(table).replace(re.escape("<name>"), "[^.]+") + r"\.[^.]+")
        return "".join(body for header, body in found.items() if pattern.fullmatch(header))
    return found.get(table, "")


@pytest.mark.parametrize("model, example", EXAMPLES, ids=["kiosk", "server"])
def test_every_key_is_described_in_its_section_of_the_example(model, example):
    """As sqlite-utils tests its CLI docs: a key added to a model without a word in
    deploy/*.example.toml fails here, naming the key."""
    text = example.read_text()
    found = sections(text)
    undocumented = []
    for key in onetap_config.keys(model):
        body = found.get(".".join(key.path[:-1]), "")
        if key.env_only:  # never in the file: its variable must be named
            pass
        elif typing.get_origin(key.kind) in (dict, typing.Mapping, collections.abc.Mapping):
            if key.dotted not in found:  # a free-form table: its own [header]
                undocumented.append(key.dotted)
        elif not re.search(rf"^#? ?{re.escape(key.path[-1])} = ", body, re.M):
            undocumented.append(key.dotted)
        if key.env and key.env not in text:
            table = "_".join(key.path[:-1]).upper()
            generic = f"ONETAP_{table}_<KEY>" if table else "ONETAP_<KEY>"
            if generic not in text and "ONETAP_<TABLE>_<KEY>" not in text:
                undocumented.append(key.env)
    for path, table, named in onetap_config.tables(model):
        if not named:
            continue
        body = documented_in(found, ".".join(path), named)
        for name in onetap_config.key_names(table):
            if not re.search(rf"^#? ?{name} = ", body, re.M) and name != "survey":
                undocumented.append(f"{'.'.join(path)}.<name>.{name}")
    assert undocumented == [], f"not described in {example.name}: {', '.join(undocumented)}"


def test_a_key_missing_from_the_example_is_found(tmp_path):
    text = (DEPLOY / "kiosk.example.toml").read_text()
    found = sections(text.replace("\nfps = 30\n", "\n"))
    assert not re.search(r"^#? ?fps = ", found["ui"], re.M)


def test_unknown_keys_first_then_origin_key_and_value(tmp_path):
    from kiosk.config import load_config

    path = tmp_path / "kiosk.toml"
    path.write_text('[ui]\nfps = 0\nfsp = 30\n')
    with pytest.raises(KioskConfigError, match=r"kiosk.toml: unknown key ui.fsp \(known in \[ui\]: age_group, "):
        load_config(path, env={})
    path.write_text('[ui]\nfps = 0\n')
    with pytest.raises(KioskConfigError, match=r"kiosk.toml: ui.fps = 0: must be >= 1"):
        load_config(path, env={})
    with pytest.raises(KioskConfigError, match=r"environment ONETAP_UI_FPS: ui.fps = '0': must be >= 1"):
        load_config(None, env={"ONETAP_UI_FPS": "0"})
    with pytest.raises(KioskConfigError, match="must be a number, not true or false"):
        load_config(None, overrides={"ui.fps": True}, env={})
    with pytest.raises(KioskConfigError, match="unknown key source"):
        path.write_text('source = "/etc/x"\n')
        load_config(path, env={})


def test_variables_of_an_absent_optional_table_are_ignored_and_secrets_only_come_from_them(tmp_path):
    from server.config import load_config
    from server.errors import ConfigError

    assert load_config(None, env={"ONETAP_MAIL_PORT": "25", "ONETAP_MAIL_PASSWORD": "pw"}).mail is None
    path = tmp_path / "server.toml"
    path.write_text('[mail]\nhost = "smtp.example.go.kr"\nsender = "a@example.go.kr"\n')
    mail = load_config(path, env={"ONETAP_MAIL_PORT": "25", "ONETAP_MAIL_PASSWORD": "pw"}).mail
    assert (mail.port, mail.password) == (25, "pw") and "pw" not in repr(mail)
    path.write_text(path.read_text() + 'password = "x"\n')
    with pytest.raises(ConfigError, match=r"unknown key mail.password \(it comes from ONETAP_MAIL_PASSWORD only\)"):
        load_config(path, env={})


def test_models_built_in_code_are_validated_too_and_frozen():
    import dataclasses

    from server.config import AlertsConfig, SiteConfig, UserConfig

    with pytest.raises(onetap_config.KeyProblem, match="session_expiry_s: must be >= 1"):
        ServerConfig(session_expiry_s=-1)
    with pytest.raises(onetap_config.KeyProblem, match=r"^reasons: 'Bad' is not a reason code"):
        SiteConfig(reasons=("Bad",))
    with pytest.raises(onetap_config.KeyProblem, match=r"^sites.s.reasons: 'Bad' is not a reason code"):
        ServerConfig(sites={"s": {"reasons": ["Bad"]}})  # a table given as a mapping is built and checked
    with pytest.raises(onetap_config.KeyProblem, match=r"users.kim.groups: names no \[groups.<id>\]"):
        ServerConfig(users={"kim": UserConfig("$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA", groups=("x",))})
    # Converted as from a file: a list is a tuple, an integer where a number goes a float.
    alerts = AlertsConfig(opening_hours=["mon-sun 00:00-23:59"], burst_interval_s=2)
    assert alerts.opening_hours == ("mon-sun 00:00-23:59",) and isinstance(alerts.burst_interval_s, float)
    config = ServerConfig()
    assert dataclasses.replace(config, listen="0.0.0.0:80").listen_address == ("0.0.0.0", 80)
    with pytest.raises(onetap_config.KeyProblem, match="listen"):
        dataclasses.replace(config, listen="80")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.listen = "x"  # type: ignore[misc]


def test_kinds_of_problem_are_said_plainly(tmp_path):
    from server.config import load_config
    from server.errors import ConfigError

    path = tmp_path / "server.toml"
    for text, message in (
            ('listen = 8080\n', "listen = 8080: must be a string"),
            ('session_expiry_s = "a week"\n', "session_expiry_s = 'a week': must be an integer"),
            ("session_expiry_s = 1.5\n", "session_expiry_s = 1.5: must be a whole number"),
            ("[alerts]\nburst_interval_s = true\n", "must be a number, not true or false"),
            ("[alerts]\nburst_interval_s = 0\n", "alerts.burst_interval_s = 0: must be > 0"),
            ('[alerts]\nmqtt = "maybe"\n', "alerts.mqtt = 'maybe': must be true or false"),
            ('reasons = "wait_time"\n', "reasons = 'wait_time': must be a list"),
            ("alerts = 3\n", "alerts: must be a table [alerts]"),
            ('mqtt_protocol = "4"\n', "mqtt_protocol = '4': must be one of 5, 3.1.1"),
            ('client_id = ""\n', "client_id = '': must have at least 1 character"),
            ('[mail]\nhost = "h.example"\nsender = "a@b.kr"\n[reports.x]\nto = []\nevery = "daily"\n'
             'sites = ["s"]\n', "reports.x.to = []: must have at least 1 item"),
            ('[users."kim lee"]\npassword_hash = "x"\n', "[users.kim lee]: 'kim lee' is not a name"),
            ('[sites.s]\nreasons = []\n[sites.t]\ncolour = 1\n[alerts]\nmqtt = "maybe"\n',
             "unknown key sites.t.colour (known in [sites.t]: name, reasons, survey, target, terminals)")):
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_config(path, env={})
        assert str(info.value).startswith(f"{path}: ") and message in str(info.value), text
