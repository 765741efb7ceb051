"""The configuration a replay ran with, as the summary's ``config`` table: the accept side, the budget, and
each reserved share marked binding or not.

A reserved pool ``k`` (``class:<name>``, ``segment:<name>``, ``exploration``) is credited ``r s_k`` labels per
item (``r`` = ``budget.rate``, ``s_k`` its share) and spends them on its eligible items: those predicted as
its class (or from its segment) scoring at least ``budget.query_threshold``; every item for exploration.
Credit it cannot spend piles up to ``budget.max_burst`` and beyond that is lost, reported by the controller
as the shortfall ``pool:<name>`` (the common pool makes it up). So the replay's per-pool spend tells:

- **binding**: less than one label of the pool's credit was lost: it spent its whole share, and had it been
  larger it would have spent more (its eligible items outnumber its share);
- **not binding**: the pool lost credit for want of eligible items: a larger share buys nothing more there.
  (A hard cap that holds labels back also makes a pool lose credit: read it with ``caps``.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from selector.config import Config
from selector.routing import Decisions, policy_of

UNSPENT_TOLERANCE = 1.0
"""Labels of credit a pool may lose and still count as binding."""

SETTINGS_SECTIONS = ("classes", "input", "scoring", "diversity", "calibration", "accept", "budget", "pending")
"""The configuration sections that change decisions or the summary (with ``dataset.defect_classes``)."""


class PoolTally:
    """Eligible items per reserved pool, counted over the decided batches."""

    def __init__(self, config: Config) -> None:
        policy = policy_of(config)
        self.min_score = policy.min_score
        self.pools = policy.pools[1:]
        self.eligible = dict.fromkeys((p.name for p in self.pools), 0)

    def add(self, decisions: Decisions, segment: Sequence[str | None]) -> None:
        """Count the items of one committed batch each reserved pool could have picked."""
        base = decisions.score >= self.min_score
        seg = np.asarray(segment, dtype=object) if any(p.kind == "segment" for p in self.pools) else None
        for p in self.pools:
            if p.kind == "exploration":
                n = len(base)
            elif p.kind == "class":
                n = int(np.count_nonzero(base & (decisions.predicted == p.key)))
            else:
                assert seg is not None
                n = int(np.count_nonzero(base & (seg == p.key)))
            self.eligible[p.name] += n

    def reserved(
        self, config: Config, items: int, spend: dict[str, Any], shortfall: dict[str, Any]
    ) -> dict[str, Any]:
        """Each reserved pool's share, spend and whether it was binding, from the summary's ``spend`` (labels
        per mechanism) and ``shortfall`` (credit lost per pool)."""
        rate = config.budget.rate
        mechanisms, lost = spend["by_mechanism"], shortfall["by_reason"]
        out: dict[str, Any] = {}
        for p in self.pools:
            unspent = float(lost.get(f"pool:{p.name}", 0.0))
            out[p.name] = {
                "share": p.share,
                "binding": unspent < UNSPENT_TOLERANCE,
                "target_labels": round(items * rate * p.share, 3),
                "labels": int(mechanisms.get(p.name, {}).get("labels", 0)),
                "unspent_labels": round(unspent, 3),
                "eligible_items": self.eligible[p.name],
            }
        return out


def settings(config: Config) -> dict[str, Any]:
    """The decision-relevant configuration as flat dotted keys (``budget.rate``, ``accept.thresholds.crack``),
    the keys a comparison of two replays lists when they differ."""
    dumped = config.model_dump(mode="json")
    flat: dict[str, Any] = {}
    for section in SETTINGS_SECTIONS:
        _flatten(section, dumped[section], flat)
    flat["dataset.defect_classes"] = [c for c, d in zip(config.classes, config.defects(), strict=True) if d]
    return flat


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):  # an empty mapping adds no key: its entries show up where they differ
        for k in sorted(value):
            _flatten(f"{prefix}.{k}", value[k], out)
    else:
        out[prefix] = value


def configuration(config: Config, reserved: dict[str, Any]) -> dict[str, Any]:
    """The keys the summary's ``config`` table adds to the budget WhatIf reports: the accept side, the query
    threshold, the reserved shares with their binding flag, and every decision-relevant setting."""
    a, b = config.accept, config.budget
    return {
        "accept": {
            "default_threshold": a.default_threshold,
            "thresholds": dict(zip(config.classes, config.accept_thresholds(), strict=True)),
            "committee_agreement": a.committee_agreement,
        },
        "query_threshold": b.query_threshold,
        "max_burst": b.max_burst,
        "temperature": config.calibration.temperature,
        "reserved": reserved,
        "settings": settings(config),
    }
