"""The monthly report as a document: HTML from the Jinja2 template, PDF from that HTML with WeasyPrint."""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import kiosk.protocol as protocol
from server.dashboard import charts
from server.report import Report

log = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).resolve().parent / "dashboard" / "templates"
STATIC_DIR = Path(__file__).resolve().parent / "dashboard" / "static"
#: The Korean font shipped with the kiosk: the PDF needs no font installed on the server.
FONTS_DIR = Path(protocol.__file__).resolve().parent / "fonts"
FONT_REGULAR = FONTS_DIR / "NanumGothic.ttf"
FONT_BOLD = FONTS_DIR / "NanumGothicBold.ttf"


@lru_cache(maxsize=1)
def environment():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    # autoescape on for every template: site names, notes and marks come from people.
    env = Environment(loader=FileSystemLoader(TEMPLATES_DIR), autoescape=True, undefined=StrictUndefined)
    env.globals["num"] = _num
    env.globals["signed"] = _signed
    return env


def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _signed(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:+.{digits}f}"


def _charts(report: Report) -> dict[str, Any]:
    from markupsafe import Markup

    names = {"trend": report.words["daily"], "heatmap": report.words["heatmap"], "index": report.words["index"],
             "count": report.words["count"], "bars": "", "none": report.words["no_data"]}
    days = [day for day, _ in report.days]
    trend = charts.trend_chart(days, [s.index if s else None for _, s in report.days],
                               [s.csat if s else None for _, s in report.days],
                               [s.count if s else 0 for _, s in report.days], report.marks,
                               labels=names, width=720, height=230)
    hour_labels = dict(zip(report.hours, report.hour_labels))
    heat = charts.heatmap(report.heat, report.weekdays, labels=names, hours=report.hours, metric="count",
                          hour_label=hour_labels.__getitem__)
    legend = charts.heat_legend(words={"index": report.words["index"], "no_data": report.words["no_data"]})
    # The chart module escapes every text it draws (server/dashboard/charts.py).
    return {"trend_svg": Markup(trend), "heat_svg": Markup(heat), "heat_legend_svg": Markup(legend)}


def render_html(report: Report, *, css_href: str = "/static/report.css",
                screen_css_href: str | None = "/static/report-screen.css", script_href: str | None = None,
                toolbar: Mapping[str, str] | None = None) -> str:
    """The report page; *toolbar* (back, lang_href, lang_label, print, pdf_href) only on screen."""
    template = environment().get_template("report.html")
    return template.render(r=report, css_href=css_href, screen_css_href=screen_css_href, script_href=script_href,
                           toolbar=toolbar, **_charts(report))


def _font_faces() -> str:
    return (f'@font-face {{ font-family: "NanumGothic"; font-weight: normal; src: url("{FONT_REGULAR.as_uri()}"); }}\n'
            f'@font-face {{ font-family: "NanumGothic"; font-weight: bold; src: url("{FONT_BOLD.as_uri()}"); }}\n')


def render_pdf(report: Report) -> bytes:
    """The report as an A4 PDF with the bundled Korean font (no browser on the server)."""
    from weasyprint import CSS, HTML
    from weasyprint.text.fonts import FontConfiguration

    fonts = FontConfiguration()
    css = STATIC_DIR / "report.css"
    html = render_html(report, css_href=css.as_uri(), screen_css_href=None)
    document = HTML(string=html, base_url=str(STATIC_DIR))
    return document.write_pdf(stylesheets=[CSS(string=_font_faces(), font_config=fonts)], font_config=fonts)
