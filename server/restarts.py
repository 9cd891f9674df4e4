"""Seq restarts: a terminal numbering its taps from 1 again over ratings it already has (a kiosk replaced without its outbox)."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

#: The last rating (pk) already looked at, in the store's meta table.
WATERMARK = "restarts.pk"


def first_taps(rows: Iterable[Mapping[str, Any]]) -> set[tuple[str, str]]:
    """(site, terminal) of every rating with seq 1 among *rows*."""
    return {(row["site"], row["terminal"]) for row in rows if row["seq"] == 1}


def find_restarts(store) -> dict[tuple[str, str], int]:
    """Terminals whose seq began again at 1 among the ratings stored since the last
    call, with how many seq-1 ratings each now has (2 after the first restart).

    The terminal's ratings are all kept and counted (each has its own id); a
    restart is evidence that a kiosk lost its outbox, so the numbering's gaps
    and repeats must be explained (docs/deploy.md, "Replacing a kiosk").
    """
    watermark = int(store.get_meta(WATERMARK, "0"))
    fresh = store.ratings_after(watermark)
    if not fresh:
        return {}
    found = {}
    for site, terminal in sorted(first_taps(fresh)):
        starts = store.terminal_ratings(site, terminal, 1, 1)
        if len(starts) > 1:
            found[site, terminal] = len(starts)
    store.set_meta(WATERMARK, str(fresh[-1]["pk"]))
    return found
