"""The home page (TestClient): terminals board with the last stored tap, today's figures, group and site filter."""

import re

from tests.server.dashboard_site import admin, gangnam, site_db  # noqa: F401 - fixtures


def board_rows(html):
    table = html[html.index('id="terminals"'):html.index("</table>")]
    return re.findall(r"<tr class=\"state-[^\"]*\">(.*?)</tr>", table, re.S)


def test_last_tap_comes_from_stored_ratings_not_the_status(admin):
    html = admin.get("/").text
    row = next(r for r in board_rows(html) if "1번 창구" in r)
    # The newest stored rating (today 11:00:05 KST), not the Status's yesterday 09:00.
    assert re.search(r'class="last-tap">11-27 11:00:05<', row)
    # counter-02 has no Status last_tap_at but has ratings.
    row2 = next(r for r in board_rows(html) if "counter-02" in r)
    assert 'class="last-tap">–<' not in row2


def test_board_shows_display_names_and_todays_suspect_count(admin):
    html = admin.get("/").text
    assert "강남구청 민원실" in html and "1번 창구" in html
    assert re.search(r'id="today-count">0<', html)  # the 6 taps today are all suspect: excluded by default
    assert "오늘의 의심 평가" in html and "의심 평가: 제외 (기본)" in html
    included = admin.get("/?suspect=include").text
    assert re.search(r'id="today-count">6<', included) and "의심 평가: 포함" in included


def test_group_and_site_filters_narrow_the_board(admin, gangnam):
    south = admin.get("/?group=south").text
    assert "seocho-office" in south
    only = admin.get("/?site=seocho-office").text
    assert "강남구청 민원실" not in only[only.index('id="terminals"'):]
    assert admin.get("/?group=nope").status_code == 400
    assert "seocho-office" not in gangnam.get("/").text.split('id="terminals"')[1]
    assert gangnam.get("/?site=seocho-office").status_code == 403
    # A scoped user sees only the groups that hold one of their sites.
    assert "남부 권역" in gangnam.get("/").text and "북부 권역" not in gangnam.get("/").text
    assert gangnam.get("/?group=north").status_code == 403


def test_live_fragment_is_the_board_alone(admin):
    live = admin.get("/live")
    assert live.status_code == 200 and 'id="terminals"' in live.text and "<nav" not in live.text
