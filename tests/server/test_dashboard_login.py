"""The login page (TestClient): form fields through FastAPI Form, login CSRF, wrong password, logout."""

import re

from fastapi.testclient import TestClient

from server.api import create_app
from server.store import SQLiteStore
from tests.server.dashboard_site import NOW, PASSWORD, admin, config_for, csrf_of, site_db  # noqa: F401


def anonymous(path):
    return TestClient(create_app(lambda: SQLiteStore.open(path), config_for(path), now=lambda: NOW))


def test_login_needs_the_pages_csrf_and_the_right_password(site_db):
    client = anonymous(site_db)
    assert client.get("/", follow_redirects=False).headers["location"] == "/login"
    page = client.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]
    refused = client.post("/login", data={"csrf": "other", "username": "admin", "password": PASSWORD})
    assert refused.status_code == 403 and "로그인 양식이 만료되었습니다" in refused.text
    wrong = client.post("/login", data={"csrf": token, "username": "admin", "password": "no"}, follow_redirects=False)
    assert wrong.headers["location"] == "/login?error=1"
    assert "맞지 않습니다" in client.get("/login?error=1").text
    page = client.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]
    done = client.post("/login", data={"csrf": token, "username": "admin", "password": PASSWORD},
                       follow_redirects=False)
    assert done.status_code == 303 and "onetap_session" in done.headers["set-cookie"]


def test_logout_ends_the_session(admin):
    assert admin.post("/logout", data={"csrf": csrf_of(admin)}, follow_redirects=False).status_code == 303
    assert admin.get("/trends", follow_redirects=False).headers["location"] == "/login"
