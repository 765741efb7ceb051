"""Saying so when a hard cap pauses labeling: a log line when it starts and ends, and the status to show.

A cap that binds is the budget working, but an operator who sees labels stop must learn why and for how
long, wherever they look: the monitor's log (:class:`CapWatch`), ``/api/status`` and the dashboard
(:func:`pause_status`), the demo's summary line (:func:`describe`). The rule is
:mod:`selector.budget.cap_pause`.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from selector.budget.cap_pause import CapPause, cap_pauses
from selector.budget.caps import CapLedger
from selector.routing import Router

log = logging.getLogger(__name__)


def ledgers_of(router: Router) -> dict[int, CapLedger]:
    """The cap ledgers of the partitions the router owns."""
    return {p: router.state(p).budget.ledger for p in sorted(router.owned)}


def clock_time(t: float) -> str:
    """``HH:MM`` local time (with the date when not today), or ``never`` for a cap of zero."""
    if not math.isfinite(t):
        return "never"
    today = time.strftime("%Y-%m-%d", time.localtime(t)) == time.strftime("%Y-%m-%d")
    return time.strftime("%H:%M" if today else "%Y-%m-%d %H:%M", time.localtime(t))


def describe(p: CapPause) -> str:
    """One phrase for an operator: ``cap reached (hour: 1000 labels), labeling paused until 14:32``."""
    where = "" if p.paused else f" on {p.blocked} of {p.partitions} partitions"
    what = "labeling paused" if p.paused else "labeling held back"
    until = clock_time(p.until)
    return f"cap reached ({p.horizon}: {p.cap} labels){where}, {what} until {until} (budget.caps)"


def pause_status(router: Router, now: float) -> list[dict[str, Any]]:
    """The binding caps as plain data for ``/api/status``: ``horizon``, ``cap``, ``blocked_partitions``,
    ``partitions``, ``paused`` (every owned partition blocked), ``until`` (epoch seconds, None: never) and
    ``message`` (:func:`describe`)."""
    return [
        {
            "horizon": p.horizon,
            "cap": p.cap,
            "blocked_partitions": p.blocked,
            "partitions": p.partitions,
            "paused": p.paused,
            "until": p.until if math.isfinite(p.until) else None,
            "message": describe(p),
        }
        for p in cap_pauses(ledgers_of(router), now)
    ]


class CapWatch:
    """Logs a WARNING when a cap starts to pause labeling at a horizon and an INFO line when it lifts.

    Checked at most every ``interval_s`` seconds (the loop calls :meth:`check` every iteration)."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self.paused: dict[str, CapPause] = {}
        """horizons pausing labeling on every owned partition, as of the last check"""
        self._checked = -math.inf

    def check(self, router: Router, now: float) -> None:
        if now - self._checked < self.interval_s:
            return
        self._checked = now
        current = {p.horizon: p for p in cap_pauses(ledgers_of(router), now) if p.paused}
        for horizon, p in current.items():
            if horizon not in self.paused:
                log.warning("%s", describe(p))
        for horizon in self.paused.keys() - current.keys():
            log.info("cap %r has room again: labeling resumed", horizon)
        self.paused = current
