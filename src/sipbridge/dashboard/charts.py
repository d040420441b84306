"""The Metrics page's charts as SVG written on the server: no JavaScript, nothing to load.

Each chart is an ``<svg role="img">`` with a title and a description, every bar or cell
has a ``<title>`` (its figure on hover, and read by screen readers), bars carry their
number as text, and the heat map prints each cell's count: nothing depends on colour
alone. The page puts a table of the same numbers beside every chart. Colours are CSS
classes (``dashboard.css``), so dark and light follow the system setting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import count

from markupsafe import Markup, escape

__all__ = ["WEEKDAYS", "bar_list", "column_chart", "heat_map", "nice_ceiling"]

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_ids = count(1)


def nice_ceiling(value: float) -> int:
    """The smallest of 1, 2, 2.5, 5 times 10^n at or above ``value`` (an axis maximum)."""
    if value <= 1:
        return 1
    exponent = 10.0 ** math.floor(math.log10(value))
    ceiling = 10 * exponent
    for step in (1, 2, 2.5, 5):
        if step * exponent >= value:
            ceiling = step * exponent
            break
    return math.ceil(ceiling)


def _open(width: int, height: int, title: str, desc: str, css: str) -> tuple[str, str]:
    ident = f"chart{next(_ids)}"
    head = (
        f'<svg class="chart {css}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="{ident}-t {ident}-d" preserveAspectRatio="xMinYMin meet">'
        f'<title id="{ident}-t">{escape(title)}</title><desc id="{ident}-d">{escape(desc)}</desc>'
    )
    return head, "</svg>"


def column_chart(
    points: Sequence[tuple[str, int]], *, title: str, label_every: int = 1, unit: str = "calls"
) -> Markup:
    """Vertical bars over time (calls per hour or day), a labelled count axis."""
    width, height = 720, 260
    left, right, top, bottom = 48, 8, 12, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max((value for _, value in points), default=0)
    axis_max = nice_ceiling(peak)
    total = sum(value for _, value in points)
    desc = f"{len(points)} bars, {total} {unit} in all, at most {peak}"
    head, tail = _open(width, height, title, desc, "columns")
    parts = [head]
    for i in range(5):  # grid lines and the count axis
        value = axis_max * i / 4
        y = top + plot_h - plot_h * i / 4
        label = f"{value:g}"
        parts.append(
            f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="axis" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>'
        )
    slot = plot_w / max(1, len(points))
    bar_w = max(1.0, slot * 0.8)
    for i, (label, value) in enumerate(points):
        x = left + i * slot + (slot - bar_w) / 2
        h = plot_h * value / axis_max
        y = top + plot_h - h
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}">'
            f"<title>{escape(label)}: {value} {unit}</title></rect>"
        )
        if i % label_every == 0:
            cx = x + bar_w / 2
            parts.append(
                f'<text class="axis" x="{cx:.1f}" y="{height - bottom + 16}" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    parts.append(tail)
    return Markup("".join(parts))


def bar_list(items: Sequence[tuple[str, int]], *, title: str, unit: str = "calls") -> Markup:
    """Horizontal bars, one per item, its name on the left and its number on the right."""
    row_h, label_w, value_w, width = 26, 220, 70, 720
    height = max(row_h, row_h * len(items)) + 4
    peak = max((value for _, value in items), default=0) or 1
    total = sum(value for _, value in items)
    head, tail = _open(width, height, title, f"{len(items)} bars, {total} {unit}", "bars")
    parts = [head]
    span = width - label_w - value_w
    for i, (label, value) in enumerate(items):
        y = 2 + i * row_h
        w = span * value / peak
        text = label if len(label) <= 30 else label[:29] + "…"
        parts.append(
            f"<g><title>{escape(label)}: {value} {unit}</title>"
            f'<text class="label" x="{label_w - 8}" y="{y + 17}" text-anchor="end">'
            f"{escape(text)}</text>"
            f'<rect class="bar" x="{label_w}" y="{y + 4}" width="{max(w, 1):.1f}" '
            f'height="{row_h - 8}"/>'
            f'<text class="value" x="{label_w + w + 6:.1f}" y="{y + 17}">{value}</text></g>'
        )
    parts.append(tail)
    return Markup("".join(parts))


def heat_map(matrix: Sequence[Sequence[int]], *, title: str) -> Markup:
    """Calls by weekday (rows, Monday first) and hour (columns), each cell's count printed
    in it and its shade from the count (five steps: ``heat0`` to ``heat4``)."""
    cell_w, cell_h, left, top = 28, 26, 40, 20
    width, height = left + 24 * cell_w + 4, top + 7 * cell_h + 4
    peak = max((max(row) for row in matrix), default=0)
    total = sum(sum(row) for row in matrix)
    busiest = _busiest(matrix)
    desc = f"{total} calls by weekday and hour (UTC); busiest: {busiest}"
    head, tail = _open(width, height, title, desc, "heat")
    parts = [head]
    for hour in range(0, 24, 3):
        x = left + hour * cell_w + cell_w / 2
        parts.append(
            f'<text class="axis" x="{x:.0f}" y="14" text-anchor="middle">{hour:02d}</text>'
        )
    for day, row in enumerate(matrix):
        y = top + day * cell_h
        parts.append(
            f'<text class="axis" x="{left - 6}" y="{y + 17}" text-anchor="end">'
            f"{WEEKDAYS[day]}</text>"
        )
        for hour, value in enumerate(row):
            level = 0 if not value or not peak else 1 + min(3, int(4 * value / (peak + 1)))
            x = left + hour * cell_w
            parts.append(
                f"<g><title>{WEEKDAYS[day]} {hour:02d}:00-{hour:02d}:59: {value} calls</title>"
                f'<rect class="heat{level}" x="{x}" y="{y}" width="{cell_w - 2}" '
                f'height="{cell_h - 2}"/>'
            )
            if value:
                parts.append(
                    f'<text class="cell" x="{x + (cell_w - 2) / 2:.0f}" y="{y + 16}" '
                    f'text-anchor="middle">{_short(value)}</text>'
                )
            parts.append("</g>")
    parts.append(tail)
    return Markup("".join(parts))


def _short(value: int) -> str:
    """A count in at most 4 characters (1234 -> 1.2k)."""
    if value < 1000:
        return str(value)
    if value < 10_000:
        return f"{value / 1000:.1f}k"
    if value < 1_000_000:
        return f"{value // 1000}k"
    return f"{value / 1_000_000:.0f}M"


def _busiest(matrix: Sequence[Sequence[int]]) -> str:
    best, where = 0, "none"
    for day, row in enumerate(matrix):
        for hour, value in enumerate(row):
            if value > best:
                best, where = value, f"{WEEKDAYS[day]} {hour:02d}:00 ({value} calls)"
    return where
