"""Markdown rendering of benchmark results: tables and numbers, ready to paste into docs/performance.md."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], align: str = "") -> str:
    """A GitHub-flavoured Markdown table; ``align`` holds one ``l``/``r`` per column (default: left)."""
    spec = align.ljust(len(headers), "l")
    rule = ["---:" if a == "r" else "---" for a in spec]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def count(x: float) -> str:
    """A count or rate with thousands separators: ``1,234,567``."""
    return f"{x:,.0f}"


def ms(seconds: float) -> str:
    """Milliseconds with one decimal."""
    return f"{seconds * 1000:.1f} ms"


def mib(n_bytes: float) -> str:
    """Mebibytes with one decimal, signed when it is a difference."""
    return f"{n_bytes / 2**20:.1f} MiB"


def percent(x: float) -> str:
    """A ratio as a percentage."""
    return f"{100 * x:.0f}%"


def signed_percent(x: float, digits: int = 1) -> str:
    """A relative difference as a signed percentage: ``+1.5%``, ``-0.3%``."""
    return f"{100 * x:+.{digits}f}%"
