"""The target-rate budget: a token bucket credited per item, combined with the hard caps.

Each item credits ``rate`` tokens, the balance never exceeds ``max_burst`` (so an idle period cannot be
"repaid" later in a burst larger than ``max_burst`` labels), and every label costs one token:

    T_j = min(max_burst, T_k + rate * (j - k))     balance before item j, k = index of the last label

A query candidate ``j`` is granted iff ``T_j >= 1`` and every cap has room at ``t_j``; an audit is granted iff
every cap has room (audits must stay uniform, so the balance may go below zero for them). Over any ``m``
consecutive items ending with a query at most ``rate * m + max_burst`` labels are granted (without audits:
over any ``m`` consecutive items); audits after the last query may overdraw.

The state carries ``T_k`` and the number of items since ``k`` rather than the balance after the batch, so
``T_j`` is computed by the same floating-point expression whatever the batch boundaries are, and the
decisions do not depend on how the stream was cut into batches.

The walk visits only label events (audit draws and query candidates), and jumps over candidates that cannot
pass: from a blocked candidate straight to the first index where the balance reaches one token and the caps
have room again. Its cost is proportional to labels granted, not to items.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from selector.arrays import BoolArray, FloatArray, IntArray
from selector.budget.caps import CapLedger, CapWalk


@dataclass(frozen=True)
class BudgetState:
    """Spending state of one input partition. Immutable: :func:`spend` returns the next one."""

    tokens: float
    """the balance ``T_k`` right after the last label (or the initial balance)"""
    ledger: CapLedger
    items: int = 0
    labels: int = 0
    since: int = 0
    """items after that point, not yet credited (item ``j`` of the next batch is ``since + 1 + j`` on)"""

    def to_dict(self) -> dict[str, Any]:
        """Plain-data snapshot (for the state topic)."""
        return {
            "tokens": self.tokens,
            "items": self.items,
            "labels": self.labels,
            "since": self.since,
            "ledger": self.ledger.to_dict(),
        }

    @classmethod
    def from_dict(cls, limits: dict[str, tuple[float, int]], data: dict[str, Any]) -> BudgetState:
        """Restore a snapshot under (possibly changed) cap limits."""
        return cls(
            float(data["tokens"]),
            CapLedger.from_dict(limits, data["ledger"]),
            int(data["items"]),
            int(data["labels"]),
            int(data.get("since", 0)),
        )


@dataclass(frozen=True)
class Spend:
    """Outcome of :func:`spend` over one batch."""

    query: BoolArray
    audit: BoolArray
    query_possible: BoolArray
    """for audited items: whether the budget would also have granted a query (for inclusion probabilities)"""
    state: BudgetState


def initial_state(limits: dict[str, tuple[float, int]]) -> BudgetState:
    """A fresh partition: one token, so the first informative item can be labeled, and empty caps."""
    return BudgetState(tokens=1.0, ledger=CapLedger(limits))


def spend(
    state: BudgetState,
    t: FloatArray,
    candidate: BoolArray,
    audit_draw: BoolArray,
    *,
    rate: float,
    max_burst: float,
) -> Spend:
    """Grant labels to audit draws and query candidates in item order, without mutating ``state``.

    Args:
        state: balance and caps before the batch.
        t: decision time of each item, seconds (made non-decreasing by the ledger).
        candidate: items informative enough to be queried (and not auto-accepted).
        audit_draw: items drawn for the uniform audit.
        rate: tokens credited per item (the target fraction).
        max_burst: the balance never exceeds this.
    """
    n = len(t)
    tm = state.ledger.monotone(t)
    walk = CapWalk(state.ledger)
    query = np.zeros(n, dtype=bool)
    audit = np.zeros(n, dtype=bool)
    possible = np.zeros(n, dtype=bool)
    cand: IntArray = np.flatnonzero(candidate & ~audit_draw)
    auds: IntArray = np.flatnonzero(audit_draw)
    ref_tokens, ref_index = min(state.tokens, max_burst), -1 - state.since
    ci = ai = 0
    while ci < len(cand) or ai < len(auds):
        is_audit = ai < len(auds) and (ci >= len(cand) or auds[ai] < cand[ci])
        j = int(auds[ai] if is_audit else cand[ci])
        tokens = min(max_burst, ref_tokens + rate * (j - ref_index))
        tj = float(tm[j])
        free = walk.free_at(tj)
        if is_audit:
            ai += 1
            possible[j] = bool(candidate[j]) and tokens >= 1.0 and free <= tj
            if free <= tj:
                audit[j] = True
                walk.grant(tj)
                ref_tokens, ref_index = tokens - 1.0, j
            continue
        if tokens >= 1.0 and free <= tj:
            query[j] = True
            walk.grant(tj)
            ref_tokens, ref_index = tokens - 1.0, j
            ci += 1
            continue
        # blocked: jump to the first candidate that could pass, by tokens and by caps
        by_tokens = j if tokens >= 1.0 else ref_index + max(1, math.ceil((1.0 - ref_tokens) / rate - 1e-9))
        by_caps = int(np.searchsorted(tm, free, side="left")) if free > tj else j
        ci = int(np.searchsorted(cand, max(j + 1, by_tokens, by_caps), side="left"))
    if not n:
        return Spend(query, audit, possible, state)
    labels = len(walk.new)
    nxt = BudgetState(
        ref_tokens,
        state.ledger.with_grants(walk.new, float(tm[-1])),
        state.items + n,
        state.labels + labels,
        n - 1 - ref_index,
    )
    return Spend(query, audit, possible, nxt)
