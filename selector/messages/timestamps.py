"""Time on the wire: RFC 3339 text (UTC, milliseconds) out, RFC 3339 or epoch milliseconds in.

Example:
    >>> rfc3339(1_700_000_000.5)
    '2023-11-14T22:13:20.500Z'
    >>> parse_ts("2023-11-14T22:13:20.500Z"), parse_ts(1_700_000_000_500)
    (1700000000.5, 1700000000.5)
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any


def rfc3339(t: float) -> str:
    """UTC RFC 3339 text with milliseconds; beyond year 9999, the epoch seconds as text."""
    try:
        return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except (OverflowError, ValueError, OSError):
        return f"{t:.3f}"


def parse_ts(value: Any) -> float:
    """Seconds since the epoch from RFC 3339 text or epoch milliseconds; raises ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"'ts' must be RFC 3339 text or epoch milliseconds: {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"'ts' epoch milliseconds must be finite and >= 0: {value!r}")
        return float(value) / 1000.0
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"'ts' is not RFC 3339: {value!r}") from None
        if parsed.tzinfo is None:
            raise ValueError(f"'ts' must carry a UTC offset (RFC 3339): {value!r}")
        return parsed.timestamp()
    raise ValueError(f"'ts' must be RFC 3339 text or epoch milliseconds: {value!r}")
