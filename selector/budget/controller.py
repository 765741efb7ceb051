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
ties are broken by seeded per-item draws. Thresholds are recomputed every :func:`chunk_items` of the partition
(absolute positions, so batch boundaries never change a decision). The common pool's target carries the
feedback from realized spend, bounded by ``max_catchup``:

    rate_common = clip(base + (T - B/4) / H,  base (1 - c),  base (1 + c))

with ``T`` the token balance (credited ``r`` per item, at most ``B = max_burst``, one per label), ``H =
feedback_items`` and ``c = max_catchup``. Candidates then pass the token gate and the caps
(:func:`selector.budget.token_bucket.spend`): over any stretch the labels never exceed ``r n + B``, and the
feedback keeps the balance near ``B / 4``, so the realized rate stays at the target without bursts.

With ``diversity.mode`` on, the common pool selects ``m = oversample`` times its share, and its picks of each
window (a chunk, or less at the end of a batch) are thinned to one uniformly drawn member per cluster of
similar items (:func:`_diversify`), about ``1 / m`` of them; reserved pools, exploration and audits keep
their picks.

Inclusion probability of an item, with ``p_0`` the selection probability of the common pool, ``p_k`` that of
reserved pool ``k``, ``d`` the chance of surviving the diversity step (``1 / cluster size`` given the window;
1 when it is off) and ``g`` the recent share of candidates the gate let through (an estimate; 1 when the gate
does not bind):

    pi = a + (1 - a) g (1 - (1 - r e) (1 - p_0 d) prod_k>0 (1 - p_k))
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
from selector.diversity import assign, kcenter, kmeanspp, one_per_cluster
from selector.draws import uniforms
from selector.scores.gradient import gradient_embedding

CHUNK = 256
"""Items between threshold updates (fewer at high rates: see :func:`chunk_items`)."""

SET_POINT = 0.25
"""The feedback aims the token balance at this fraction of ``max_burst``: low enough that the balance rarely
reaches the ceiling, where credit is lost, and high enough that a candidate rarely waits for a token."""


def chunk_items(policy: Policy) -> int:
    """Items between threshold updates: at most :data:`CHUNK`, and few enough that one chunk's expected
    spend stays within half the burst (at a 5% rate and a burst of 10: 100 items, 5 labels)."""
    return max(16, min(CHUNK, int(policy.max_burst / (2 * policy.rate))))


GATE_SMOOTHING = 0.2
"""Weight of the latest chunk in the running estimate of the gate's pass rate."""

# selection mechanisms, recorded per item; pool k has code POOL_BASE + k
NONE, AUDIT, EXPLORE, POOL_BASE = 0, 1, 2, 3
_AUDIT_STREAM, _EXPLORE_STREAM, _POOL_STREAM_BASE = 1, 2, 16
_CLUSTERS_STREAM, _SEEDING_STREAM, _MEMBER_STREAM = 4, 5, 6


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
    diversity: Literal["none", "kcenter", "kmeanspp"] = "none"
    diversity_space: Literal["embedding", "gradient"] = "embedding"
    oversample: float = 1.0

    @property
    def over(self) -> float:
        """Factor the pools over-select by, for the diversity step to thin (1 when it is none)."""
        return self.oversample if self.diversity != "none" else 1.0


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
    """A partition never seen: empty windows, cold-start rules, the token balance at the set point."""
    windows = {p.name: Ring.empty(policy.window_items) for p in policy.pools}
    rules = {p.name: Threshold(math.inf, 0.0, 0.0, cold=True) for p in policy.pools}
    budget = BudgetState(max(1.0, policy.max_burst * SET_POINT), initial_state(limits).ledger)
    state = PartitionState(budget, windows, rules)
    # the first rules must see this balance, not initial_state's single token (a deficit from the start)
    return replace(state, rules=_rules(policy, state))


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
    vectors: FloatArray | None = None
    """(n, d) embeddings, for the diversity step"""
    probs: FloatArray | None = None
    """(n, C) probabilities, for gradient embeddings"""


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
    # an item picked by several pools is credited to a reserved pool first: it is what answers for its share
    credit_order = np.roll(np.arange(len(policy.pools)), -1)
    # pending's clock is the caps' time axis: a clock that steps back stands still
    tm = state.budget.ledger.monotone(f.t)
    sent_items: dict[str, tuple[float, tuple[float, ...] | None]] = {}  # labeled earlier in this batch
    sent = Pending(sent_items)  # a view of it, for the duplicate checks
    i = 0
    chunk = chunk_items(policy)
    while i < n:
        end = min(n, i + max(1, chunk - state.chunk_pos))
        probs = np.stack(
            [state.rules[p.name].probability(scores[k, i:end]) for k, p in enumerate(policy.pools)]
        )
        picked = draws[:, i:end] < probs
        candidate = explore_draw[i:end] | picked.any(axis=0)
        # a candidate repeating an earlier possible label of this segment waits for the next segment, where
        # it is judged against what was actually sent (and so on for re-sent ids, which replace an entry)
        known = (state.pending.items, sent_items)  # the later overrides the earlier
        possible, checked = candidate | audit_draw[i:end], candidate & ~audit_draw[i:end]
        end = _segment_end(f, i, possible, checked, known, tm, policy)
        seg = slice(i, end)
        probs, picked, candidate = probs[:, : end - i], picked[:, : end - i], candidate[: end - i]
        idx = np.flatnonzero(candidate & ~audit_draw[seg]) + i
        if len(idx):
            rows = idx.tolist()
            cids, cembs, now = [f.ids[j] for j in rows], [f.embeddings[j] for j in rows], tm[idx].tolist()
            # an id sent again in this batch replaces its older entry, as it will in the merged pending set
            replaced = {k for k in sent_items if k in state.pending.items}
            dup = state.pending.duplicates(cids, cembs, policy.dedup_distance, now, replaced)
            if sent_items:
                dup |= sent.duplicates(cids, cembs, policy.dedup_distance, now)
            candidate[idx[dup] - i] = False
        # reserved pools keep their picks (their shares are minimums), as do exploration and audits
        thin = _diversify(
            policy, f, i, candidate, explore_draw[seg] | audit_draw[seg] | picked[1:].any(axis=0)
        )
        spent = spend(state.budget, f.t[seg], candidate, audit_draw[seg], rate=r, max_burst=policy.max_burst)
        query[seg], audit[seg] = spent.query, spent.audit
        first_pool = (
            credit_order[np.argmax(picked[credit_order], axis=0)]
            if len(credit_order) > 1
            else np.zeros(end - i, np.int64)
        )
        mech = np.where(explore_draw[seg], EXPLORE, POOL_BASE + first_pool).astype(np.int8)
        mech[~spent.query] = NONE
        mech[spent.audit] = AUDIT
        mechanism[seg] = mech
        for j in (np.flatnonzero(spent.query | spent.audit) + i).tolist():
            e = f.embeddings[j]
            sent_items.pop(f.ids[j], None)  # re-inserted last, as Pending.with_sent orders them
            sent_items[f.ids[j]] = (float(tm[j]) + policy.pending_ttl_s, tuple(e) if e is not None else None)
        for k, p in enumerate(policy.pools):
            pool_labels[p.name] += int(np.count_nonzero(mech == POOL_BASE + k))
        p_candidate = 1.0 - (1.0 - explore_rate) * np.prod(1.0 - probs[1:], axis=0) * (1.0 - probs[0] * thin)
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
    pending = state.pending
    if n:
        merged = pending.with_sent(
            list(sent_items),
            [e for _, e in sent_items.values()],
            [x for x, _ in sent_items.values()],
            policy.pending_max_items,
        )
        pending = merged.expired(float(tm[-1]))
    state = replace(state, pending=pending)
    return Outcome(query, audit, mechanism, inclusion, threshold, state, pool_labels)


def _diversify(
    policy: Policy, f: Features, start: int, candidate: BoolArray, exempt: BoolArray
) -> FloatArray:
    """Windowed batch mode: the common pool over-selected by ``oversample`` ``m``; of the window's picks
    (``candidate`` but not ``exempt``: reserved-pool picks, exploration and audits are kept as drawn),
    cluster them into ``k = max(1, floor(picks / m + u))`` groups (k-center greedy from the highest score, or
    k-means++ seeding) in embedding or gradient-embedding space, and keep one uniformly drawn member of each
    cluster. Mutates
    ``candidate``; returns each item's chance of surviving the step given the window: ``1 / cluster size``
    for a pick, ``1 / m`` for any other item (the expected share)."""
    m = policy.over
    thin = np.full(len(candidate), 1.0 / m)
    picks = np.flatnonzero(candidate & ~exempt)
    if m == 1.0 or not len(picks):
        return np.ones(len(candidate)) if m == 1.0 else thin
    rows = picks + start
    assert f.vectors is not None, "the diversity step needs the embeddings"
    x = f.vectors[rows]
    if policy.diversity_space == "gradient":
        assert f.probs is not None
        x = gradient_embedding(f.probs[rows], x)
    u = uniforms(f.hashes[rows[:1]], policy.seed, _CLUSTERS_STREAM)
    k = max(1, min(len(picks), math.floor(len(picks) / m + float(u[0]))))
    if policy.diversity == "kcenter":
        centers = kcenter(x, k, int(np.argmax(f.score[rows])))
    else:
        centers = kmeanspp(x, k, uniforms(f.hashes[rows], policy.seed, _SEEDING_STREAM))
    labels = assign(x, centers)
    keep = one_per_cluster(labels, uniforms(f.hashes[rows], policy.seed, _MEMBER_STREAM))
    thin[picks] = 1.0 / np.bincount(labels)[labels]
    candidate[picks[~keep]] = False
    return thin


def _segment_end(
    f: Features,
    start: int,
    possible: BoolArray,
    checked: BoolArray,
    known: tuple[dict[str, tuple[float, Any]], ...],
    now: FloatArray,
    policy: Policy,
) -> int:
    """Where the segment from ``start`` must end so that the pending set is fixed while it is decided.

    Before the first ``checked`` item that repeats an earlier ``possible`` label of the segment (same id, or
    embedding within ``dedup_distance``); or right after a ``possible`` label that may send again an id
    ``known`` as pending with an embedding (an audit, or a candidate whose entry expired at its time
    ``now``): the new entry replaces the old embedding, which may stop suppressing later candidates. The end
    of the given range if neither happens.
    """
    pos = np.flatnonzero(possible).tolist()
    rids = [f.ids[start + q] for q in pos]
    near = policy.dedup_distance
    if len(set(rids)) == len(rids) and (
        near <= 0
        or (
            all(f.embeddings[start + q] is None for q in pos) and not any(r in d for d in known for r in rids)
        )
    ):
        return start + len(possible)  # the common case, checked without the walk below
    seen_ids: set[str] = set()
    seen: list[FloatArray] = []
    for q, rid in zip(pos, rids, strict=True):
        e = f.embeddings[start + q]
        v = np.asarray(e, dtype=np.float64) if e is not None and near > 0 else None
        if checked[q] and (
            rid in seen_ids
            or (v is not None and any(len(k) == len(v) and np.linalg.norm(k - v) <= near for k in seen))
        ):
            return start + q
        entry = next((d[rid] for d in reversed(known) if rid in d), None) if near > 0 else None
        if entry is not None and entry[1] is not None and (not checked[q] or entry[0] <= now[start + q]):
            return start + q + 1
        seen_ids.add(rid)
        if v is not None:
            seen.append(v)
    return start + len(possible)


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
    if pos < chunk_items(policy):
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
    common = policy.pools[0]
    common_window = state.windows[common.name].values()
    # chance that no reserved pool selects each item of the common window (windows end at the same item)
    unreserved = np.ones(len(common_window))
    for pool in policy.pools[1:]:
        window = state.windows[pool.name].values()
        rule = quantile_threshold(window, r * pool.share)
        rules[pool.name] = rule
        reserved_expected += (
            min(r * pool.share, expected_share(window, rule)) if not rule.cold else r * pool.share
        )
        overlap = min(len(window), len(common_window))
        if overlap:
            unreserved[len(common_window) - overlap :] *= 1.0 - rule.probability(
                window[len(window) - overlap :]
            )
    base = max(0.0, r - policy.audit_rate - r * policy.exploration - reserved_expected)
    feedback = (balance(policy, state.budget) - policy.max_burst * SET_POINT) / policy.feedback_items
    c = policy.max_catchup
    target = min(base * (1 + c), max(base * (1 - c), base + feedback))
    if policy.controller == "threshold":
        rules[common.name] = Threshold(policy.min_score, 1.0, target)
    else:
        # the common pool's share comes on top of what the reserved pools pick: counting the items they pick
        # again would leave the union of the pools short of the target
        weights = unreserved if len(policy.pools) > 1 else None
        rules[common.name] = quantile_threshold(common_window, min(1.0, target * policy.over), weights)
    return rules
