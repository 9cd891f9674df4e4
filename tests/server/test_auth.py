"""Password and token hashes, users/tokens/alerts config, and scoped API tokens (403 outside their sites)."""

import io
import uuid
from datetime import datetime, timezone

import pytest
from fastapi.testclient import TestClient
from openpyxl import load_workbook

from kiosk.protocol import Rating, Status
from server.api import create_app
from server.auth import authenticate, check_hash_format, hash_password, main, token_hash, verify_password
from server.config import load_config
from server.errors import ConfigError
from server.store import SQLiteStore

NOW = datetime(2026, 11, 27, 3, 0, tzinfo=timezone.utc)
S1_TOKEN, ALL_TOKEN = "token-for-s1-only-xxxxxxxx", "legacy-all-sites-token"


#: A first-release hash (scrypt, N=2**14) of "pw-of-2025", as an old server.toml holds it.
LEGACY_SCRYPT = "scrypt$16384$8$1$MDEyMzQ1Njc4OWFiY2RlZg$Nk17gJcDtJyMDHUyJUaxlu17UsTzkatr4AH2zwhA5Hw"


def test_password_hashes_are_argon2id():
    stored = hash_password("비밀 password")
    assert stored.startswith("$argon2id$")
    check_hash_format(stored)
    assert verify_password(stored, "비밀 password")
    assert not verify_password(stored, "비밀 passwore")
    assert hash_password("x") != hash_password("x")  # salted


@pytest.mark.parametrize("bad", ["plain", "scrypt$3$8$1$AA$AA", "scrypt$x$8$1$AA$AA", "$argon2id$nope",
                                 "pbkdf2$1$AA"])
def test_bad_hash_formats(bad):
    with pytest.raises(ValueError):
        check_hash_format(bad)
    assert not verify_password(bad, "pw")


def test_authenticate_unknown_user_is_false():
    users = {"kim": type("U", (), {"password_hash": hash_password("pw")})()}
    assert authenticate(users, "kim", "pw")
    assert not authenticate(users, "kim", "no")
    assert not authenticate(users, "lee", "pw")


def test_a_legacy_scrypt_hash_still_logs_in_and_asks_for_a_new_one(caplog):
    check_hash_format(LEGACY_SCRYPT)  # an old config still loads
    users = {"kim": type("U", (), {"password_hash": LEGACY_SCRYPT})()}
    with caplog.at_level("WARNING", logger="server.auth"):
        assert not authenticate(users, "kim", "wrong")
        assert caplog.records == []  # a wrong password tells nothing
        assert authenticate(users, "kim", "pw-of-2025")
    assert [r.getMessage() for r in caplog.records] == [
        "user 'kim' still has a scrypt password hash: run `onetap-server user passwd kim` "
        "to store an argon2id one (scrypt hashes will not be read forever)"]


def test_the_hash_command_prints_argon2id(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("a password\n"))
    assert main(["hash"]) == 0
    stored = capsys.readouterr().out.strip()
    assert stored.startswith("$argon2id$") and verify_password(stored, "a password")


def test_token_command_prints_a_matching_hash(capsys):
    assert main(["token"]) == 0
    out = capsys.readouterr().out.splitlines()
    token = out[0].split()[-1]
    assert out[1] == f'sha256 = "{token_hash(token)}"'


def write(tmp_path, text):
    path = tmp_path / "server.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_users_tokens_alerts_config(tmp_path):
    path = write(tmp_path, f"""
[users.kim]
password_hash = "{hash_password('pw')}"
sites = ["s1"]
[users.central]
password_hash = "{hash_password('pw')}"
sites = "*"
[tokens.s1-reader]
sha256 = "{token_hash(S1_TOKEN)}"
sites = ["s1"]
[alerts]
offline_minutes = 5
opening_hours = ["mon-sat 08:30-17:30"]
webhook_url = "https://hooks.example.org/onetap"
""")
    config = load_config(path, env={"ONETAP_ALERTS_WEBHOOK_URL": "http://127.0.0.1:9/x"})
    assert config.users["kim"].sites == frozenset({"s1"}) and config.users["central"].sites is None
    assert config.tokens["s1-reader"].sites == frozenset({"s1"})
    assert config.alerts.offline_minutes == 5 and config.alerts.webhook_url == "http://127.0.0.1:9/x"
    assert config.alerts.hours[0][1:] == (510, 1050)
    assert "password_hash" not in repr(config) and token_hash(S1_TOKEN) not in repr(config)


@pytest.mark.parametrize("text, words", [
    ('[users.kim]\npassword_hash = "plain"\nsites = "*"', ["users.kim.password_hash"]),
    ('[users.kim]\nsites = "*"', ["users.kim.password_hash", "missing"]),
    ('[users.kim]\npassword_hash = "x"\nsites = "*"\nrole = "admin"', ["unknown key users.kim.role"]),
    ('[tokens.t]\nsha256 = "abc"\nsites = "*"', ["tokens.t.sha256"]),
    ('[tokens.t]\nsha256 = "' + "a" * 64 + '"\nsites = ["Bad Site"]', ["tokens.t.sites"]),
    ('[alerts]\nofline_minutes = 3', ["unknown key alerts.ofline_minutes"]),
    ('[alerts]\nopening_hours = ["mon-fri 9-18"]', ["alerts.opening_hours"]),
    ('[alerts]\nwebhook_url = "ftp://x"', ["alerts.webhook_url"]),
    ('[alerts]\nlow_score_max = 7', ["alerts.low_score_max"]),
])
def test_config_errors_name_key_and_file(tmp_path, text, words):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(path) in str(info.value)
    for word in words:
        assert word in str(info.value)


def rating(score, **extra):
    return Rating(id=str(uuid.uuid4()), seq=1, score=score, at="2026-11-27T10:15:02.417+09:00",
                  clock_synced=True, **extra)


@pytest.fixture
def client(tmp_path):
    path = tmp_path / "onetap.db"
    store = SQLiteStore.open(path)
    store.ingest_batch("s1", "t1", [rating(5), rating(4)], NOW)
    store.ingest_batch("s2", "t1", [rating(1)], NOW)
    store.update_status("s1", "t1", Status("online", {"backlog": 0}), NOW)
    store.update_status("s2", "t1", Status("online", {"backlog": 3}), NOW)
    store.close()
    config = load_config(write(tmp_path, f"""
api_token = "{ALL_TOKEN}"
[tokens.s1-reader]
sha256 = "{token_hash(S1_TOKEN)}"
sites = ["s1"]
"""), env={})
    app = create_app(lambda: SQLiteStore.open(path), config, now=lambda: NOW)
    with TestClient(app) as client:
        yield client


ENDPOINTS = ["/api/v1/summary", "/api/v1/aggregates?by=site", "/api/v1/terminals",
             "/api/v1/ratings.csv", "/api/v1/ratings.xlsx", "/api/v1/alerts"]


def test_every_api_path_is_covered_here(client):
    paths = {p for p in client.get("/openapi.json").json()["paths"] if p.startswith("/api/")}
    assert paths == {e.split("?")[0] for e in ENDPOINTS}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_scoped_token_gets_403_outside_its_sites(client, endpoint):
    joiner = "&" if "?" in endpoint else "?"
    s1 = {"Authorization": f"Bearer {S1_TOKEN}"}
    assert client.get(f"{endpoint}{joiner}site=s2", headers=s1).status_code == 403
    assert client.get(f"{endpoint}{joiner}site=s1", headers=s1).status_code == 200
    assert client.get(f"{endpoint}{joiner}site=s2",
                      headers={"Authorization": f"Bearer {ALL_TOKEN}"}).status_code == 200
    assert client.get(endpoint, headers={"Authorization": f"Bearer {token_hash(S1_TOKEN)}"}).status_code == 401


def test_scoped_token_without_site_sees_only_its_sites(client):
    s1 = {"Authorization": f"Bearer {S1_TOKEN}"}
    assert client.get("/api/v1/summary", headers=s1).json()["count"] == 2
    assert {r["site"] for r in client.get("/api/v1/aggregates?by=site", headers=s1).json()["rows"]} == {"s1"}
    assert {t["site"] for t in client.get("/api/v1/terminals", headers=s1).json()} == {"s1"}
    csv_text = client.get("/api/v1/ratings.csv", headers=s1).content.decode("utf-8-sig")
    assert len(csv_text.strip().splitlines()) == 3 and ",s2," not in csv_text
    book = load_workbook(io.BytesIO(client.get("/api/v1/ratings.xlsx", headers=s1).content))
    assert [row[1] for row in book["원자료"].iter_rows(min_row=2, values_only=True)] == ["s1", "s1"]
    everyone = {"Authorization": f"Bearer {ALL_TOKEN}"}
    assert client.get("/api/v1/summary", headers=everyone).json()["count"] == 3


def test_example_describes_every_new_key():
    from pathlib import Path

    from server.config import ALERT_KEYS
    example = Path(__file__).resolve().parents[2] / "deploy" / "server.example.toml"
    config = load_config(example, env={})
    text = example.read_text()
    for name in ALERT_KEYS:
        assert f"\n{name} = " in text, name
    assert "\npassword_hash = " in text and "\nsha256 = " in text
    assert config.users and config.tokens


# -- dashboard logins: throttling, lockout, hash slots, sessions bound to credentials ---------


class Clock:
    def __init__(self, start):
        self.now = start

    def __call__(self):
        return self.now


def login_form(client, name, password):
    import re

    page = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]
    return client.post("/login", data={"csrf": csrf, "username": name, "password": password},
                       follow_redirects=False)


def dashboard(tmp_path, users, clock, **http):
    from server.config import HttpConfig, ServerConfig, UserConfig

    path = tmp_path / "onetap.db"
    SQLiteStore.open(path).close()
    config = ServerConfig(api_token=ALL_TOKEN, http=HttpConfig(**http), users={
        name: UserConfig(hash_password(pw), sites) for name, (pw, sites) in users.items()})
    return config, path, TestClient(create_app(lambda: SQLiteStore.open(path), config, now=clock))


def test_200_wrong_passwords_lock_the_user_out_until_the_lockout_expires(tmp_path):
    from datetime import timedelta

    clock = Clock(NOW)
    _, _, client = dashboard(tmp_path, {"kim": ("right-password", None)}, clock, login_lockout_s=900.0,
                             login_user_lockout_failures=10)
    statuses = []
    for i in range(200):
        answer = login_form(client, "kim", f"wrong-{i}")
        statuses.append(answer.status_code)
        wait = int(answer.headers.get("Retry-After", 0))
        if answer.status_code == 429 and wait < 900:
            clock.now += timedelta(seconds=wait)  # the most patient guesser: waits out every delay
    assert statuses[:3] == [303, 303, 303]
    assert statuses.count(303) == 10  # ten guesses were hashed; the other 190 refused unheard
    assert statuses[-1] == 429
    clock.now += timedelta(seconds=600)
    locked = login_form(client, "kim", "right-password")
    assert locked.status_code == 429 and "onetap_session" not in locked.cookies
    assert 290 <= int(locked.headers["Retry-After"]) <= 300
    assert "다시 시도하세요" in locked.text
    clock.now += timedelta(seconds=301)
    accepted = login_form(client, "kim", "right-password")
    assert accepted.status_code == 303 and accepted.headers["location"] == "/"
    assert client.get("/", follow_redirects=False).status_code == 200


def test_delay_doubles_after_the_free_failures_and_other_users_are_not_delayed(tmp_path):
    from datetime import timedelta

    clock = Clock(NOW)
    _, _, client = dashboard(tmp_path, {"kim": ("pw-kim-1234", None), "lee": ("pw-lee-1234", None)}, clock,
                             login_free_failures=2, login_delay_s=2.0, login_ip_lockout_failures=1000,
                             login_ip_free_failures=1000)
    waits = []
    for _ in range(5):
        answer = login_form(client, "kim", "wrong")
        assert answer.status_code == 303
        answer = login_form(client, "kim", "wrong")
        if answer.status_code == 429:
            waits.append(int(answer.headers["Retry-After"]))
            clock.now += timedelta(seconds=waits[-1])
    assert waits == [2, 4, 8, 16][:len(waits)] and len(waits) >= 3
    assert login_form(client, "lee", "pw-lee-1234").headers["location"] == "/"


def test_one_address_is_locked_out_whatever_names_it_tries(tmp_path):
    clock = Clock(NOW)
    _, _, client = dashboard(tmp_path, {"kim": ("pw-kim-1234", None)}, clock, login_ip_lockout_failures=5,
                             login_free_failures=100, login_ip_free_failures=100)
    for i in range(5):
        assert login_form(client, f"nobody-{i}", "guess").status_code == 303
    answer = login_form(client, "kim", "pw-kim-1234")
    assert answer.status_code == 429 and "Retry-After" in answer.headers


def test_throttle_forgets_old_failures_and_bounds_its_table():
    from server.auth import LoginThrottle

    throttle = LoginThrottle(free=1, ip_free=1, delay_s=1.0, user_lockout=3, ip_lockout=50, lockout_s=60.0, max_keys=100)
    throttle.failed("kim", "10.0.0.1", 0.0)
    throttle.failed("kim", "10.0.0.1", 0.0)
    assert throttle.wait("kim", "10.0.0.9", 0.5) == 0.5
    assert throttle.wait("kim", "10.0.0.9", 61.0) == 0  # forgotten after lockout_s
    for i in range(1000):
        throttle.failed(f"name-{i}", f"10.1.{i // 256}.{i % 256}", 1.0)
    assert len(throttle._keys) <= 100
    # One machine's IPv6 /64 is one address.
    for i in range(3):
        throttle.failed(f"other-{i}", f"2001:db8:1:2::{i + 1:x}", 100.0)
    assert throttle.wait("nobody", "2001:db8:1:2:ffff::1", 100.0) > 0
    assert throttle.wait("nobody", "2001:db8:1:3::1", 100.0) == 0


def test_a_lockout_does_not_tell_which_names_exist(tmp_path):
    clock = Clock(NOW)
    _, _, client = dashboard(tmp_path, {"kim": ("pw-kim-1234", None)}, clock, login_ip_lockout_failures=1000,
                             login_ip_free_failures=1000)
    answers = {name: [login_form(client, name, "wrong").status_code for _ in range(12)]
               for name in ("kim", "no-such-user")}
    assert answers["kim"] == answers["no-such-user"]


def test_a_session_is_refused_after_a_password_or_scope_change(tmp_path):
    from dataclasses import replace

    from server.config import UserConfig

    clock = Clock(NOW)
    config, path, client = dashboard(tmp_path, {"kim": ("old-password-1", frozenset({"s1"}))}, clock)
    assert login_form(client, "kim", "old-password-1").headers["location"] == "/"
    cookie = client.cookies.get("onetap_session")
    assert client.get("/", follow_redirects=False).status_code == 200
    for changed in ({"kim": UserConfig(hash_password("new-password-1"), frozenset({"s1"}))},
                    {"kim": UserConfig(config.users["kim"].password_hash, frozenset({"s1", "s2"}))}):
        # The server restarted (or reloaded) with the user's new credentials.
        app = create_app(lambda: SQLiteStore.open(path), replace(config, users=changed), now=clock)
        with TestClient(app, cookies={"onetap_session": cookie}) as other:
            answer = other.get("/", follow_redirects=False)
            assert answer.status_code == 303 and answer.headers["location"] == "/login"
    # Unchanged credentials keep the session (and a tampered tag does not).
    app = create_app(lambda: SQLiteStore.open(path), config, now=clock)
    with TestClient(app, cookies={"onetap_session": cookie}) as same:
        assert same.get("/", follow_redirects=False).status_code == 303  # the change above deleted it
    assert login_form(client, "kim", "old-password-1").headers["location"] == "/"
    fresh = client.cookies.get("onetap_session")
    with TestClient(app, cookies={"onetap_session": fresh}) as same:
        assert same.get("/", follow_redirects=False).status_code == 200
    # Two characters of the tag changed, never to what they were.
    tampered = fresh[:-2] + ("AA" if fresh[-2:] != "AA" else "BB")
    with TestClient(app, cookies={"onetap_session": tampered}) as forged:
        assert forged.get("/", follow_redirects=False).status_code == 303
