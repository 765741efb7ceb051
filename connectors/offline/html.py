"""The pieces the replay's HTML pages share: one stylesheet, number formats, tables, cards and the page
itself (inline CSS, no script, nothing fetched). Every text from data is escaped."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

CSS = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 980px; color: #222; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 32px;
  border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.sub { color: #555; margin-top: 0; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 8px 14px; min-width: 130px; }
.card b { display: block; font-size: 20px; } .card span { color: #555; font-size: 12px; }
.warn b { color: #c0392b; } .warn { border-color: #e6b0aa; }
table { border-collapse: collapse; margin: 8px 0 4px; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f5f5f5; } td:first-child, th:first-child { text-align: left; }
details { margin: 6px 0; } summary { cursor: pointer; color: #1f5f9f; }
.note { color: #555; font-size: 13px; }
"""


def pct(v: float | None, digits: int = 2) -> str:
    """A ratio as a percentage; ``-`` for None."""
    return "-" if v is None else f"{v:.{digits}%}"


def num(v: Any) -> str:
    """A value for a table cell: ``-`` for None, yes/no, floats to 4 significant digits."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def interval(p: dict[str, Any] | None, digits: int = 1) -> str:
    """A proportion with its interval, ``97.2% [95.1%, 98.4%]``; ``-`` without one."""
    if not p or p.get("estimate") is None:
        return "-"
    return f"{pct(p['estimate'], digits)} [{pct(p['low'], digits)}, {pct(p['high'], digits)}]"


def table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """An HTML table of text cells."""
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def card(value: str, label: str, warn: bool = False) -> str:
    """A headline figure with its caption; ``warn`` shows it in red."""
    return (
        f'<div class="card{" warn" if warn else ""}"><b>{escape(value)}</b><span>{escape(label)}</span></div>'
    )


def page(title: str, parts: Iterable[str]) -> str:
    """A whole self-contained HTML page."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title>"
        f"<style>{CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )
