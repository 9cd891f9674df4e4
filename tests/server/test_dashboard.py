"""The dashboard in a real headless Chromium: log in, terminals board, charts, before/after, alerts, exports, log out."""

import os
import random
import tempfile
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from kiosk.protocol import AGE_GROUPS, Rating, Status, format_timestamp
from server.alerts import AlertEngine
from server.api import create_app
from server.auth import hash_password
from server.config import AlertsConfig, ServerConfig, UserConfig
from server.store import SQLiteStore
from tests.uvicorn_thread import serving

playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
#: Screenshots go to a temporary directory, or to docs/screenshots/ with
#: ONETAP_SCREENSHOTS=docs/screenshots (so a test run leaves the tree clean).
SHOTS = Path(os.environ.get("ONETAP_SCREENSHOTS") or tempfile.mkdtemp(prefix="onetap-shots-"))
KST = timezone(timedelta(hours=9))
PASSWORD = "맞는-비밀번호"


def seed(path, now):
    rng = random.Random(3)
    store = SQLiteStore.open(path)
    today = now.astimezone(KST).date()
    seqs = {}
    for back in range(60, -1, -1):
        day = today - timedelta(days=back)
        if day.weekday() == 6:
            continue
        for site, terminal in (("gangnam-office", "counter-01"), ("gangnam-office", "counter-02"),
                               ("seocho-office", "counter-01")):
            # the queue system of 20 days ago made people happier
            better = back < 20
            batch = []
            for _ in range(rng.randint(15, 35)):
                seqs[site, terminal] = seq = seqs.get((site, terminal), 0) + 1
                hour = rng.randint(9, 17)
                at = datetime(day.year, day.month, day.day, hour, rng.randint(0, 59), tzinfo=KST)
                if back == 0 and at > now:
                    at = now - timedelta(minutes=rng.randint(1, 120))
                score = rng.choices([1, 2, 3, 4, 5], [1, 2, 3, 5, 5] if better else [2, 3, 4, 4, 3])[0]
                batch.append(Rating(id=str(uuid.uuid4()), seq=seq, score=score, at=format_timestamp(at),
                                    clock_synced=True, reason=rng.choice(["wait_time", "staff_attitude", None])
                                    if score <= 2 else None, age_group=rng.choice([None, *AGE_GROUPS]),
                                    lang=rng.choice(["ko", "ko", "en"]), input="touch"))
            store.ingest_batch(site, terminal, batch, now)
    store.update_status("gangnam-office", "counter-01", Status("online", {
        "backlog": 0, "last_tap_at": format_timestamp(now - timedelta(minutes=3)), "clock_synced": True,
        "version": "0.1.0", "config_version": "3"}), now)
    store.update_status("gangnam-office", "counter-02", Status("online", {
        "backlog": 42, "oldest_pending_at": format_timestamp(now - timedelta(hours=2)), "clock_synced": False,
        "version": "0.1.0", "config_version": "3"}), now)
    store.update_status("seocho-office", "counter-01", Status("offline"), now - timedelta(minutes=40))
    store.add_mark("gangnam-office", today - timedelta(days=20), "번호표 시스템 도입", "admin", now)
    store.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    path = tmp_path_factory.mktemp("dash") / "onetap.db"
    now = datetime.now(timezone.utc)
    seed(path, now)
    config = ServerConfig(
        db=path, api_token="x" * 20,
        users={"admin": UserConfig(hash_password(PASSWORD), None),
               "gangnam": UserConfig(hash_password(PASSWORD), frozenset({"gangnam-office"}))},
        alerts=replace(AlertsConfig(), opening_hours=("mon-sun 00:00-23:59",)))
    engine_store = SQLiteStore.open(path)
    AlertEngine(engine_store, config).run_once(datetime.now(timezone.utc))
    engine_store.close()
    with serving(create_app(lambda: SQLiteStore.open(path), config)) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        yield browser
        browser.close()


def login(page, server, user="admin", password=PASSWORD):
    page.goto(f"{server}/")
    assert page.url.endswith("/login")
    page.fill("#username", user)
    page.fill("#password", password)
    page.click("#login")


def test_staff_journey(server, browser, tmp_path):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True, locale="ko-KR")
    page = context.new_page()
    requests_made = []
    page.on("request", lambda r: requests_made.append(r.url))
    login(page, server, password="틀린 비밀번호")
    assert page.url.endswith("/login?error=1")
    assert "맞지 않습니다" in page.inner_text("main")
    page.screenshot(path=str(SHOTS / "dashboard-login.png"))
    login(page, server)
    page.wait_for_selector("#terminals")
    assert page.url == f"{server}/"
    board = page.inner_text("#terminals")
    assert "counter-02" in board and "seocho-office" in board
    assert page.locator("#terminals tr.alarm").count() == 1  # seocho offline for 40 min in opening hours
    assert int(page.inner_text("#today-count")) > 0
    cookie = next(c for c in context.cookies() if c["name"] == "onetap_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    page.screenshot(path=str(SHOTS / "dashboard-home.png"), full_page=True)
    # live: the board is fetched again within 5 s
    with page.expect_response(lambda r: "/live" in r.url, timeout=15_000) as live:
        pass
    assert live.value.status == 200

    page.click("nav >> text=추이")
    page.wait_for_selector("svg.chart")
    assert page.locator("svg.chart polyline").count() >= 2  # index and CSAT lines
    assert page.locator("svg.chart line.mark").count() == 1  # the mark shows on the trend chart
    assert page.locator("svg.heat rect").count() >= 7
    page.screenshot(path=str(SHOTS / "dashboard-trends.png"), full_page=True)

    page.click("nav >> text=전후 비교")
    page.click("a.compare-link >> nth=0")
    statement = page.inner_text("#statement")
    assert "95% 신뢰구간" in statement and "유의한 변화입니다" in statement
    page.fill("#mark-note", "창구 재배치")
    page.click("#add-mark")
    assert "창구 재배치" in page.inner_text("main")
    page.screenshot(path=str(SHOTS / "dashboard-compare.png"), full_page=True)

    page.click("nav >> text=알림")
    open_alerts = page.inner_text("#open-alerts")
    # Kinds and messages in the reader's language, never the codes.
    assert "연결 끊김" in open_alerts and "시계 미동기화" in open_alerts and "미전송 누적" in open_alerts
    assert "시계가 동기화되지 않았습니다" in open_alerts and "clock" not in open_alerts
    page.screenshot(path=str(SHOTS / "dashboard-alerts.png"), full_page=True)
    page.click("#open-alerts button >> nth=0")
    assert "확인함: admin" in page.inner_text("#open-alerts")

    page.click("nav >> text=내보내기")
    page.screenshot(path=str(SHOTS / "dashboard-exports.png"))
    with page.expect_download() as download:
        page.click("#csv")
    csv_path = tmp_path / "ratings.csv"
    download.value.save_as(csv_path)
    data = csv_path.read_bytes()
    assert data.startswith(b"\xef\xbb\xbfid,site,terminal,seq,score,at,")
    assert data.count(b"\r\n") > 500
    with page.expect_download() as download:
        page.click("#xlsx")
    assert download.value.suggested_filename.endswith(".xlsx")
    page.select_option("form[action='/report'] select[name=site]", "gangnam-office")
    page.click("#report")
    page.wait_for_selector("svg.chart")
    assert "월간 만족도 보고서" in page.inner_text("h1")
    page.screenshot(path=str(SHOTS / "dashboard-report.png"), full_page=True)
    page.emulate_media(media="print")
    assert not page.locator("nav").is_visible()  # print CSS hides navigation
    page.emulate_media(media="screen")

    page.click("text=English")
    assert "Monthly satisfaction report" in page.inner_text("h1")
    page.goto(f"{server}/")
    assert "Terminals" in page.inner_text("main")

    page.click("#logout")
    assert page.url.endswith("/login")
    page.goto(f"{server}/trends")
    assert page.url.endswith("/login")  # the session is gone on the server too
    assert all(u.startswith(server) for u in requests_made)  # nothing from any CDN
    context.close()


def test_site_user_sees_only_their_site_and_forms_need_csrf(server, browser):
    context = browser.new_context()
    page = context.new_page()
    login(page, server, user="gangnam")
    page.wait_for_selector("#terminals")
    assert "seocho-office" not in page.inner_text("#terminals")
    assert page.goto(f"{server}/trends?site=seocho-office").status == 403
    assert page.goto(f"{server}/export/ratings.csv?site=seocho-office").status == 403
    # A POST without the form's CSRF token is refused even with the session cookie.
    response = context.request.post(f"{server}/marks", form={"day": "2026-01-01", "note": "x",
                                                             "site": "gangnam-office"})
    assert response.status == 403
    context.close()


PAGES = {"login": "/login", "home": "/", "trends": "/trends", "compare": "/compare", "alerts": "/alerts",
         "exports": "/exports", "help": "/help", "report": "/report?site=gangnam-office",
         "error": "/trends?from=2026-13-01"}


#: What sticks out past the viewport (for the failure message).
WIDEST = """() => Array.from(document.querySelectorAll('body *')).filter(
    e => e.getBoundingClientRect().right > window.innerWidth + 1 && !e.closest('.scroll, .chart-wrap'))
    .slice(0, 8).map(e => e.tagName + '.' + (e.className.baseVal ?? e.className) + ' ' +
    Math.round(e.getBoundingClientRect().right))"""


SMALLEST_CHART_TEXT = """() => { const sizes = Array.from(document.querySelectorAll('svg.chart text')).map(
    t => parseFloat(getComputedStyle(t).fontSize) * t.ownerSVGElement.getScreenCTM().a);
    return sizes.length ? Math.min(...sizes) : null; }"""


def sideways(page) -> tuple[int, int]:
    return page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")


def test_every_page_fits_a_phone_at_390_px_and_at_1280(server, browser):
    """No page scrolls sideways at 390×844 (tables and charts scroll inside their card), the navigation
    collapses behind a menu button, chart text stays legible; every page is also shot at 1280."""
    for width, height, suffix in ((390, 844, "-390"), (1280, 900, "")):
        context = browser.new_context(viewport={"width": width, "height": height}, locale="ko-KR",
                                      device_scale_factor=2 if width == 390 else 1)
        page = context.new_page()
        page.goto(f"{server}/login?lang=ko")
        assert sideways(page)[0] <= sideways(page)[1]
        page.screenshot(path=str(SHOTS / f"dashboard-login{suffix}.png"), full_page=True)
        login(page, server)
        page.wait_for_selector("#terminals")
        mark = page.goto(f"{server}/compare").url and page.get_attribute("a.compare-link >> nth=0", "href")
        for name, path in {**PAGES, "compare": mark}.items():
            if name == "login":
                continue
            page.goto(f"{server}{path}")
            scroll_width, viewport = sideways(page)
            assert scroll_width <= viewport, (name, width, scroll_width, page.evaluate(WIDEST))
            if name != "report":
                links = page.locator("nav .links")
                if width == 390:
                    assert not links.is_visible() and page.locator("#menu-button").is_visible(), name
                else:
                    assert links.is_visible() and not page.locator("#menu-button").is_visible(), name
            # Chart text is drawn at its size times the chart's scale: legible means at least 9.5 px.
            smallest = page.evaluate(SMALLEST_CHART_TEXT)
            assert smallest is None or smallest >= 9.5, (name, width, smallest)
            page.screenshot(path=str(SHOTS / f"dashboard-{name}{suffix}.png"), full_page=True)
        if width == 390:
            page.goto(f"{server}/trends")
            page.click("#menu-button")
            assert page.locator("nav .links a[href='/alerts']").is_visible()
            page.click("nav .links a[href='/alerts']")
            assert page.url.endswith("/alerts")
        context.close()
