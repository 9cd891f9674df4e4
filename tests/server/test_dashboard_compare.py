"""The before/after page (TestClient): the periods that hold data, n per side, labelled columns, bounds."""

import re

from tests.server.dashboard_site import admin, csrf_of, gangnam, site_db  # noqa: F401 - fixtures


def mark_pk(client):
    return re.search(r'href="/compare\?[^"]*mark=(\d+)', client.get("/compare").text)[1]


def test_sides_print_the_days_that_hold_data_and_their_n(admin):
    html = admin.get(f"/compare?mark={mark_pk(admin)}&days=28").text
    before = re.search(r'id="side-before">(.*?)</span>', html, re.S)[1]
    # Asked 2026-10-19 – 2026-11-15, data from 2026-11-02 (weekdays only: the last is Friday 11-13).
    assert "2026-11-02 – 2026-11-13" in before and "n=190" in before and "2026-10-19 – 2026-11-15" in before
    after = re.search(r'id="side-after">(.*?)</span>', html, re.S)[1]
    assert "2026-11-16 – 2026-11-26" in after and "n=171" in after  # today's 6 are suspect: excluded
    head = html[html.index('id="comparison"'):html.index("</thead>", html.index('id="comparison"'))]
    assert head.count('class="num"') == 4 and "판단" in head  # numeric headers align with their numbers
    assert "유의" in html


def test_marks_table_labels_the_author_and_names_every_site(admin):
    html = admin.get("/compare").text
    table = html[html.index('id="marks"'):html.index("</table>", html.index('id="marks"'))]
    assert "<th>작성자</th>" in table and "<th></th>" not in table
    assert "전체 기관" in table and "<td>*</td>" not in table
    assert "번호표 &lt;도입&gt;" in table  # a note is text, never markup


def test_days_must_be_one_to_365(admin):
    for days in ("0", "-3", "366", "x"):
        answer = admin.get(f"/compare?days={days}")
        assert answer.status_code == 400 and "1일부터 365일까지" in answer.text


def test_marks_are_added_and_deleted_with_the_form_and_its_csrf(gangnam):
    csrf = csrf_of(gangnam)
    added = gangnam.post("/marks", data={"csrf": csrf, "day": "2026-11-20", "note": "창구 재배치",
                                         "site": "gangnam-office"}, follow_redirects=False)
    assert added.status_code == 303
    pk = added.headers["location"].split("=")[1]
    assert "창구 재배치" in gangnam.get(added.headers["location"]).text
    assert gangnam.post("/marks", data={"csrf": csrf, "day": "2026-11-20", "note": "x"}).status_code == 403
    assert gangnam.post(f"/marks/{pk}/delete", data={"csrf": "wrong"}).status_code == 403
    assert gangnam.post(f"/marks/{pk}/delete", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    assert "창구 재배치" not in gangnam.get("/compare").text
