"""The help page: what the figures mean, how ratings are collected, the suspect rule, the privacy statement."""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from markdown_it import MarkdownIt
from markupsafe import Markup

from server.compare import MIN_COUNT
from server.dashboard.context import Session, board, current, reader_lang, render
from server.dashboard.i18n import t

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)
#: The privacy statement is written once, in docs/privacy.md (a Korean and an English part).
PRIVACY = Path(__file__).resolve().parents[2] / "docs" / "privacy.md"
PRIVACY_PARTS = {"ko": "## 한국어", "en": "## English"}


@lru_cache(maxsize=None)
def privacy_statement(lang: str) -> Markup | None:
    """The reader's part of docs/privacy.md as HTML (raw HTML in it is escaped), or None if absent."""
    try:
        text = PRIVACY.read_text(encoding="utf-8")
    except OSError as exc:
        log.warning("no privacy statement for the help page: %s", exc)
        return None
    start = text.find(PRIVACY_PARTS[lang])
    if start < 0:
        return None
    body = text[start + len(PRIVACY_PARTS[lang]):]
    others = [text.find(head, start + 1) for head in PRIVACY_PARTS.values()]
    ends = [i - start - len(PRIVACY_PARTS[lang]) for i in others if i > start]
    if ends:
        body = body[:min(ends)]
    # Headings move two levels down under the page's own h2.
    body = body.replace("\n### ", "\n#### ")
    return Markup(MarkdownIt("commonmark", {"html": False}).enable("table").render(body))


@router.get("/help")
def help_page(request: Request, session: Session = Depends(current)) -> HTMLResponse:
    dash = board(request)
    lang = reader_lang(request)
    rules = dash.config.alerts
    return render(request, "help.html", session=session, title=t("help", lang), active="help",
                  privacy=privacy_statement(lang), min_count=MIN_COUNT, rules=rules)
