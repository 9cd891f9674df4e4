"""The shared scope of every page (TestClient): groups, terminals known by their site, one suspect default."""

from tests.server.dashboard_site import admin, site_db  # noqa: F401 - fixtures


def test_every_data_page_has_the_same_suspect_control_defaulting_to_exclude(admin):
    for path in ("/", "/trends", "/compare", "/alerts", "/exports"):
        html = admin.get(path).text
        assert '<option value="exclude" selected>제외 (기본)</option>' in html, path
        assert "의심 평가(기계적 속도)" in html, path


def test_every_data_page_has_the_group_filter(admin):
    for path in ("/", "/trends", "/compare", "/alerts", "/exports"):
        assert "남부 권역" in admin.get(path).text, path


def test_a_site_outside_the_group_is_refused(admin):
    answer = admin.get("/trends?group=north&site=gangnam-office")
    assert answer.status_code == 400 and "권역에 속하지 않습니다" in answer.text


def test_hostile_scope_values_are_400_never_500(admin):
    for query in ("site=BAD", "group=%00", "terminal=a/b/c", "suspect=maybe", "from=2026-02-30",
                  "from=2026-11-10&to=2026-11-01", "terminal=gangnam-office/"):
        answer = admin.get(f"/trends?{query}")
        assert 400 <= answer.status_code < 500, (query, answer.status_code)


def test_a_user_scoped_by_a_group_sees_the_groups_sites_only(site_db):
    from tests.server.dashboard_site import client_for

    north = client_for(site_db, "north")
    assert north.get("/trends?site=mapo-office").status_code == 200
    assert north.get("/trends?site=gangnam-office").status_code == 403
    assert "gangnam-office" not in north.get("/trends").text
