"""server/passwd.py: our hashes are mosquitto_passwd's, and edits keep other lines."""

import shutil
import subprocess

import pytest

from server import passwd


def test_hash_matches_a_known_mosquitto_passwd_line():
    # Written by mosquitto_passwd 2.0.11 for user "alice", password "secret".
    line = ("alice:$7$101$n/y/yxqCNIK+ipxK$rfYYC4QJaKcjFdfT6p9JjijwwmNcYzq99m1wX17plKbYO7oR"
            "+w/fSiXImx3SjAmyGg7qpcmdmmzhmsuLBRBoPg==")
    hashed = line.split(":", 1)[1]
    assert passwd.verify_password("secret", hashed)
    assert not passwd.verify_password("Secret", hashed)
    salt = __import__("base64").b64decode(hashed.split("$")[3])
    assert passwd.hash_password("secret", salt=salt) == hashed


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None,
                    reason="mosquitto_passwd not installed (apt-get install mosquitto)")
def test_verifies_what_mosquitto_passwd_writes_now(tmp_path):
    path = tmp_path / "pw"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(path), "kiosk@site", "p:w d"],
                   check=True, capture_output=True)
    user, hashed = path.read_text().strip().split(":", 1)
    assert user == "kiosk@site"
    assert passwd.verify_password("p:w d", hashed)
    assert not passwd.verify_password("p:w", hashed)


def test_hash_format_is_mosquittos():
    hashed = passwd.hash_password("x")
    empty, kind, iterations, salt, digest = hashed.split("$")
    assert (empty, kind, iterations) == ("", "7", "101")
    assert len(__import__("base64").b64decode(salt)) == 12
    assert len(__import__("base64").b64decode(digest)) == 64
    assert passwd.hash_password("x") != hashed  # a fresh salt each time


def test_set_entry_replaces_in_place_and_keeps_other_lines():
    text = "# hand-written\nalice:$7$old\nbob:$7$bob\n\n"
    out = passwd.set_entry(text, "alice", "$7$new")
    assert out == "# hand-written\nalice:$7$new\nbob:$7$bob\n\n"
    out = passwd.set_entry("bob:$7$bob", "carol", "$7$c")
    assert out == "bob:$7$bob\ncarol:$7$c\n"
    assert passwd.users(out) == ["bob", "carol"]


def test_set_entry_drops_a_shadowing_duplicate():
    out = passwd.set_entry("a:$7$1\nb:$7$2\na:$7$3\n", "a", "$7$new")
    assert out == "a:$7$new\nb:$7$2\n"


@pytest.mark.parametrize("name", ["", "a:b", "a b", "a#b", "a\tb", "a\nb"])
def test_unusable_usernames_are_refused(name):
    with pytest.raises(passwd.PasswordFileError):
        passwd.set_entry("", name, "$7$x")


@pytest.mark.parametrize("bad", ["$6$abc$def", "$7$101$!!$xx", "plain"])
def test_malformed_hash_is_an_error(bad):
    with pytest.raises(passwd.PasswordFileError):
        passwd.verify_password("x", bad)


def test_a_new_secret_never_starts_with_a_dash(monkeypatch):
    # One in 64 of token_urlsafe's would, and `simulate --password -x…` then fails to parse.
    drawn = iter(["-dash-first", "_fine-then", "-again", "ok"])
    monkeypatch.setattr(passwd.secrets, "token_urlsafe", lambda _n: next(drawn))
    assert passwd.new_password() == "_fine-then"
    from server.auth import new_token
    assert new_token() == "ok"


def test_new_passwords_differ_and_are_long():
    first, second = passwd.new_password(), passwd.new_password()
    assert first != second and len(first) >= 32
