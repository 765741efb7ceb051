"""When to ask for a retrain: an explicit, debounced policy over counters the label loop keeps.

Four reasons, each enabled separately, checked in this order:

- ``"labels"``: at least ``every_labels`` newly labeled items since the last request (the label loop counts
  an item once, however many votes it gets).
- ``"schedule"``: at least ``schedule_s`` seconds since the last request (or since the policy started).
- ``"audit_error"``: the audits of auto-accepted items show an error rate *credibly* above
  ``audit_error_above``: with ``k`` errors in ``n >= audit_min_labels`` audits since the last request, the
  lower end of the Wilson 95% interval of ``k / n`` exceeds the bound (a rate merely estimated above it, on
  a few audits, is not enough).
- ``"drift"``: the drift detector raised an alarm since the last request (latched until the request).

:meth:`TriggerPolicy.due` gives the reasons that hold, or none while the last request is less than
``min_interval_s`` old: the debounce. Nothing is forgotten meanwhile: counters keep counting and the drift
alarm stays latched, so the reasons fire together once the interval has passed. :meth:`TriggerPolicy.fired`
starts a new period after a request was published. The clock is an argument (``now``, unix seconds).

Example:
    >>> policy = TriggerPolicy(every_labels=100, min_interval_s=600.0)
    >>> state = policy.observe(TriggerState.start(0.0), new_labels=120)
    >>> policy.due(state, now=10.0)
    ('labels',)
    >>> state = policy.fired(state, now=10.0)
    >>> policy.due(policy.observe(state, new_labels=100), now=300.0)
    ()
    >>> policy.due(policy.observe(state, new_labels=100), now=610.0)
    ('labels',)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Literal

from selector.errors import SelectorError
from selector.quality.estimates import wilson

Reason = Literal["labels", "schedule", "audit_error", "drift"]

_STATE_KEYS = (
    "started_at",
    "last_request_at",
    "labels_since",
    "audit_errors_since",
    "audits_since",
    "drift_alarm",
    "requests",
)


@dataclass(frozen=True)
class TriggerState:
    """What the policy has seen since the last retrain request.

    Attributes:
        started_at: when the policy started (unix seconds); the schedule counts from it until a request.
        last_request_at: when the last request was published; None before the first.
        labels_since: newly labeled items since the last request.
        audit_errors_since: audited auto-accepted items found wrong since the last request.
        audits_since: audited auto-accepted items since the last request.
        drift_alarm: a drift alarm was raised since the last request.
        requests: requests published so far.
    """

    started_at: float
    last_request_at: float | None = None
    labels_since: int = 0
    audit_errors_since: int = 0
    audits_since: int = 0
    drift_alarm: bool = False
    requests: int = 0

    @classmethod
    def start(cls, now: float) -> TriggerState:
        """The state of a policy starting at ``now``: nothing seen, nothing requested."""
        return cls(_time("now", now))

    def to_dict(self) -> dict[str, Any]:
        """Plain-data snapshot (JSON-able; ``last_request_at`` may be None)."""
        return {key: getattr(self, key) for key in _STATE_KEYS}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TriggerState:
        """Restore a :meth:`to_dict` snapshot.

        Raises:
            SelectorError: if a key is missing or a value has the wrong type or sign.
        """
        missing = [key for key in _STATE_KEYS if key not in d]
        if missing:
            raise SelectorError(f"trigger state is missing {missing}: {d!r}")
        try:
            last = d["last_request_at"]
            state = cls(
                float(d["started_at"]),
                None if last is None else float(last),
                int(d["labels_since"]),
                int(d["audit_errors_since"]),
                int(d["audits_since"]),
                bool(d["drift_alarm"]),
                int(d["requests"]),
            )
        except (TypeError, ValueError) as exc:
            raise SelectorError(f"trigger state has a value of the wrong type: {d!r}") from exc
        if not isinstance(d["drift_alarm"], bool):
            raise SelectorError(f"trigger state 'drift_alarm' must be true or false: {d['drift_alarm']!r}")
        _counts(
            state.labels_since,
            state.audit_errors_since,
            state.audits_since,
            ("labels_since", "audit_errors_since", "audits_since"),
        )
        if state.requests < 0:
            raise SelectorError(f"'requests' must be >= 0: {state.requests}")
        return state


@dataclass(frozen=True)
class TriggerPolicy:
    """Which reasons request a retrain, and the least time between two requests.

    Attributes:
        every_labels: request after this many newly labeled items (>= 1); None: off.
        schedule_s: request when this many seconds passed since the last request (> 0); None: off.
        audit_error_above: request when the Wilson 95% lower bound of the audit error rate exceeds this
            bound (in [0, 1)); None: off.
        audit_min_labels: no audit request on fewer audits than this since the last request (>= 1).
        drift: request on a drift alarm.
        min_interval_s: never two requests closer than this (>= 0 seconds).
    """

    every_labels: int | None = None
    schedule_s: float | None = None
    audit_error_above: float | None = None
    audit_min_labels: int = 30
    drift: bool = False
    min_interval_s: float = 3600.0

    def __post_init__(self) -> None:
        if self.every_labels is not None and not (_is_int(self.every_labels) and self.every_labels >= 1):
            raise SelectorError(f"'every_labels' must be an integer >= 1 or None: {self.every_labels!r}")
        if self.schedule_s is not None and not (math.isfinite(self.schedule_s) and self.schedule_s > 0):
            raise SelectorError(f"'schedule_s' must be a finite number > 0 or None: {self.schedule_s!r}")
        if self.audit_error_above is not None and not 0 <= self.audit_error_above < 1:
            raise SelectorError(f"'audit_error_above' must be in [0, 1) or None: {self.audit_error_above!r}")
        if not (_is_int(self.audit_min_labels) and self.audit_min_labels >= 1):
            raise SelectorError(f"'audit_min_labels' must be an integer >= 1: {self.audit_min_labels!r}")
        if not (math.isfinite(self.min_interval_s) and self.min_interval_s >= 0):
            raise SelectorError(f"'min_interval_s' must be a finite number >= 0: {self.min_interval_s!r}")

    def observe(
        self,
        state: TriggerState,
        *,
        new_labels: int = 0,
        audit_errors: int = 0,
        audits: int = 0,
        drift_alarm: bool = False,
    ) -> TriggerState:
        """The state after seeing more labels, audits (``audit_errors`` of ``audits`` wrong) and possibly a
        drift alarm. Pure accumulation: whether a reason holds is :meth:`due`'s question.

        Raises:
            SelectorError: on a negative count or more audit errors than audits.
        """
        _counts(new_labels, audit_errors, audits)
        return replace(
            state,
            labels_since=state.labels_since + new_labels,
            audit_errors_since=state.audit_errors_since + audit_errors,
            audits_since=state.audits_since + audits,
            drift_alarm=state.drift_alarm or drift_alarm,
        )

    def due(self, state: TriggerState, now: float) -> tuple[Reason, ...]:
        """The reasons to request a retrain at ``now``, in the order labels, schedule, audit_error, drift;
        () if none holds or the last request is less than ``min_interval_s`` old."""
        now = _time("now", now)
        if state.last_request_at is not None and now - state.last_request_at < self.min_interval_s:
            return ()
        reasons: list[Reason] = []
        if self.every_labels is not None and state.labels_since >= self.every_labels:
            reasons.append("labels")
        since = state.started_at if state.last_request_at is None else state.last_request_at
        if self.schedule_s is not None and now - since >= self.schedule_s:
            reasons.append("schedule")
        if (
            self.audit_error_above is not None
            and state.audits_since >= self.audit_min_labels
            and wilson(state.audit_errors_since, state.audits_since).low > self.audit_error_above
        ):
            reasons.append("audit_error")
        if self.drift and state.drift_alarm:
            reasons.append("drift")
        return tuple(reasons)

    def fired(self, state: TriggerState, now: float) -> TriggerState:
        """The state after a request was published at ``now``: counters at zero, the drift latch cleared."""
        return TriggerState(state.started_at, _time("now", now), requests=state.requests + 1)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _time(name: str, value: float) -> float:
    if not math.isfinite(value):
        raise SelectorError(f"'{name}' must be a finite time in unix seconds: {value!r}")
    return float(value)


def _counts(
    labels: int,
    errors: int,
    audits: int,
    names: tuple[str, str, str] = ("new_labels", "audit_errors", "audits"),
) -> None:
    for name, value in zip(names, (labels, errors, audits), strict=True):
        if not (_is_int(value) and value >= 0):
            raise SelectorError(f"'{name}' must be an integer >= 0: {value!r}")
    if errors > audits:
        raise SelectorError(f"'{names[1]}' must be <= '{names[2]}': {errors} > {audits}")
