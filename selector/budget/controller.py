"""The spending controller: pools whose shares follow their token balances, and uniform audits, all gated by
the token bucket and the hard caps.

Budget ``r`` (fraction of items) is split into

- ``audit_rate`` ``a``: uniform audits (route ``audit``);
- ``exploration`` ``e``: a pool of uniform random picks, ``r e`` of all items (every item tied in it);
- reserved pools, one per entry of ``class_shares`` / ``segment_shares``: pool ``k`` aims at ``r s_k`` of all
  items among the items predicted as that class (or from that segment);
- the common pool: the rest, ``b_0 = r - a - r e - sum_k r s_k``.

**Feedback on the balance, item by item.** The token balance ``T`` (credited ``r`` per item, at most ``B =
max_burst``, one per label; :mod:`selector.budget.token_bucket`) is the spend still owed. The common pool
selects the share

    s_0(T) = b_0 exp(kappa (T - T_0))

of its window's distribution (:class:`selector.budget.quantile.WindowRule`, the tie-safe streaming
quantile over the last ``window_items`` items), with ``kappa`` = :data:`FEEDBACK_GAIN` per token and ``T_0``
the set point. Right after a label the bar is high (the share is ``e^-kappa`` of its base); it falls as the
balance refills, so the next label goes to the first item informative enough for the time waited. Whatever
the scores do (a model that keeps improving, a swap, ties, zeros, a learner refit on its own labels), a
shortfall raises the balance and the share with it, and at the ceiling ``B`` the pool takes any eligible
item: credit is lost only when no eligible item arrives (the floor ``query_threshold``, near-duplicates of
pending items) or the caps block. The balance stays within about a token of ``T_0``, so the labels of any
stretch of ``m`` items are ``r m`` within a couple of labels, and never more than ``r m + B``. Each
reserved pool runs the same rule on a balance of its own (credited ``r s_k`` per item, debited by the labels
credited to it), so it meets its share whenever it has eligible items; the common pool answers for the rest
through ``T``.

Picks are exact per item: an item is picked by pool ``k`` iff ``s_k(T_j) > s*_kj``, its critical share (a
seeded per-item draw breaks ties), and the gate grants it iff ``T_j >= 1`` and every cap has room. Windows
are refreshed every :func:`chunk_items` items (absolute positions, shorter while a window is young), so
batch boundaries never change a decision. A prediction from a model version not seen recently starts the
windows afresh: a new model's scores are not judged by the old model's window.

With ``diversity.mode`` on, the common pool is allowed at most one label per cluster of each window (a chunk,
or less at the end of a batch): the window's likely picks (the items the pool would take at ``oversample``
times its base share) are clustered into ``picks / oversample`` groups by k-center greedy or k-means++
seeding, in embedding or gradient-embedding space (:func:`_clusters`).

**Inclusion probability.** Every decision is made from the state before the item and the item's own draws,
so its inclusion probability given the past is exact: with ``c`` = 1 if every cap has room at ``t_j``, ``g`` =
1 if moreover ``T_j >= 1``, ``p_k`` the pick probability of pool ``k`` at its share (0 when the item repeats a
pending one, or its cluster has had its label),

    pi = c (a + (1 - a) g (1 - prod_k (1 - p_k)))

so over a run the inclusion probabilities add up to the labels sent, up to sampling error (a martingale),
in every regime: caps and gate binding, reserved pools, diversity.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from selector.arrays import BoolArray, FloatArray, IntArray, UIntArray
from selector.budget.partition import Balance, PartitionState, chunk_left, initial_partition
from selector.budget.policy import (
    AUDIT,
    CHUNK,
    COLD,
    NONE,
    POOL_BASE,
    SHORTFALL_REASONS,
    Policy,
    Pool,
    chunk_items,
)
from selector.budget.quantile import INELIGIBLE
from selector.budget.token_bucket import BudgetState
from selector.budget.walk import Walk

__all__ = [
    "AUDIT",
    "CHUNK",
    "COLD",
    "NONE",
    "POOL_BASE",
    "SHORTFALL_REASONS",
    "Balance",
    "Features",
    "Outcome",
    "PartitionState",
    "Policy",
    "Pool",
    "balance",
    "chunk_items",
    "chunk_left",
    "decide",
    "initial_partition",
    "pool_scores",
]


@dataclass(frozen=True)
class Features:
    """Per-item inputs of the controller for one batch."""

    score: FloatArray
    predicted: IntArray
    segment: np.ndarray  # object array of str | None
    accept: BoolArray
    """met the auto-accept rule: a candidate like any other (accepted only if not chosen for labeling)"""
    hashes: UIntArray
    t: FloatArray
    ids: list[str]
    embeddings: list[Any]
    """one list of floats or None per item"""
    vectors: FloatArray | None = None
    """(n, d) embeddings, for the diversity step"""
    probs: FloatArray | None = None
    """(n, C) probabilities, for gradient embeddings"""
    model: list[str | None] | None = None
    """the model version of each prediction, when given"""


@dataclass(frozen=True)
class Outcome:
    """What the controller decided for one batch, and the partition state once it is committed."""

    query: BoolArray
    audit: BoolArray
    mechanism: np.ndarray  # int8: NONE, AUDIT, COLD, POOL_BASE + k
    inclusion: FloatArray
    threshold: FloatArray
    """the threshold of the pool that chose each label; the common pool's for other items"""
    state: PartitionState
    pool_labels: dict[str, int] = field(default_factory=dict)
    shortfall: dict[str, float] = field(default_factory=dict)
    """budget credit lost in this batch, in labels, by reason (:data:`SHORTFALL_REASONS`, ``pool:<name>``)"""
    model_switches: list[tuple[str | None, str]] = field(default_factory=list)
    """(old, new) model versions that restarted the windows in this batch"""


def pool_scores(policy: Policy, f: Features) -> FloatArray:
    """(pools, n) scores as each pool sees them: the item's score where eligible, ``INELIGIBLE`` elsewhere.
    An auto-accept-eligible item is eligible like any other: the accepted route takes what is not labeled."""
    base = f.score >= policy.min_score
    out = np.full((len(policy.pools), len(f.score)), INELIGIBLE)
    for k, pool in enumerate(policy.pools):
        if pool.kind == "exploration":
            out[k] = 0.5  # every item, tied: the pool's picks are uniform draws
            continue
        if pool.kind == "common":
            mask = base
        elif pool.kind == "class":
            mask = base & (f.predicted == pool.key)
        else:
            mask = base & (f.segment == pool.key)
        out[k, mask] = f.score[mask]
    return out


def decide(policy: Policy, state: PartitionState, f: Features) -> Outcome:
    """Decide a batch of one partition, window by window; ``state`` is not mutated."""
    n = len(f.score)
    scores = pool_scores(policy, f)
    walk = Walk(policy, state, f, scores)
    i = 0
    while i < n:
        walk.maybe_switch(i)
        end = min(n, i + chunk_left(policy, walk.state), walk.next_switch(i))
        walk.window(i, end)
        walk.state = _refresh(policy, walk.state, scores[:, i:end])
        i = end
    return Outcome(
        walk.query,
        walk.audit,
        walk.mechanism,
        walk.inclusion(),
        walk.thresholds(),
        walk.final_state(),
        walk.pool_labels,
        walk.shortfall,
        walk.switches,
    )


def _refresh(policy: Policy, state: PartitionState, seg_scores: FloatArray) -> PartitionState:
    """The state after one window's items: their scores join the chunk, and at a chunk boundary the windows
    (and the rules derived from them) are refreshed."""
    chunk = {p.name: state.chunk[p.name] + seg_scores[k].tolist() for k, p in enumerate(policy.pools)}
    filled = state.windows[policy.pools[0].name].filled
    if len(chunk[policy.pools[0].name]) < chunk_items(policy, filled):
        return replace(state, chunk=chunk)
    windows = {
        p.name: state.windows[p.name].extended(np.asarray(chunk[p.name], dtype=np.float64))
        for p in policy.pools
    }
    return replace(state, windows=windows, chunk={p.name: [] for p in policy.pools}).with_rules()


def balance(policy: Policy, budget: BudgetState) -> float:
    """The token balance now (credited lazily in the budget state)."""
    return min(policy.max_burst, budget.tokens + policy.rate * budget.since)
