"""What-if summary of a replay: committed decisions accumulated into the figures an operator checks before
going live with a configuration.

:class:`WhatIf` is fed every decided batch (the same :class:`~selector.routing.Decisions` the monitor
commits) and the records' reasons for rejection; :meth:`WhatIf.summary` returns plain data:

- routes and rates: the realized label rate ``(query + audit) / items`` against ``budget.rate``;
- the label rate over time, in buckets of ``w`` consecutive items; when there are more than ``max_buckets``
  buckets, neighbours are merged pairwise and ``w`` doubles, so memory stays bounded on any stream;
- spend (labels = queries + audits) per predicted class, per segment, per selection mechanism;
- time: items are decided on the clock the caps use, the records' times made non-decreasing
  (:meth:`CapLedger.monotone <selector.budget.caps.CapLedger.monotone>`: a clock that steps back stands
  still until the records catch up). :meth:`WhatIf.add` returns these decision times; the summary gives the
  first and last, how many times a record's own time stepped back from the previous record's
  (``steps_back``), the largest such step, and how many items were decided later than their own time;
- cap headroom per horizon: after each grant at decision time ``t``, ``cap - |{grants in (t - W, t]}|``,
  the same window rule as :class:`~selector.budget.caps.CapLedger`; its minimum, and whether it reached 0;
- for records with a ground-truth ``label``, the capture of each true class ``c``: with ``n_c`` items of class
  ``c``, ``k_c`` of them labeled, ``N`` items with a label and ``L`` of them labeled,

      recall_c = k_c / n_c,   random recall = L / N,   enrichment_c = (k_c / L) / (n_c / N) = recall_c N / L

  i.e. how many times more often class ``c`` is labeled than uniform random sampling at the same budget would.

Example:
    >>> from selector.config import parse_config
    >>> w = WhatIf(parse_config({}))
    >>> w.summary()["routes"]
    {'accept': 0, 'query': 0, 'audit': 0, 'skip': 0}
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from selector.arrays import FloatArray, IntArray
from selector.budget.caps import CapLedger
from selector.config import HORIZONS_S, Config
from selector.messages.timestamps import rfc3339
from selector.routing import ACCEPT, AUDIT, QUERY, ROUTES, Decisions, policy_of

NO_SEGMENT = "(none)"
"""How items without a ``segment`` field are listed."""

_EMPTY: FloatArray = np.zeros(0, dtype=np.float64)


def _ratio(num: float, den: float) -> float | None:
    return round(num / den, 6) if den else None


def mechanism_names(config: Config) -> list[str]:
    """Every value ``selected_by`` can take for a labeled item under ``config``."""
    return ["audit", "cold_start", *(p.name for p in policy_of(config).pools)]


@dataclass
class _Bucket:
    """Counts over one stretch of consecutive items."""

    first_item: int
    items: int = 0
    query: int = 0
    audit: int = 0
    accept: int = 0
    t_first: float = float("inf")
    t_last: float = float("-inf")
    min_headroom: dict[str, int] = field(default_factory=dict)
    """per horizon, the least headroom right after a grant in this bucket (absent: no grant)"""

    def merged(self, other: _Bucket) -> _Bucket:
        headroom = dict(self.min_headroom)
        for h, v in other.min_headroom.items():
            headroom[h] = min(v, headroom.get(h, v))
        return _Bucket(
            self.first_item,
            self.items + other.items,
            self.query + other.query,
            self.audit + other.audit,
            self.accept + other.accept,
            min(self.t_first, other.t_first),
            max(self.t_last, other.t_last),
            headroom,
        )


class _CapTrack:
    """Labels in the sliding window of one horizon, after each grant (bounded by the cap, like the ledger)."""

    def __init__(self, window_s: float, cap: int) -> None:
        self.window_s = window_s
        self.cap = cap
        self.recent = _EMPTY
        self.max_in_window = 0
        self.first_reached: float | None = None

    def add(self, times: FloatArray) -> IntArray:
        """Record grants at non-decreasing ``times``; returns the window count right after each."""
        merged = np.concatenate([self.recent, times])
        own = np.arange(len(self.recent), len(merged))
        counts: IntArray = own - np.searchsorted(merged, times - self.window_s, side="right") + 1
        if len(counts):
            self.max_in_window = max(self.max_in_window, int(counts.max()))
            full = np.flatnonzero(counts >= self.cap)
            if self.first_reached is None and len(full):
                self.first_reached = float(times[full[0]])
        self.recent = merged[max(0, len(merged) - self.cap) :]
        return counts


class WhatIf:
    """Accumulates committed decisions into the replay summary (see the module docstring).

    Args:
        config: the configuration replayed (budget, caps, classes).
        first_bucket_items: items per bucket of the rate-over-time series until buckets are merged.
        max_buckets: the series never holds more buckets than this.
        max_examples: invalid records listed individually (all are counted).
    """

    def __init__(
        self, config: Config, *, first_bucket_items: int = 100, max_buckets: int = 100, max_examples: int = 20
    ) -> None:
        self.config = config
        self.classes = list(config.classes)
        self._class_index = {c: i for i, c in enumerate(self.classes)}
        self.bucket_items = first_bucket_items
        self.max_buckets = max_buckets
        self.max_examples = max_examples
        self.items = 0
        self.routes = np.zeros(len(ROUTES), dtype=np.int64)
        c = len(self.classes)
        self.by_class = {r: np.zeros(c, dtype=np.int64) for r in ("items", "query", "audit", "accept")}
        self.by_segment: dict[str, Counter[str]] = {}
        self.by_mechanism: Counter[str] = Counter(dict.fromkeys(mechanism_names(config), 0))
        self.shortfall: dict[str, float] = {}
        """budget credit the controller lost, in labels, by reason"""
        self.model_switches = 0
        self.truth = {r: np.zeros(c, dtype=np.int64) for r in ("items", "labeled", "query")}
        self.unknown_labels: Counter[str] = Counter()
        self.invalid: Counter[str] = Counter()
        self.invalid_examples: list[dict[str, str]] = []
        self.buckets: list[_Bucket] = []
        self.caps: dict[str, _CapTrack] = {
            h: _CapTrack(HORIZONS_S[h], cap) for h, cap in sorted(config.budget.caps.items(), key=_horizon)
        }
        self.clock = float("-inf")
        """the last decision time (the caps' clock)"""
        self.first_decided = float("nan")
        self.last_ts = float("-inf")
        """the previous record's own time, to tell when the records' clock steps back"""
        self.steps_back = 0
        self.max_step_back_s = 0.0
        self.items_behind = 0

    def add_invalid(self, where: Sequence[str], reasons: Sequence[str], messages: Sequence[str]) -> None:
        """Count rejected records by reason; the first ``max_examples`` are kept with where they were."""
        self.invalid.update(reasons)
        room = self.max_examples - len(self.invalid_examples)
        for w, r, m in list(zip(where, reasons, messages, strict=True))[: max(0, room)]:
            self.invalid_examples.append({"where": w, "reason": r, "message": m[:300]})

    def add(
        self,
        decisions: Decisions,
        t: FloatArray,
        segment: Sequence[str | None],
        truth: Sequence[str | None] | None = None,
    ) -> FloatArray:
        """Account one committed batch: its decisions, the records' times ``t`` (s), segments and ground
        truth. Returns the decision times: ``t`` on the caps' monotone clock, continuing the last batch."""
        n = len(decisions)
        if n == 0:
            return np.zeros(0)
        route = decisions.route
        labeled = (route == QUERY) | (route == AUDIT)
        self.routes += np.bincount(route, minlength=len(ROUTES))
        pred = decisions.predicted
        c = len(self.classes)
        self.by_class["items"] += np.bincount(pred, minlength=c)
        for name, code in (("query", QUERY), ("audit", AUDIT), ("accept", ACCEPT)):
            self.by_class[name] += np.bincount(pred[route == code], minlength=c)
        self._add_segments(route, segment)
        lab = np.flatnonzero(labeled)
        self.by_mechanism.update(str(decisions.selected_by[j]) for j in lab.tolist())
        if truth is not None:
            self._add_truth(truth, route)
        tm = CapLedger({}, last_time=self.clock).monotone(np.asarray(t, dtype=np.float64))
        self._add_steps(t, tm)
        headroom = {h: track.cap - track.add(tm[lab]) for h, track in self.caps.items()}
        self._add_buckets(route, tm, lab, headroom)
        for reason, lost in decisions.shortfall.items():
            self.shortfall[reason] = self.shortfall.get(reason, 0.0) + lost
        self.model_switches += len(decisions.model_switches)
        self.items += n
        return tm

    def _add_steps(self, t: FloatArray, tm: FloatArray) -> None:
        """Count the steps back of the records' clock (not the records decided while it catches up)."""
        step = np.concatenate([[self.last_ts], t[:-1]]) - t
        back = step > 0
        if back.any():
            self.steps_back += int(np.count_nonzero(back))
            self.max_step_back_s = max(self.max_step_back_s, float(step[back].max()))
        self.items_behind += int(np.count_nonzero(t < tm))
        if not self.items:
            self.first_decided = float(tm[0])
        self.clock, self.last_ts = float(tm[-1]), float(t[-1])

    def _add_segments(self, route: np.ndarray, segment: Sequence[str | None]) -> None:
        names = [NO_SEGMENT if s is None else s for s in segment]
        for name in ("items", "query", "audit", "accept"):
            self.by_segment.setdefault(name, Counter())
        self.by_segment["items"].update(names)
        for name, code in (("query", QUERY), ("audit", AUDIT), ("accept", ACCEPT)):
            self.by_segment[name].update(names[j] for j in np.flatnonzero(route == code).tolist())

    def _add_truth(self, truth: Sequence[str | None], route: np.ndarray) -> None:
        idx = np.fromiter(
            (self._class_index.get(x, -1) if x is not None else -2 for x in truth), np.int64, len(truth)
        )
        self.unknown_labels.update(str(x) for x, i in zip(truth, idx.tolist(), strict=True) if i == -1)
        known = idx >= 0
        c = len(self.classes)
        self.truth["items"] += np.bincount(idx[known], minlength=c)
        labeled = known & ((route == QUERY) | (route == AUDIT))
        self.truth["labeled"] += np.bincount(idx[labeled], minlength=c)
        self.truth["query"] += np.bincount(idx[known & (route == QUERY)], minlength=c)

    def _add_buckets(
        self, route: np.ndarray, t: FloatArray, lab: IntArray, headroom: dict[str, IntArray]
    ) -> None:
        w = self.bucket_items
        bucket_of = (self.items + np.arange(len(route))) // w
        lab_bucket = bucket_of[lab]
        for b in range(int(bucket_of[0]), int(bucket_of[-1]) + 1):
            if b == len(self.buckets):
                self.buckets.append(_Bucket(b * w))
            bucket = self.buckets[b]
            lo = max(0, b * w - self.items)
            hi = min(len(route), (b + 1) * w - self.items)
            r = route[lo:hi]
            bucket.items += hi - lo
            bucket.query += int(np.count_nonzero(r == QUERY))
            bucket.audit += int(np.count_nonzero(r == AUDIT))
            bucket.accept += int(np.count_nonzero(r == ACCEPT))
            bucket.t_first = min(bucket.t_first, float(t[lo:hi].min()))
            bucket.t_last = max(bucket.t_last, float(t[lo:hi].max()))
            here = lab_bucket == b
            if here.any():
                for h, room in headroom.items():
                    low = int(room[here].min())
                    bucket.min_headroom[h] = min(low, bucket.min_headroom.get(h, low))
        while len(self.buckets) > self.max_buckets:
            pairs = zip(self.buckets[0::2], self.buckets[1::2], strict=False)
            merged = [a.merged(b) for a, b in pairs]
            if len(self.buckets) % 2:
                merged.append(self.buckets[-1])
            self.buckets = merged
            self.bucket_items *= 2

    def summary(self) -> dict[str, Any]:
        """Everything accumulated so far, as plain JSON-ready data (deterministic for the same input)."""
        b = self.config.budget
        routes = {name: int(self.routes[i]) for i, name in enumerate(ROUTES)}
        labels = routes["query"] + routes["audit"]
        n = self.items
        return {
            "config": {
                "hash": self.config.config_hash(),
                "classes": self.classes,
                "measure": self.config.scoring.measure,
                "rate": b.rate,
                "audit_rate": b.audit_rate,
                "exploration": b.exploration,
                "controller": b.controller,
                "caps": {h: t.cap for h, t in self.caps.items()},
                "class_shares": dict(b.class_shares),
                "segment_shares": dict(b.segment_shares),
                "seed": b.seed,
            },
            "items": n,
            "time": self._time(),
            "invalid": {
                "total": sum(self.invalid.values()),
                "by_reason": dict(sorted(self.invalid.items())),
                "examples": list(self.invalid_examples),
            },
            "routes": routes,
            "rates": {
                "target": b.rate,
                "label": _ratio(labels, n),
                "label_vs_target": _ratio(labels, n * b.rate),
                "query": _ratio(routes["query"], n),
                "audit": _ratio(routes["audit"], n),
                "audit_target": b.audit_rate,
                "accept": _ratio(routes["accept"], n),
                "skip": _ratio(routes["skip"], n),
            },
            "over_time": {
                "bucket_items": self.bucket_items,
                "buckets": [self._bucket(x) for x in self.buckets],
            },
            "spend": {
                "labels": labels,
                "by_class": self._spend_by_class(labels),
                "by_segment": self._spend_by_segment(labels),
                "by_mechanism": {
                    m: {"labels": k, "share": _ratio(k, labels)} for m, k in self.by_mechanism.items()
                },
            },
            "shortfall": self._shortfall(labels),
            "caps": {
                h: {
                    "cap": t.cap,
                    "window_s": t.window_s,
                    "min_headroom": t.cap - t.max_in_window,
                    "max_in_window": t.max_in_window,
                    "reached": t.first_reached is not None,
                    "first_reached": None if t.first_reached is None else rfc3339(t.first_reached),
                }
                for h, t in self.caps.items()
            },
            "ground_truth": self._ground_truth(),
        }

    def _shortfall(self, labels: int) -> dict[str, Any]:
        """Budget the controller could not spend, in labels, and why (floor, cap, pool:<name>)."""
        target = self.items * self.config.budget.rate
        total = sum(v for k, v in self.shortfall.items() if not k.startswith("pool:"))
        return {
            "labels": round(total, 3),
            "share_of_target": _ratio(total, target),
            "by_reason": {k: round(v, 3) for k, v in sorted(self.shortfall.items())},
            "model_switches": self.model_switches,
        }

    def _time(self) -> dict[str, Any]:
        steps = {
            "steps_back": self.steps_back,
            "max_step_back_s": round(self.max_step_back_s, 3),
            "items_behind": self.items_behind,
        }
        if not self.items:
            return {"first": None, "last": None, "span_s": 0.0, **steps}
        return {
            "first": rfc3339(self.first_decided),
            "last": rfc3339(self.clock),
            "span_s": round(self.clock - self.first_decided, 3),
            **steps,
        }

    def _bucket(self, x: _Bucket) -> dict[str, Any]:
        labels = x.query + x.audit
        return {
            "first_item": x.first_item,
            "items": x.items,
            "labels": labels,
            "query": x.query,
            "audit": x.audit,
            "accept": x.accept,
            "label_rate": _ratio(labels, x.items),
            "from": rfc3339(x.t_first),
            "to": rfc3339(x.t_last),
            "min_headroom": {h: x.min_headroom.get(h) for h in self.caps},
        }

    def _spend_by_class(self, labels: int) -> dict[str, dict[str, Any]]:
        shares = self.config.budget.class_shares
        out: dict[str, dict[str, Any]] = {}
        for i, c in enumerate(self.classes):
            items = int(self.by_class["items"][i])
            q, a = int(self.by_class["query"][i]), int(self.by_class["audit"][i])
            out[c] = {
                "items": items,
                "labels": q + a,
                "query": q,
                "audit": a,
                "accept": int(self.by_class["accept"][i]),
                "share": _ratio(q + a, labels),
                "reserved_share": shares.get(c),
                "label_rate": _ratio(q + a, items),
            }
        return out

    def _spend_by_segment(self, labels: int) -> dict[str, dict[str, Any]]:
        seg = self.by_segment
        if not seg:
            return {}
        shares = self.config.budget.segment_shares
        out: dict[str, dict[str, Any]] = {}
        for name in sorted(set(seg["items"]) | set(shares)):
            q, a = seg["query"][name], seg["audit"][name]
            out[name] = {
                "items": seg["items"][name],
                "labels": q + a,
                "query": q,
                "audit": a,
                "accept": seg["accept"][name],
                "share": _ratio(q + a, labels),
                "reserved_share": shares.get(name),
                "label_rate": _ratio(q + a, seg["items"][name]),
            }
        return out

    def _ground_truth(self) -> dict[str, Any]:
        n = int(self.truth["items"].sum())
        spent = int(self.truth["labeled"].sum())
        random_recall = _ratio(spent, n)
        by_class: dict[str, dict[str, Any]] = {}
        for i, c in enumerate(self.classes):
            n_c, k_c = int(self.truth["items"][i]), int(self.truth["labeled"][i])
            by_class[c] = {
                "items": n_c,
                "labeled": k_c,
                "queried": int(self.truth["query"][i]),
                "recall": _ratio(k_c, n_c),
                "random_recall": random_recall if n_c else None,
                "enrichment": _ratio(k_c * n, n_c * spent) if spent else None,
            }
        return {
            "items": n,
            "labeled": spent,
            "random_recall": random_recall,
            "by_class": by_class,
            "unknown_labels": dict(sorted(self.unknown_labels.items())),
        }


def _horizon(item: tuple[str, int]) -> float:
    return HORIZONS_S[item[0]]
