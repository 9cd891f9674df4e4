"""server/users.py: `onetap-server user add|passwd|remove|list` on a real server.toml."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from server import users
from server.__main__ import main
from server.auth import authenticate
from server.config import load_config

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"

SERVER_TOML = """\
# written by provision; the operator added comments and keys below
broker = "mqtt://127.0.0.1:1883"
username = "onetap-server"
password = "Xq7vR2mK9pL4sT8wZ3nB6yC1"  # rotated by provision
api_token = "hG5tY8uJ2kL9mN4bV7cX1zQ3wE6rT0aS"
db = "/var/lib/onetap/onetap.db"

# Gangnam's own reasons
[sites.gangnam-office]
reasons = ["wait_time", "other"]

[alerts]
interval_s = 30  # the default
"""


class Stdin(io.StringIO):
    def isatty(self) -> bool:
        return False


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "server.toml"
    path.write_text(SERVER_TOML)
    path.chmod(0o600)
    return path


def cli(*argv: str, stdin: str = "") -> int:
    old = sys.stdin
    sys.stdin = Stdin(stdin)
    try:
        return main(["user", *argv])
    finally:
        sys.stdin = old


def test_add_writes_an_argon2id_user_that_logs_in_and_keeps_everything_else(config):
    assert cli("add", "admin", "--sites", "*", "--config", str(config), stdin=PASSWORD + "\n") == 0
    text = config.read_text()
    # Every line the operator wrote is still there, comments included.
    for line in SERVER_TOML.splitlines():
        assert line in text
    loaded = load_config(config, env={})
    assert loaded.users["admin"].password_hash.startswith("$argon2id$")
    assert loaded.users["admin"].sites is None  # every site
    assert authenticate(loaded.users, "admin", PASSWORD)
    assert not authenticate(loaded.users, "admin", PASSWORD + "x")
    assert PASSWORD not in text
    assert stat.S_IMODE(config.stat().st_mode) == 0o600


def test_site_scope_passwd_list_and_remove(config, capsys):
    assert cli("add", "gangnam-staff", "--sites", "gangnam-office,seocho-office",
               "--config", str(config), stdin=PASSWORD + "\n") == 0
    assert load_config(config, env={}).users["gangnam-staff"].sites == {"gangnam-office",
                                                                         "seocho-office"}
    assert cli("passwd", "gangnam-staff", "--config", str(config), stdin="another long one\n") == 0
    loaded = load_config(config, env={})
    assert authenticate(loaded.users, "gangnam-staff", "another long one")
    assert not authenticate(loaded.users, "gangnam-staff", PASSWORD)
    assert loaded.users["gangnam-staff"].sites == {"gangnam-office", "seocho-office"}
    capsys.readouterr()
    assert cli("list", "--config", str(config)) == 0
    listed = capsys.readouterr().out
    assert "gangnam-staff\tsites gangnam-office, seocho-office" in listed
    assert "$argon2" not in listed
    assert cli("remove", "gangnam-staff", "--config", str(config)) == 0
    assert load_config(config, env={}).users == {}
    assert "[sites.gangnam-office]" in config.read_text()


@pytest.mark.parametrize("argv, stdin, message", [
    (["add", "admin", "--sites", "*"], "short\n", "at least 10 characters"),
    (["add", "admin"], PASSWORD + "\n", "--sites"),
    (["add", "admin", "--sites", "Bad Site"], PASSWORD + "\n", "not a site identifier"),
    (["add", "bad name", "--sites", "*"], PASSWORD + "\n", "not a user name"),
    (["passwd", "ghost"], PASSWORD + "\n", "no user 'ghost'"),
    (["remove", "ghost"], "", "no user 'ghost'"),
])
def test_bad_input_is_a_clear_error_and_writes_nothing(config, capsys, argv, stdin, message):
    assert cli(*argv, "--config", str(config), stdin=stdin) == 1
    assert message in capsys.readouterr().err
    assert config.read_text() == SERVER_TOML


def test_add_refuses_an_existing_user(config, capsys):
    assert cli("add", "admin", "--sites", "*", "--config", str(config), stdin=PASSWORD + "\n") == 0
    before = config.read_text()
    assert cli("add", "admin", "--sites", "gangnam-office", "--config", str(config),
               stdin=PASSWORD + "\n") == 1
    assert "exists" in capsys.readouterr().err
    assert config.read_text() == before


def test_a_group_scope_names_a_configured_group_and_sees_its_sites(config, capsys):
    """--groups writes a scope the server resolves to the group's sites; a group
    the config does not define is refused before anything is written."""
    code = cli("add", "region", "--groups", "seoul-south", "--config", str(config),
               stdin=PASSWORD + "\n")
    assert code == 1 and "nothing written" in capsys.readouterr().err
    assert config.read_text() == SERVER_TOML
    config.write_text(SERVER_TOML + '\n[groups.seoul-south]\nname = "서울 남부"\n'
                      'sites = ["gangnam-office", "seocho-office"]\n')
    assert cli("add", "region", "--groups", "seoul-south", "--config", str(config),
               stdin=PASSWORD + "\n") == 0
    assert cli("add", "mixed", "--sites", "mapo-office", "--groups", "seoul-south", "--config", str(config),
               stdin=PASSWORD + "\n") == 0
    loaded = load_config(config, env={})
    assert loaded.user_sites("region") == {"gangnam-office", "seocho-office"}
    assert loaded.user_sites("mixed") == {"gangnam-office", "seocho-office", "mapo-office"}


def test_password_from_a_terminal_is_asked_twice():
    answers = iter([PASSWORD, PASSWORD])
    assert users.read_password(Terminal(), prompt=lambda _: next(answers)) == PASSWORD
    answers = iter([PASSWORD, PASSWORD + "!"])
    with pytest.raises(users.UserError, match="differ"):
        users.read_password(Terminal(), prompt=lambda _: next(answers))


def test_the_password_is_never_an_argument(config):
    parser_help = subprocess.run([sys.executable, "-m", "server", "user", "add", "--help"],
                                 capture_output=True, text=True, cwd=ROOT).stdout
    assert "--sites" in parser_help and "--password" not in parser_help
    with pytest.raises(SystemExit) as refused:
        cli("add", "admin", "--sites", "*", "--password", PASSWORD, "--config", str(config))
    assert refused.value.code == 2
    assert config.read_text() == SERVER_TOML


def test_first_user_creates_the_users_table_in_the_example_config(tmp_path):
    example = (ROOT / "deploy" / "server.example.toml").read_text()
    path = tmp_path / "server.toml"
    path.write_text(example)
    users.edit(path, lambda text: users.set_user(text, "new-admin", "$argon2id$v=19$m=65536,t=3,p=4$"
                                                 "c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
                                                 {"sites": "*"}))
    loaded = load_config(path, env={})
    assert {"admin", "gangnam-staff", "new-admin"} <= set(loaded.users)
    assert path.read_text().startswith(example.split("\n[", 1)[0])


def test_check_config_warns_when_nobody_can_log_in(config, capsys):
    assert main(["run", "--config", str(config), "--check-config"]) == 0
    assert "warning: no dashboard user" in capsys.readouterr().err
    assert cli("add", "admin", "--sites", "*", "--config", str(config), stdin=PASSWORD + "\n") == 0
    capsys.readouterr()
    assert main(["run", "--config", str(config), "--check-config"]) == 0
    assert "no dashboard user" not in capsys.readouterr().err
    # An ingest worker has no dashboard: no warning.
    other = config.parent / "ingest.toml"
    other.write_text(SERVER_TOML.replace('db = "', 'role = "ingest"\ndb = "'))
    assert main(["run", "--config", str(other), "--check-config"]) == 0
    assert "no dashboard user" not in capsys.readouterr().err


def test_no_lock_file_is_left_behind(config):
    before = set(os.listdir(config.parent))
    assert cli("add", "admin", "--sites", "*", "--config", str(config), stdin=PASSWORD + "\n") == 0
    assert set(os.listdir(config.parent)) == before
