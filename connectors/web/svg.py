"""Small inline SVG charts (line and horizontal bar) for self-contained HTML reports: no script, no CDN.

Every text that comes from data is escaped. Sizes are in SVG user units; the charts scale to their container.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f")
FONT = 'font-family="system-ui, sans-serif" font-size="12"'


@dataclass(frozen=True)
class Series:
    """One line: ``y`` per x position (None leaves a gap), drawn dashed if ``dashed``."""

    name: str
    y: Sequence[float | None]
    color: str = PALETTE[0]
    dashed: bool = False


def _ticks(v: float, count: int = 5) -> list[float]:
    """Evenly spaced tick values from 0 to at least ``v``, the step 1, 2, 2.5 or 5 times a power of ten."""
    if v <= 0 or not math.isfinite(v):
        v = 1.0
    raw = v / count
    p = 10 ** math.floor(math.log10(raw))
    step = next(m * p for m in (1, 2, 2.5, 5, 10) if m * p >= raw * (1 - 1e-9))
    n = max(1, math.ceil(v / step - 1e-9))
    return [step * k for k in range(n + 1)]


def _svg(width: int, height: int, body: list[str], title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" '
        f'role="img" aria-label="{escape(title)}" {FONT}><title>{escape(title)}</title>'
        + "".join(body)
        + "</svg>"
    )


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_labels: Sequence[str],
    y_format: Callable[[float], str] = "{:g}".format,
    y_max: float | None = None,
    x_title: str = "",
    width: int = 900,
    height: int = 320,
) -> str:
    """Lines over shared x positions; ``x_labels`` (one per position) are thinned to fit."""
    left, right, top, bottom = 64, 16, 48, 48 if x_title else 32
    pw, ph = width - left - right, height - top - bottom
    n = max((len(s.y) for s in series), default=0)
    values = [v for s in series for v in s.y if v is not None]
    ticks = _ticks(y_max if y_max is not None else max(values, default=1.0))
    top_value = ticks[-1]

    def px(i: int) -> float:
        return left + (pw * i / (n - 1) if n > 1 else pw / 2)

    def py(v: float) -> float:
        return top + ph * (1 - min(v, top_value) / top_value)

    body = [f'<text x="{left}" y="18" font-weight="600" font-size="14">{escape(title)}</text>']
    for v in ticks:
        body.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{py(v):.1f}" y2="{py(v):.1f}" stroke="#ddd"/>'
            f'<text x="{left - 6}" y="{py(v) + 4:.1f}" text-anchor="end">{escape(y_format(v))}</text>'
        )
    step = max(1, math.ceil(n / 8))
    for i in range(0, n, step):
        label = x_labels[i] if i < len(x_labels) else ""
        body.append(f'<text x="{px(i):.1f}" y="{top + ph + 16}" text-anchor="middle">{escape(label)}</text>')
    if x_title:
        body.append(
            f'<text x="{left + pw / 2}" y="{height - 6}" text-anchor="middle" fill="#555">'
            f"{escape(x_title)}</text>"
        )
    for s in series:
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        for run in _runs(s.y):
            points = " ".join(f"{px(i):.1f},{py(v):.1f}" for i, v in run)
            if len(run) == 1:
                i, v = run[0]
                body.append(f'<circle cx="{px(i):.1f}" cy="{py(v):.1f}" r="2" fill="{s.color}"/>')
            else:
                body.append(
                    f'<polyline points="{points}" fill="none" stroke="{s.color}" stroke-width="1.8"{dash}/>'
                )
    x = left
    for s in series:  # legend, left to right between the title and the plot
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        body.append(
            f'<line x1="{x}" x2="{x + 24}" y1="32" y2="32" stroke="{s.color}" stroke-width="2"{dash}/>'
            f'<text x="{x + 30}" y="36">{escape(s.name)}</text>'
        )
        x += 50 + 7 * len(s.name)
    frame = f'x="{left}" y="{top}" width="{pw}" height="{ph}"'
    body.append(f'<rect {frame} fill="none" stroke="#999" stroke-width="0.8"/>')
    return _svg(width, height, body, title)


def _runs(ys: Sequence[float | None]) -> list[list[tuple[int, float]]]:
    """Consecutive stretches of defined values."""
    runs: list[list[tuple[int, float]]] = []
    current: list[tuple[int, float]] = []
    for i, v in enumerate(ys):
        if v is None or not math.isfinite(v):
            if current:
                runs.append(current)
            current = []
        else:
            current.append((i, v))
    if current:
        runs.append(current)
    return runs


def bar_chart(
    labels: Sequence[str],
    groups: Sequence[Series],
    *,
    title: str,
    value_format: Callable[[float], str] = "{:g}".format,
    x_max: float | None = None,
    reference: tuple[str, float] | None = None,
    row_colors: Sequence[str] | None = None,
    width: int = 900,
) -> str:
    """Horizontal bars: one row per label, one bar per series in ``groups`` (its ``y`` aligned with labels).

    ``reference`` draws a dashed vertical line at a value (e.g. the target, or 1x for an enrichment);
    ``row_colors`` colours a single series' bars row by row.
    """
    bar_h, gap = 16, 10
    row_h = bar_h * len(groups) + gap
    label_w = min(260, 20 + 7 * max((len(s) for s in labels), default=4))
    left, right, top = label_w, 90, 40 if len(groups) == 1 and reference is None else 56
    height = top + row_h * max(1, len(labels)) + 12
    pw = width - left - right
    values = [v for g in groups for v in g.y if v is not None]
    limit = max([*values, reference[1] if reference else 0.0])
    top_value = _ticks(x_max if x_max is not None else limit)[-1]

    def px(v: float) -> float:
        return left + pw * min(max(v, 0.0), top_value) / top_value

    body = [f'<text x="8" y="18" font-weight="600" font-size="14">{escape(title)}</text>']
    for r, label in enumerate(labels):
        y0 = top + r * row_h
        body.append(
            f'<text x="{left - 8}" y="{y0 + row_h / 2 - gap / 2 + 4:.1f}" text-anchor="end">'
            f"{escape(label)}</text>"
        )
        for g, s in enumerate(groups):
            v = s.y[r] if r < len(s.y) else None
            y = y0 + g * bar_h
            if v is None:
                body.append(f'<text x="{left + 4}" y="{y + 12}" fill="#777">n/a</text>')
                continue
            color = row_colors[r] if row_colors is not None and len(groups) == 1 else s.color
            body.append(
                f'<rect x="{left}" y="{y}" width="{px(v) - left:.1f}" height="{bar_h - 2}" fill="{color}"/>'
                f'<text x="{px(v) + 4:.1f}" y="{y + 12}">{escape(value_format(v))}</text>'
            )
    body.append(f'<line x1="{left}" x2="{left}" y1="{top - 4}" y2="{height - 8}" stroke="#999"/>')
    legend = list(groups) if len(groups) > 1 else []
    x = left
    for s in legend:
        body.append(
            f'<rect x="{x}" y="30" width="12" height="12" fill="{s.color}"/>'
            f'<text x="{x + 16}" y="40">{escape(s.name)}</text>'
        )
        x += 40 + 7 * len(s.name)
    if reference is not None:
        name, v = reference
        body.append(
            f'<line x1="{px(v):.1f}" x2="{px(v):.1f}" y1="{top - 4}" y2="{height - 8}" stroke="#333" '
            f'stroke-dasharray="5 4"/><text x="{px(v) + 4:.1f}" y="{top - 8}" fill="#333">'
            f"{escape(name)}</text>"
        )
    return _svg(width, height, body, title)
