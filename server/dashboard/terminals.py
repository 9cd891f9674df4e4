"""Retiring a terminal from the board: an administrator's confirmed form, the same operation as `onetap-server terminal retire`."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from kiosk.protocol import is_identifier
from server import terminals
from server.dashboard.context import PageError, Session, board, checked, current, reader_lang, render
from server.dashboard.i18n import t

router = APIRouter(include_in_schema=False)


def _admin(session: Session) -> None:
    # Retiring takes a terminal off every site's board: only a user who sees all sites may.
    if session.sites is not None:
        raise PageError(403, "retire_admin_only")


def _known(request: Request, site: str, terminal: str) -> dict:
    """The terminal's board row (not retired), or 400/404."""
    if not is_identifier(site):
        raise PageError(400, "bad_site")
    if not is_identifier(terminal):
        raise PageError(400, "bad_terminal")
    row = next((r for r in board(request).store().terminals(site=site) if r["terminal"] == terminal), None)
    if row is None:
        raise PageError(404, "not_found")
    return row


@router.get("/terminals/{site}/{terminal}/retire")
def confirm(request: Request, site: str, terminal: str, session: Session = Depends(current)) -> HTMLResponse:
    _admin(session)
    row = _known(request, site, terminal)
    config = board(request).config
    return render(request, "retire.html", session=session, title=t("retire_title", reader_lang(request)),
                  active="home", site=site, terminal=terminal, site_name=config.site_name(site),
                  terminal_name=config.terminal_name(site, terminal), backlog=row.get("backlog") or 0)


@router.post("/terminals/{site}/{terminal}/retire")
def retire(request: Request, site: str, terminal: str, session: Session = Depends(checked)) -> Response:
    _admin(session)
    row = _known(request, site, terminal)
    dash = board(request)
    try:
        # The dashboard cannot write the broker's password and ACL files: the page
        # tells the administrator to run the command, which removes the account.
        terminals.retire(dash.store(), site, terminal, now=dash.now(), passwd_path=None, acl_path=None)
    except terminals.TerminalError:
        raise PageError(409, "retire_backlog", backlog=row.get("backlog") or 0) from None
    return RedirectResponse("/", status_code=303)
