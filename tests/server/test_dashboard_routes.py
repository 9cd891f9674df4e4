"""Error pages (TestClient): in the reader's language with a way back, never raw JSON; the API stays JSON."""

from tests.server.dashboard_site import TOKEN, admin, gangnam, site_db  # noqa: F401 - fixtures


def test_404_400_403_pages_speak_the_readers_language(admin, gangnam):
    missing = admin.get("/no-such-page?lang=ko")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
    assert "찾을 수 없습니다" in missing.text and 'id="back"' in missing.text and "detail" not in missing.text
    bad = admin.get("/trends?from=2026-13-01")
    assert bad.status_code == 400 and "시작일: 날짜를 YYYY-MM-DD 형식으로 입력하세요." in bad.text
    english = admin.get("/trends?from=2026-13-01&lang=en")
    assert "From must be a date YYYY-MM-DD" in english.text and "Back to the start" in english.text
    forbidden = gangnam.get("/trends?site=seocho-office&lang=ko")
    assert forbidden.status_code == 403 and "권한이 없습니다" in forbidden.text and "<nav" in forbidden.text


def test_a_post_without_csrf_is_a_page_too(admin):
    answer = admin.post("/marks", data={"day": "2026-11-20", "note": "x"})
    assert answer.status_code == 403 and "양식이 만료되었습니다" in answer.text


def test_anonymous_errors_lead_back_to_login(site_db):
    from fastapi.testclient import TestClient

    from server.api import create_app
    from server.store import SQLiteStore
    from tests.server.dashboard_site import NOW, config_for

    client = TestClient(create_app(lambda: SQLiteStore.open(site_db), config_for(site_db), now=lambda: NOW))
    answer = client.get("/nothing-here")
    assert answer.status_code == 404 and 'href="/login"' in answer.text


def test_the_api_keeps_json_errors(admin):
    assert admin.get("/api/v1/summary").json()["detail"]
    answer = admin.get("/api/v1/summary?from=x", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code in (400, 422) and answer.headers["content-type"] == "application/json"
    assert admin.get("/api/v1/nothing").headers["content-type"] == "application/json"


def test_a_crash_is_a_500_page_and_logged(admin, monkeypatch, caplog):
    from server.dashboard import help as help_page

    def broken(lang):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(help_page, "privacy_statement", broken)
    answer = admin.get("/help?lang=ko")
    assert answer.status_code == 500 and "서버에 문제가 생겼습니다" in answer.text and "disk on fire" not in answer.text
    assert "disk on fire" in caplog.text


def test_a_database_failure_is_a_503_page_for_people_and_json_for_the_api(site_db, monkeypatch):
    from server.errors import StoreError
    from server.store import SQLiteStore
    from tests.server.dashboard_site import client_for

    client = client_for(site_db)

    def down(self, *args, **kwargs):
        raise StoreError("database error: disk I/O error")

    monkeypatch.setattr(SQLiteStore, "summary", down)
    page = client.get("/trends?lang=ko")
    assert page.status_code == 503 and "데이터베이스를 지금 읽을 수 없습니다" in page.text and "disk I/O" not in page.text
    api = client.get("/api/v1/summary", headers={"Authorization": f"Bearer {TOKEN}"})
    assert api.status_code == 503 and api.json() == {"detail": "the database is unavailable"}
