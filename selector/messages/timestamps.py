"""Time on the wire: RFC 3339 text (UTC, milliseconds) out, RFC 3339 or epoch milliseconds in.

Example:
    >>> rfc3339(1_700_000_000.5)
    '2023-11-14T22:13:20.500Z'
    >>> parse_ts("2023-11-14T22:13:20.500Z"), parse_ts(1_700_000_000_500)
    (1700000000.5, 1700000000.5)
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

_RFC3339 = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ]([0-9]{2}:[0-9]{2}:[0-9]{2})(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})",
    re.ASCII,
)
"""RFC 3339 date-time (section 5.6; a space may separate date and time, as its note allows); digits of the
fraction beyond microseconds are dropped. Python's ``fromisoformat`` alone also takes ISO 8601 forms RFC 3339
does not (``20231114T2213Z``, week dates, ``+0100``), so the text is matched first."""


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
        match = _RFC3339.fullmatch(value)
        if match is None:
            if _RFC3339.fullmatch(value + "Z") is not None:
                raise ValueError(f"'ts' must carry a UTC offset (RFC 3339): {value!r}")
            raise ValueError(f"'ts' is not RFC 3339: {value!r}")
        date, time, fraction, offset = match.groups()
        zone = "+00:00" if offset in ("Z", "z") else offset
        try:  # the fields' ranges (a leap second, 23:59:60, is refused: no timestamp can hold it)
            return datetime.fromisoformat(f"{date}T{time}{(fraction or '')[:7]}{zone}").timestamp()
        except ValueError:
            raise ValueError(f"'ts' is not RFC 3339: {value!r}") from None
    raise ValueError(f"'ts' must be RFC 3339 text or epoch milliseconds: {value!r}")
