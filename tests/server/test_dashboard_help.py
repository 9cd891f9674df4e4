"""The help page (TestClient): definitions, the suspect rule with the server's numbers, the privacy statement."""

from tests.server.dashboard_site import admin, site_db  # noqa: F401 - fixtures


def test_help_defines_the_figures_and_shows_the_privacy_statement(admin):
    html = admin.get("/help?lang=ko").text
    assert "(평균 점수 − 1) ÷ 4 × 100" in html and "CSAT" in html
    assert "4번 이상 연달아 1초 안쪽" in html  # the suspect rule with this server's numbers
    assert "개인정보를 수집·저장하지 않습니다" in html and "<table>" in html  # docs/privacy.md, Korean part
    assert "collects and stores no personal data" not in html
    english = admin.get("/help?lang=en").text
    assert "collects and stores no personal data" in english and "개인정보를 수집" not in english


def test_help_is_in_the_navigation_of_every_page(admin):
    for path in ("/", "/trends", "/compare", "/alerts", "/exports", "/help"):
        assert 'href="/help"' in admin.get(path).text, path
