"""Server-rendered SVG charts (no JavaScript, no CDN): trend lines with marks, heat map, bars (pure)."""

from __future__ import annotations

from html import escape
from typing import Callable, Sequence

PALETTE = {"index": "#1f5fa8", "csat": "#d9822b", "count": "#c9d3df", "mark": "#b3261e"}


def _num(value: float) -> str:
    return f"{value:.1f}"


def trend_chart(days: Sequence[str], index: Sequence[float | None], csat: Sequence[float | None],
                counts: Sequence[int], marks: Sequence[tuple[str, str]] = (), *,
                labels: dict[str, str], width: int = 860, height: int = 300, target: float | None = None) -> str:
    """Daily index and CSAT (0..100, lines) over count bars, with vertical lines at marks (day, note)
    and, if given, a horizontal line at the target index."""
    left, right, top, bottom = 44, 44, 16, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max(len(days), 1)
    step = plot_w / n
    max_count = max(counts, default=0) or 1
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{escape(labels["trend"])}" xmlns="http://www.w3.org/2000/svg">']
    for value in (0, 25, 50, 75, 100):
        y = top + plot_h * (1 - value / 100)
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{_num(y)}" y2="{_num(y)}" class="grid"/>'
                     f'<text x="{left - 6}" y="{_num(y + 4)}" class="axis" text-anchor="end">{value}</text>')
    # Count bars use the lower 35% of the plot: label the tallest one's level.
    count_top = top + plot_h * (1 - 0.35)
    parts.append(f'<line x1="{left + plot_w}" x2="{left + plot_w + 4}" y1="{_num(count_top)}" '
                 f'y2="{_num(count_top)}" class="grid"/>'
                 f'<text x="{left + plot_w + 6}" y="{_num(count_top + 4)}" class="axis">{max_count}</text>')
    for i, count in enumerate(counts):
        h = plot_h * 0.35 * count / max_count
        parts.append(f'<rect x="{_num(left + i * step + step * 0.15)}" y="{_num(top + plot_h - h)}" '
                     f'width="{_num(max(step * 0.7, 1))}" height="{_num(h)}" fill="{PALETTE["count"]}">'
                     f'<title>{escape(days[i])}: {count}</title></rect>')
    for name, series in (("index", index), ("csat", csat)):
        points, path = [], []
        for i, value in enumerate(series):
            if value is None:
                if points:
                    path.append(points)
                points = []
                continue
            points.append(f"{_num(left + (i + 0.5) * step)},{_num(top + plot_h * (1 - value / 100))}")
        if points:
            path.append(points)
        for segment in path:
            if len(segment) == 1:
                x, y = segment[0].split(",")
                parts.append(f'<circle cx="{x}" cy="{y}" r="3" fill="{PALETTE[name]}"/>')
            else:
                parts.append(f'<polyline points="{" ".join(segment)}" fill="none" stroke="{PALETTE[name]}" '
                             f'stroke-width="2"/>')
    if target is not None:
        y = top + plot_h * (1 - target / 100)
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{_num(y)}" y2="{_num(y)}" class="target" '
                     f'stroke="{PALETTE["index"]}"><title>{escape(labels.get("target", "target"))} {target:g}'
                     f'</title></line><text x="{left + plot_w - 4}" y="{_num(y - 4)}" class="axis" '
                     f'text-anchor="end">{escape(labels.get("target", "target"))} {target:g}</text>')
    tick = max(1, n // 8)
    for i in range(0, len(days), tick):
        parts.append(f'<text x="{_num(left + (i + 0.5) * step)}" y="{height - bottom + 16}" class="axis" '
                     f'text-anchor="middle">{escape(days[i][5:])}</text>')
    positions = {d: i for i, d in enumerate(days)}
    for day, note in marks:
        if day in positions:
            x = left + positions[day] * step
            parts.append(f'<line x1="{_num(x)}" x2="{_num(x)}" y1="{top}" y2="{top + plot_h}" class="mark" '
                         f'stroke="{PALETTE["mark"]}"><title>{escape(day)} {escape(note)}</title></line>'
                         f'<text x="{_num(x + 3)}" y="{top + 10}" class="mark-label">{escape(note[:24])}</text>')
    legend_y = height - 8
    parts.append(f'<rect x="{left}" y="{legend_y - 9}" width="12" height="4" fill="{PALETTE["index"]}"/>'
                 f'<text x="{left + 16}" y="{legend_y}" class="axis">{escape(labels["index"])}</text>'
                 f'<rect x="{left + 130}" y="{legend_y - 9}" width="12" height="4" fill="{PALETTE["csat"]}"/>'
                 f'<text x="{left + 146}" y="{legend_y}" class="axis">CSAT %</text>'
                 f'<rect x="{left + 230}" y="{legend_y - 11}" width="12" height="8" fill="{PALETTE["count"]}"/>'
                 f'<text x="{left + 246}" y="{legend_y}" class="axis">{escape(labels["count"])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _heat_colour(index: float | None) -> str:
    if index is None:
        return "#f2f2f2"
    # red (0) -> amber (50) -> green (100)
    t = max(0.0, min(1.0, index / 100))
    if t < 0.5:
        r, g, b = 214, int(70 + t * 2 * 120), 60
    else:
        r, g, b = int(214 - (t - 0.5) * 2 * 160), int(190 - (t - 0.5) * 2 * 40), int(60 + (t - 0.5) * 2 * 30)
    return f"#{r:02x}{g:02x}{b:02x}"


def heatmap(cells: dict[tuple[int, int], tuple[int, float | None]], weekdays: Sequence[str], *,
            labels: dict[str, str], hours: Sequence[int] | None = None, metric: str = "index",
            hour_label: Callable[[int], str] = "{:02d}".format) -> str:
    """Hour (rows) x ISO weekday 1..7 (columns), coloured by index; each cell prints *metric*
    (the index, or the count of ratings)."""
    if hours is None:
        used = sorted({h for h, _ in cells})
        hours = list(range(min(used), max(used) + 1)) if used else list(range(9, 18))
    cw, ch, left, top = 70, 24, 48, 22
    width, height = left + cw * 7 + 4, top + ch * len(hours) + 4
    parts = [f'<svg class="chart heat" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{escape(labels["heatmap"])}" xmlns="http://www.w3.org/2000/svg">']
    for d, name in enumerate(weekdays):
        parts.append(f'<text x="{left + d * cw + cw / 2}" y="14" class="axis" text-anchor="middle">{escape(name)}</text>')
    for r, hour in enumerate(hours):
        y = top + r * ch
        parts.append(f'<text x="{left - 6}" y="{y + 16}" class="axis" text-anchor="end">{escape(hour_label(hour))}</text>')
        for d in range(1, 8):
            count, index = cells.get((hour, d), (0, None))
            x = left + (d - 1) * cw
            if metric == "count":
                text = f"{count}" if count else ""
            else:
                text = "" if index is None else f"{index:.1f}"
            parts.append(f'<rect x="{x}" y="{y}" width="{cw - 2}" height="{ch - 2}" fill="{_heat_colour(index)}">'
                         f'<title>{escape(weekdays[d - 1])} {escape(hour_label(hour))}: '
                         f'{escape(labels["index"])} {"–" if index is None else f"{index:.1f}"}, '
                         f'{escape(labels["count"])} {count}</title></rect>'
                         f'<text x="{x + cw / 2 - 1}" y="{y + 16}" class="cell" text-anchor="middle">{text}</text>')
    parts.append("</svg>")
    return "".join(parts)


def heat_legend(*, words: dict[str, str], width: int = 360) -> str:
    """What the heat map's colours mean: the index from 0 to 100, and no data."""
    parts = [f'<svg class="legend" viewBox="0 0 {width} 34" role="img" aria-label="{escape(words["index"])}" '
             f'xmlns="http://www.w3.org/2000/svg"><text x="0" y="12" class="axis">{escape(words["index"])}</text>']
    step = 40
    for i, value in enumerate(range(0, 101, 25)):
        x = 90 + i * step
        parts.append(f'<rect x="{x}" y="2" width="{step - 2}" height="12" fill="{_heat_colour(float(value))}"/>'
                     f'<text x="{x + step / 2}" y="28" class="axis" text-anchor="middle">{value}</text>')
    x = 90 + 5 * step + 10
    parts.append(f'<rect x="{x}" y="2" width="{step - 2}" height="12" fill="{_heat_colour(None)}" stroke="#ccc"/>'
                 f'<text x="{x + step / 2}" y="28" class="axis" text-anchor="middle">{escape(words["no_data"])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def bars(items: Sequence[tuple[str, int, float | None]], *, labels: dict[str, str], width: int = 420) -> str:
    """Horizontal bars: (label, count, index) -> bar length by count, index written beside."""
    row, left = 24, 130
    height = max(row * len(items), row) + 6
    most = max((c for _, c, _ in items), default=0) or 1
    parts = [f'<svg class="chart bars" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{escape(labels["bars"])}" xmlns="http://www.w3.org/2000/svg">']
    if not items:
        parts.append(f'<text x="4" y="16" class="axis">{escape(labels["none"])}</text>')
    for i, (label, count, index) in enumerate(items):
        y = i * row + 4
        w = (width - left - 90) * count / most
        parts.append(f'<text x="{left - 6}" y="{y + 13}" class="axis" text-anchor="end">{escape(label)}</text>'
                     f'<rect x="{left}" y="{y}" width="{_num(max(w, 1))}" height="{row - 8}" fill="{PALETTE["index"]}"/>'
                     f'<text x="{_num(left + w + 6)}" y="{y + 13}" class="axis">{count}'
                     f'{"" if index is None else f" · {index:.1f}"}</text>')
    parts.append("</svg>")
    return "".join(parts)


def distribution_bar(distribution: dict[str, int] | dict[int, int], width: int = 160) -> str:
    """A small stacked bar of scores 1..5 (red to green)."""
    colours = {1: "#c62828", 2: "#ef6c00", 3: "#f9a825", 4: "#7cb342", 5: "#2e7d32"}
    counts = {s: int(distribution.get(s, distribution.get(str(s), 0))) for s in range(1, 6)}  # type: ignore[arg-type]
    total = sum(counts.values())
    parts = [f'<svg class="dist" viewBox="0 0 {width} 14" xmlns="http://www.w3.org/2000/svg">']
    x = 0.0
    for score, count in counts.items():
        if not total or not count:
            continue
        w = width * count / total
        parts.append(f'<rect x="{_num(x)}" y="0" width="{_num(w)}" height="14" fill="{colours[score]}">'
                     f'<title>{score}: {count}</title></rect>')
        x += w
    if not total:
        parts.append(f'<rect x="0" y="0" width="{width}" height="14" fill="#eeeeee"/>')
    parts.append("</svg>")
    return "".join(parts)
