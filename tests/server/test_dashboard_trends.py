"""The trends page (TestClient): heat map metric switch and legend, terminal filter, reasons by meaning."""

import re

from tests.server.dashboard_site import admin, site_db  # noqa: F401 - fixtures

RANGE = "from=2026-11-02&to=2026-11-27"


def total(html):
    return int(re.search(r'id="total-count">(\d+)<', html)[1])


def heat_cells(html):
    heat = html[html.index('class="chart heat"'):]
    heat = heat[:heat.index("</svg>")]
    return [c for c in re.findall(r'class="cell" text-anchor="middle">([^<]*)<', heat) if c]


def test_heat_map_prints_the_chosen_metric_and_says_what_the_colour_means(admin):
    index_page = admin.get(f"/trends?{RANGE}").text
    assert "칸 안의 숫자: 만족도 지수" in index_page and 'class="legend"' in index_page
    assert all("." in cell for cell in heat_cells(index_page))  # 69.4, not 62
    count_page = admin.get(f"/trends?{RANGE}&cell=count").text
    assert "칸 안의 숫자: 평가 건수" in count_page
    assert all(cell.isdigit() for cell in heat_cells(count_page))
    assert 'id="cell-count" class="active"' in count_page
    assert admin.get(f"/trends?{RANGE}&cell=colour").status_code == 400


def test_terminal_filter_is_honoured_by_every_figure(admin):
    everything = total(admin.get(f"/trends?{RANGE}").text)
    one = admin.get(f"/trends?{RANGE}&terminal=gangnam-office/counter-02").text
    assert total(one) == 19 * 5 and total(one) < everything
    assert "1번 창구" not in one.split('id="scope-caption"')[1][:200] and "counter-02" in one
    same = admin.get(f"/trends?{RANGE}&site=gangnam-office&terminal=counter-02").text
    assert total(same) == total(one)
    # counter-01 exists at two sites: a terminal alone is ambiguous, never merged.
    assert admin.get(f"/trends?{RANGE}&terminal=counter-01").status_code == 400
    assert admin.get(f"/trends?{RANGE}&site=seocho-office&terminal=gangnam-office/counter-01").status_code == 400


def test_reasons_and_age_groups_read_as_words_in_order_with_no_answer_labelled(admin):
    html = admin.get(f"/trends?{RANGE}").text
    bars = html[html.index("불만족 사유"):]
    labels = re.findall(r'class="axis" text-anchor="end">([^<]+)<', bars)
    assert labels.index("대기 시간") < labels.index("응답 없음")
    assert "wait_time" not in html and "70plus" not in html
    ages = labels[labels.index("응답 없음") + 1:]
    assert ages.index("20세 미만") < ages.index("70세 이상")


def test_suspect_choice_is_printed_under_every_figure(admin):
    html = admin.get(f"/trends?{RANGE}&suspect=only").text
    assert html.count("의심 평가: 의심만") >= 4
    assert total(html) == 6


def test_the_target_of_the_site_or_group_is_drawn_and_shown(admin):
    site = admin.get(f"/trends?{RANGE}&site=gangnam-office").text
    assert 'class="target"' in site and 'id="target">70.0<' in site
    group = admin.get(f"/trends?{RANGE}&group=south").text
    assert 'id="target">60.0<' in group
    assert 'class="target"' not in admin.get(f"/trends?{RANGE}&site=seocho-office").text
