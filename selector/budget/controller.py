"""The spending controller: pools of reserved and common budget, streaming-quantile thresholds with feedback,
uniform exploration and audits, all gated by the token bucket and the hard caps.

Budget ``r`` (fraction of items) is split into

- ``audit_rate`` ``a``: uniform audits (route ``audit``);
- ``exploration`` ``e``: uniform random picks, ``r e`` of all items;
- reserved pools, one per entry of ``class_shares`` / ``segment_shares``: pool ``k`` selects ``r s_k`` of all
  items among the uncertain items predicted as that class (or from that segment);
- the common pool: the rest, ``base = r - a - r e - sum_k E_k``, where ``E_k`` is what pool ``k`` is expected
  to select now (a reserved share that finds too few eligible items flows back to the common pool at once).

Every pool picks by its streaming-quantile threshold (:mod:`selector.budget.quantile`) over a window of
``window_items`` recent items, so the spend follows the target however the score distribution drifts, and
ties are broken by seeded per-item draws. Thresholds are recomputed every ``CHUNK`` items of the partition
(absolute positions, so batch boundaries never change a decision). The common pool's target carries the
feedback from realized spend, bounded by ``max_catchup``:

    rate_common = clip(base + (T - B/2) / H,  base (1 - c),  base (1 + c))

with ``T`` the token balance (credited ``r`` per item, at most ``B = max_burst``, one per label), ``H =
feedback_items`` and ``c = max_catchup``. Candidates then pass the token gate and the caps
(:func:`selector.budget.token_bucket.spend`): over any stretch the labels never exceed ``r n + B``, and the
feedback keeps the balance near ``B / 2``, so the realized rate stays at the target without bursts.

Inclusion probability of an item, with ``p_k`` the selection probability of pool ``k`` and ``g`` the recent
share of candidates the gate let through (an estimate; 1 when the gate does not bind):

    pi = a + (1 - a) g (1 - (1 - r e) prod_k (1 - p_k))
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from selector.arrays import BoolArray, FloatArray, IntArray, UIntArray
from selector.budget.pending import Pending
from selector.budget.quantile import INELIGIBLE, Ring, Threshold, expected_share, quantile_threshold
from selector.budget.token_bucket import BudgetState, initial_state, spend
from selector.draws import uniforms

CHUNK = 256
"""Items between threshold updates."""

GATE_SMOOTHING = 0.2
"""Weight of the latest chunk in the running estimate of the gate's pass rate."""

# selection mechanisms, recorded per item; pool k has code POOL_BASE + k
NONE, AUDIT, EXPLORE, POOL_BASE = 0, 1, 2, 3
_AUDIT_STREAM, _EXPLORE_STREAM, _POOL_STREAM_BASE = 1, 2, 16


@dataclass(frozen=True)
class Pool:
    """A share of the budget: ``kind`` common, class or segment; ``key`` the class index or segment name."""

    name: str
    kind: Literal["common", "class", "segment"]
    share: float
    key: int | str | None = None


@dataclass(frozen=True)
class Policy:
    """Everything the controller needs from the configuration (hot-reloadable)."""

    rate: float
    audit_rate: float
    exploration: float
    pools: tuple[Pool, ...]
    """the common pool first, then reserved pools"""
    controller: Literal["quantile", "threshold"]
    min_score: float
    window_items: int
    feedback_items: float
    max_catchup: float
    max_burst: float
    seed: int
    pending_ttl_s: float = 86400.0
    dedup_distance: float = 0.0
    pending_max_items: int = 100_000


@dataclass(frozen=True)
class PartitionState:
    """Everything the controller remembers about one input partition (snapshotted with its offsets)."""

    budget: BudgetState
    windows: dict[str, Ring]
    rules: dict[str, Threshold]
    chunk_pos: int = 0
    gate: float = 1.0
    chunk_candidates: int = 0
    chunk_granted: int = 0
    pending: Pending = field(default_factory=Pending)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pending": self.pending.to_dict(),
            "budget": self.budget.to_dict(),
            "windows": {k: v.to_dict() for k, v in self.windows.items()},
            "rules": {k: v.to_dict() for k, v in self.rules.items()},
            "chunk_pos": self.chunk_pos,
            "gate": self.gate,
            "chunk_candidates": self.chunk_candidates,
            "chunk_granted": self.chunk_granted,
        }

    @classmethod
    def from_dict(
        cls, policy: Policy, limits: dict[str, tuple[float, int]], d: dict[str, Any]
    ) -> PartitionState:
        """Restore a snapshot under a (possibly changed) policy: unknown pools start cold, windows resize."""
        fresh = initial_partition(policy, limits)
        windows = {
            p.name: Ring.from_dict(d["windows"][p.name], policy.window_items)
            if p.name in d["windows"]
            else fresh.windows[p.name]
            for p in policy.pools
        }
        rules = {
            p.name: Threshold.from_dict(d["rules"][p.name]) if p.name in d["rules"] else fresh.rules[p.name]
            for p in policy.pools
        }
        return cls(
            BudgetState.from_dict(limits, d["budget"]),
            windows,
            rules,
            int(d["chunk_pos"]),
            float(d["gate"]),
            int(d["chunk_candidates"]),
            int(d["chunk_granted"]),
            Pending.from_dict(d.get("pending", {})),
        )


def initial_partition(policy: Policy, limits: dict[str, tuple[float, int]]) -> PartitionState:
    """A partition never seen: empty windows, cold-start rules, a token balance of half the burst."""
    windows = {p.name: Ring.empty(policy.window_items) for p in policy.pools}
    rules = {p.name: Threshold(math.inf, 0.0, 0.0, cold=True) for p in policy.pools}
    state = PartitionState(initial_state(limits), windows, rules)
    state = PartitionState(
        BudgetState(max(1.0, policy.max_burst / 2), state.budget.ledger), windows, _rules(policy, state)
    )
    return state


@dataclass(frozen=True)
class Features:
    """Per-item inputs of the controller for one batch."""

    score: FloatArray
    predicted: IntArray
    segment: np.ndarray  # object array of str | None
    accept: BoolArray
    hashes: UIntArray
    t: FloatArray
    ids: list[str]
    embeddings: list[Any]
    """one list of floats or None per item"""


@dataclass(frozen=True)
class Outcome:
    """What the controller decided for one batch, and the partition state once it is committed."""

    query: BoolArray
    audit: BoolArray
    mechanism: np.ndarray  # int8: NONE, AUDIT, EXPLORE, POOL_BASE + k
    inclusion: FloatArray
    threshold: FloatArray
    """the common pool's threshold in force for each item"""
    state: PartitionState
    pool_labels: dict[str, int] = field(default_factory=dict)


def pool_scores(policy: Policy, f: Features) -> FloatArray:
    """(pools, n) scores as each pool sees them: the item's score where eligible, ``INELIGIBLE`` elsewhere."""
    base = ~f.accept & (f.score >= policy.min_score)
    out = np.full((len(policy.pools), len(f.score)), INELIGIBLE)
    for k, pool in enumerate(policy.pools):
        if pool.kind == "common":
            mask = base
        elif pool.kind == "class":
            mask = base & (f.predicted == pool.key)
        else:
            mask = base & (f.segment == pool.key)
        out[k, mask] = f.score[mask]
    return out


def decide(policy: Policy, state: PartitionState, f: Features) -> Outcome:
    """Decide a batch of one partition, chunk by chunk; ``state`` is not mutated."""
    n = len(f.score)
    a, r = policy.audit_rate, policy.rate
    explore_rate = r * policy.exploration
    audit_draw = uniforms(f.hashes, policy.seed, _AUDIT_STREAM) < a
    explore_draw = uniforms(f.hashes, policy.seed, _EXPLORE_STREAM) < explore_rate
    scores = pool_scores(policy, f)
    draws = (
        np.stack([uniforms(f.hashes, policy.seed, _POOL_STREAM_BASE + k) for k in range(len(policy.pools))])
        if n
        else scores
    )
    query = np.zeros(n, dtype=bool)
    audit = np.zeros(n, dtype=bool)
    mechanism = np.zeros(n, dtype=np.int8)
    inclusion = np.zeros(n)
    threshold = np.zeros(n)
    pool_labels = dict.fromkeys((p.name for p in policy.pools), 0)
    pending = state.pending.expired(float(f.t[0])) if n else state.pending
    sent: set[str] = set()
    i = 0
    while i < n:
        end = min(n, i + CHUNK - state.chunk_pos)
        seg = slice(i, end)
        probs = np.stack(
            [state.rules[p.name].probability(scores[k, seg]) for k, p in enumerate(policy.pools)]
        )
        picked = draws[:, seg] < probs
        candidate = explore_draw[seg] | picked.any(axis=0)
        idx = np.flatnonzero(candidate & ~audit_draw[seg]) + i
        if len(idx):
            cids = [f.ids[j] for j in idx.tolist()]
            dup = pending.duplicates(cids, [f.embeddings[j] for j in idx.tolist()], policy.dedup_distance)
            dup |= np.fromiter((c in sent for c in cids), dtype=bool, count=len(cids))
            candidate[idx[dup] - i] = False
        spent = spend(state.budget, f.t[seg], candidate, audit_draw[seg], rate=r, max_burst=policy.max_burst)
        query[seg], audit[seg] = spent.query, spent.audit
        first_pool = np.argmax(picked, axis=0)
        mech = np.where(explore_draw[seg], EXPLORE, POOL_BASE + first_pool).astype(np.int8)
        mech[~spent.query] = NONE
        mech[spent.audit] = AUDIT
        mechanism[seg] = mech
        sent.update(f.ids[j] for j in (np.flatnonzero(spent.query | spent.audit) + i).tolist())
        for k, p in enumerate(policy.pools):
            pool_labels[p.name] += int(np.count_nonzero(mech == POOL_BASE + k))
        p_candidate = 1.0 - (1.0 - explore_rate) * np.prod(1.0 - probs, axis=0)
        inclusion[seg] = a + (1.0 - a) * state.gate * p_candidate
        threshold[seg] = state.rules[policy.pools[0].name].theta
        state = _advance(
            policy,
            state,
            spent.state,
            scores[:, seg],
            int(np.count_nonzero(candidate & ~audit_draw[seg])),
            int(np.count_nonzero(spent.query)),
        )
        i = end
    labeled = np.flatnonzero(query | audit).tolist()
    pending = pending.with_sent(
        [f.ids[j] for j in labeled],
        [f.embeddings[j] for j in labeled],
        float(f.t[-1]) + policy.pending_ttl_s if n else 0.0,
        policy.pending_max_items,
    )
    state = replace(state, pending=pending)
    return Outcome(query, audit, mechanism, inclusion, threshold, state, pool_labels)


def _advance(
    policy: Policy,
    state: PartitionState,
    budget: BudgetState,
    seg_scores: FloatArray,
    candidates: int,
    granted: int,
) -> PartitionState:
    """The state after one segment: windows extended, and at a chunk boundary new rules and gate estimate."""
    windows = {p.name: state.windows[p.name].extended(seg_scores[k]) for k, p in enumerate(policy.pools)}
    pos = state.chunk_pos + seg_scores.shape[1]
    cands, grants = state.chunk_candidates + candidates, state.chunk_granted + granted
    nxt = PartitionState(budget, windows, state.rules, pos, state.gate, cands, grants, state.pending)
    if pos < CHUNK:
        return nxt
    gate = state.gate if cands == 0 else (1 - GATE_SMOOTHING) * state.gate + GATE_SMOOTHING * grants / cands
    nxt = PartitionState(budget, windows, state.rules, 0, gate, 0, 0, state.pending)
    return replace(nxt, rules=_rules(policy, nxt))


def balance(policy: Policy, budget: BudgetState) -> float:
    """The token balance now (credited lazily in the budget state)."""
    return min(policy.max_burst, budget.tokens + policy.rate * budget.since)


def _rules(policy: Policy, state: PartitionState) -> dict[str, Threshold]:
    """New thresholds for every pool from its window; the common pool gets the feedback term."""
    r = policy.rate
    rules: dict[str, Threshold] = {}
    reserved_expected = 0.0
    for pool in policy.pools[1:]:
        window = state.windows[pool.name].values()
        rule = quantile_threshold(window, r * pool.share)
        rules[pool.name] = rule
        reserved_expected += (
            min(r * pool.share, expected_share(window, rule)) if not rule.cold else r * pool.share
        )
    common = policy.pools[0]
    base = max(0.0, r - policy.audit_rate - r * policy.exploration - reserved_expected)
    feedback = (balance(policy, state.budget) - policy.max_burst / 2) / policy.feedback_items
    c = policy.max_catchup
    target = min(base * (1 + c), max(base * (1 - c), base + feedback))
    if policy.controller == "threshold":
        rules[common.name] = Threshold(policy.min_score, 1.0, target)
    else:
        rules[common.name] = quantile_threshold(state.windows[common.name].values(), target)
    return rules
