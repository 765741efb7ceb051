"""The walk of one batch through the controller: label events in item order, everything else vectorized.

Between two labels every balance grows linearly, so the next event is found by one vectorized comparison
per pool (an item is picked by pool ``k`` iff its balance exceeds the item's critical balance, see
:mod:`selector.budget.controller`), and the inclusion probabilities of the whole batch are computed once
its events are known. The cost is proportional to labels and windows, not to items.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from selector.arrays import BoolArray, FloatArray, IntArray
from selector.budget.caps import CapWalk
from selector.budget.diversity import assign, kcenter, kmeanspp
from selector.budget.partition import Balance, PartitionState
from selector.budget.pending import Pending
from selector.budget.policy import AUDIT, COLD, FEEDBACK_GAIN, POOL_BASE, VERSIONS_KEPT, Policy
from selector.budget.quantile import INELIGIBLE, Ring, WindowRule
from selector.budget.token_bucket import BudgetState
from selector.draws import uniforms
from selector.scores.gradient import gradient_embedding

if TYPE_CHECKING:
    from selector.budget.controller import Features

_AUDIT_STREAM, _POOL_STREAM_BASE = 1, 16
_CLUSTERS_STREAM, _SEEDING_STREAM = 4, 5

_NO_CLUSTER = -1

_MAX_EXPONENT = 80.0
"""The feedback's exponent is clipped here: a share of ``base * e**80`` already selects every eligible item
for any base above 1e-34, and a balance far above the set point (a large ``max_burst``) would overflow."""


@dataclass(frozen=True)
class _Segment:
    """Items from ``first`` up to the next event: every balance's reference point, and when caps have room."""

    first: int
    ref: tuple[float, ...]
    ref_at: tuple[int, ...]
    free: float


class Walk:
    """Decisions of one batch, with the partition state threaded through windows and label events."""

    def __init__(self, policy: Policy, state: PartitionState, f: Features, scores: FloatArray) -> None:
        n, k_pools = len(f.score), len(policy.pools)
        self.policy, self.state, self.f, self.scores = policy, state, f, scores
        self.audit_at: list[int] = np.flatnonzero(
            uniforms(f.hashes, policy.seed, _AUDIT_STREAM) < policy.audit_rate
        ).tolist()
        self.draws = [uniforms(f.hashes, policy.seed, _POOL_STREAM_BASE + k) for k in range(k_pools)]
        self.index = np.arange(n)
        self.query = np.zeros(n, dtype=bool)
        self.audit = np.zeros(n, dtype=bool)
        self.mechanism = np.zeros(n, dtype=np.int8)
        self.blocked = np.zeros(n, dtype=bool)
        """candidates found to repeat a pending item (they could not be labeled)"""
        # per item and pool, from the window rule in force: critical balance, window counts above and tied
        self.crit = np.full((k_pools, n), np.inf)
        self.h = np.full((k_pools, n), np.inf)
        """``crit - rho j``: pool ``k`` picks item ``j`` iff this is below ``ref - rho at`` of its balance"""
        self.above = np.zeros((k_pools, n))
        self.tied = np.zeros((k_pools, n))
        self.size = np.zeros((k_pools, n))
        """window size of the rule in force (0 while cold)"""
        self.cluster = np.full(n, _NO_CLUSTER, dtype=np.int64)
        self.cluster_taken = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
        """for each item: where its cluster got its label in the item's window (diversity)"""
        models = f.model
        self.changes: IntArray = (
            np.flatnonzero([a != b for a, b in zip(models[1:], models[:-1], strict=True)]) + 1
            if models and models.count(models[0]) != len(models)
            else np.zeros(0, dtype=np.int64)
        )
        """positions where the model version differs from the previous item's"""
        self.segments: list[_Segment] = []
        self._per_item_cache: tuple[FloatArray, list[FloatArray], FloatArray] | None = None
        self.windows: list[tuple[int, int, list[WindowRule]]] = []
        """each window's items and the rules in force over them"""
        self.pool_labels = dict.fromkeys((p.name for p in policy.pools), 0)
        self.shortfall: dict[str, float] = {}
        self.switches: list[tuple[str | None, str]] = []
        # pending's clock is the caps' time axis: a clock that steps back stands still
        self.tm = state.budget.ledger.monotone(f.t)
        self.caps = CapWalk(state.budget.ledger)
        self.sent: dict[str, tuple[float, tuple[float, ...] | None]] = {}  # labeled earlier in this batch
        self.sent_at: dict[str, int] = {}
        self.replaced: set[str] = set()
        """pending ids sent again in this batch: their new entry replaces the old one"""
        self.base = policy.base_shares()
        self.diversity_yields = policy.set_point + math.log(policy.over) / FEEDBACK_GAIN + 1.0
        """the token balance from which a used-up cluster no longer holds a label back (a budget that would
        go unspent outweighs diversity): one token above where the clusters' likely picks are drawn"""
        self.rho = [policy.rate, *(policy.rate * p.share for p in policy.pools[1:])]
        b = state.budget
        self.ref = [min(b.tokens, policy.max_burst), *(state.balances[p.name].ref for p in policy.pools[1:])]
        self.ref_at = [-1 - b.since, *(-1 - state.balances[p.name].since for p in policy.pools[1:])]
        self.lost = [state.lost, *(state.pool_lost.get(p.name, 0.0) for p in policy.pools[1:])]

    # -- model versions --------------------------------------------------------------------------------

    def next_switch(self, i: int) -> int:
        """Index of the next prediction after ``i`` from a model version not known: the window ends there."""
        models, known = self.f.model, self.state.versions
        for j in self.changes[int(np.searchsorted(self.changes, i, side="right")) :].tolist():
            if models is not None and models[j] is not None and models[j] not in known:
                return int(j)
        return len(self.f.score)

    def maybe_switch(self, i: int) -> None:
        """At a prediction from a model version not seen recently: restart every window (balances carry on).
        A version among the last few seen (A/B traffic) keeps them."""
        models = self.f.model
        v = models[i] if models else None
        if v is None:
            return
        known = self.state.versions
        if v in known:
            if known[-1] != v:
                self.state = replace(self.state, versions=(*(k for k in known if k != v), v))
            return
        if known:  # the first version a partition sees is a start, not a switch
            self.switches.append((known[-1], v))
            pools = self.policy.pools
            empty = {p.name: Ring.empty(self.policy.window_items) for p in pools}
            self.state = replace(self.state, windows=empty, chunk={p.name: [] for p in pools}).with_rules()
        self.state = replace(self.state, versions=(*known, v)[-VERSIONS_KEPT:])

    # -- one window -------------------------------------------------------------------------------------

    def window(self, start: int, end: int) -> None:
        """Decide items ``start..end``, over which every pool's rule is fixed."""
        p = self.policy
        w = slice(start, end)
        for k, pool in enumerate(p.pools):
            x = self.scores[k, w]
            eligible = x > INELIGIBLE
            if k == 0 and p.controller == "threshold":
                self.crit[k, w] = np.where(eligible, -np.inf, np.inf)
                continue
            rule = self.state.rules[pool.name]
            if rule.cold:
                s_star = self.draws[k][w]
            else:
                m = len(rule.ordered)
                above, tied = rule.above_tied(x)
                self.above[k, w], self.tied[k, w], self.size[k, w] = above, tied, m
                s_star = (above + self.draws[k][w] * tied) / m
            if self.base[k] > 0:
                with np.errstate(divide="ignore"):
                    c = p.set_point + np.log(s_star / self.base[k]) / FEEDBACK_GAIN
                self.crit[k, w] = np.where(eligible & (c < p.max_burst), c, np.inf)
        for k in range(len(p.pools)):
            self.h[k, w] = self.crit[k, w] - self.rho[k] * self.index[w]
        diverse = self._clusters(start, end)
        pos = start
        while pos < end:
            free = self.caps.free_at(float(self.tm[pos]))
            self.segments.append(_Segment(pos, tuple(self.ref), tuple(self.ref_at), free))
            j, is_audit = self._next_event(pos, end, free, diverse)
            if j < end and self.caps.free_at(float(self.tm[j])) > self.tm[j]:
                pos = j  # the caps' edge rounds against this item: judge it again from its own time
                continue
            self._account_loss(min(j, end - 1), free)
            if j >= end:
                break
            if self._grant(j, is_audit) == 0 and diverse:
                c = self.cluster[j]
                members = np.flatnonzero(self.cluster[w] == c) + start
                self.cluster_taken[members] = np.minimum(self.cluster_taken[members], j)
            pos = j + 1
        self.windows.append((start, end, [self.state.rules[pool.name] for pool in p.pools]))

    def _balance(self, k: int, j: IntArray) -> FloatArray:
        out: FloatArray = np.minimum(self.policy.max_burst, self.ref[k] + self.rho[k] * (j - self.ref_at[k]))
        return out

    def _balance_at(self, k: int, j: int) -> float:
        # the same floating-point expression as :meth:`_balance`, so scalar and vector checks agree
        return min(self.policy.max_burst, self.ref[k] + self.rho[k] * (j - self.ref_at[k]))

    def _next_event(self, pos: int, end: int, free: float, diverse: bool) -> tuple[int, bool]:
        """The next label event from ``pos``: (index, is an audit); (end, False) if none. Candidates that
        repeat a pending item are marked blocked and passed over."""
        room_from = pos if free <= self.tm[pos] else int(np.searchsorted(self.tm, free, side="left"))
        lo = max(pos, room_from)
        a = bisect_left(self.audit_at, lo)
        next_audit = self.audit_at[a] if a < len(self.audit_at) and self.audit_at[a] < end else end
        lo = max(lo, self._gate_from(lo))
        while lo < next_audit:
            j = min(self._first_pick(k, lo, next_audit, diverse) for k in range(len(self.policy.pools)))
            if j >= next_audit:
                break
            if self._duplicate(j):
                self.blocked[j] = True
                lo = j + 1
                continue
            return j, False
        return (next_audit, True) if next_audit < end else (end, False)

    def _gate_from(self, lo: int) -> int:
        """The first item from ``lo`` at which the token balance holds a token (it only grows until the next
        label); the arithmetic guess is settled by the exact expression the balance uses."""
        if self._balance_at(0, lo) >= 1.0:
            return lo
        j = max(lo, self.ref_at[0] + math.ceil((1.0 - self.ref[0]) / self.rho[0]) - 1)
        while self._balance_at(0, j) < 1.0:
            j += 1
        return j

    def _first_pick(self, k: int, lo: int, hi: int, diverse: bool) -> int:
        """The first item in ``lo..hi`` pool ``k`` picks at its balance then (``hi`` if none): its balance
        ``ref + rho (j - at)`` exceeds the item's critical balance, i.e. ``crit_j - rho j < ref - rho at``,
        found on that precomputed difference and confirmed by the exact expression."""
        if k == 0 and diverse:
            ar = self.index[lo:hi]
            tokens = self._balance(0, ar)
            free = (self.cluster_taken[lo:hi] >= ar) | (tokens >= self.diversity_yields)
            picks = (tokens > self.crit[0, lo:hi]) & free
            q = int(np.argmax(picks)) if hi > lo else 0
            return lo + q if hi > lo and picks[q] else hi
        c = self.ref[k] - self.rho[k] * self.ref_at[k]
        tol = 1e-9 * max(1.0, abs(c))
        while lo < hi:
            hits = self.h[k, lo:hi] < c + tol
            q = int(np.argmax(hits))
            if not hits[q]:
                return hi
            j = lo + q
            if self._balance_at(k, j) > self.crit[k, j]:
                return j
            lo = j + 1
        return hi

    def _duplicate(self, j: int) -> bool:
        """Whether item ``j`` repeats an item pending at its time, or one sent earlier in this batch."""
        f, p = self.f, self.policy
        now = [float(self.tm[j])]
        ids, embs = [f.ids[j]], [f.embeddings[j]]
        pending = self.state.pending
        if pending.items and pending.duplicates(ids, embs, p.dedup_distance, now, self.replaced)[0]:
            return True
        return bool(self.sent) and bool(Pending(self.sent).duplicates(ids, embs, p.dedup_distance, now)[0])

    def _grant(self, j: int, is_audit: bool) -> int:
        """Label item ``j``: spend a token (and the crediting pool's), note it as sent, say who chose it;
        return the crediting pool (-1: an audit)."""
        p, f = self.policy, self.f
        tj = float(self.tm[j])
        self.caps.grant(tj)
        balances = [self._balance_at(k, j) for k in range(len(p.pools))]
        self.ref[0], self.ref_at[0], self.lost[0] = balances[0] - 1.0, j, 0.0
        e = f.embeddings[j]
        self.sent.pop(f.ids[j], None)  # re-inserted last, as Pending.with_sent orders them
        self.sent[f.ids[j]] = (tj + p.pending_ttl_s, tuple(e) if e is not None else None)
        self.sent_at[f.ids[j]] = j
        if f.ids[j] in self.state.pending.items:
            self.replaced.add(f.ids[j])
        if is_audit:
            self.audit[j] = True
            self.mechanism[j] = AUDIT
            return -1
        self.query[j] = True
        free_cluster = self.cluster_taken[j] >= j or balances[0] >= self.diversity_yields
        picked = [balances[k] > self.crit[k, j] and (k > 0 or free_cluster) for k in range(len(p.pools))]
        # an item picked by several pools is credited to a reserved pool first: it answers for its share
        k: int = next(k for k in [*range(1, len(p.pools)), 0] if picked[k])
        if k > 0:
            self.ref[k], self.ref_at[k], self.lost[k] = balances[k] - 1.0, j, 0.0
        self.pool_labels[p.pools[k].name] += 1
        # a pool whose window is young picks at random (an exploration pool always does: it is not cold)
        cold = self.size[k, j] == 0 and self.crit[k, j] != -np.inf and p.pools[k].kind != "exploration"
        self.mechanism[j] = COLD if cold else POOL_BASE + k
        return k

    def _account_loss(self, j: int, free: float) -> None:
        """Credit lost to the ceiling since each balance's last label, up to item ``j``, reported once: the
        total's reason is the caps when they hold labels back at ``j``, else the lack of eligible items."""
        p = self.policy
        for k, pool in enumerate(p.pools):
            total = max(0.0, self.ref[k] + self.rho[k] * (j - self.ref_at[k]) - p.max_burst)
            if total > self.lost[k]:
                key = ("floor" if free <= self.tm[j] else "cap") if k == 0 else f"pool:{pool.name}"
                self.shortfall[key] = self.shortfall.get(key, 0.0) + total - self.lost[k]
                self.lost[k] = total

    # -- after the walk ---------------------------------------------------------------------------------

    def _per_item(self) -> tuple[FloatArray, list[FloatArray], FloatArray]:
        """Each item's token balance, every pool's share and the time from which the caps have room, given
        the state before the item (from the segment it fell in; computed once, after the walk)."""
        if self._per_item_cache is None:
            p, j = self.policy, self.index
            seg = np.searchsorted([s.first for s in self.segments], j, side="right") - 1
            refs = np.asarray([s.ref for s in self.segments])[seg]
            ats = np.asarray([s.ref_at for s in self.segments])[seg]
            free = np.asarray([s.free for s in self.segments])[seg]
            bal = [
                np.minimum(p.max_burst, refs[:, k] + self.rho[k] * (j - ats[:, k]))
                for k in range(len(p.pools))
            ]
            shares = [
                self.base[k] * np.exp(np.minimum(FEEDBACK_GAIN * (b - p.set_point), _MAX_EXPONENT))
                for k, b in enumerate(bal)
            ]
            self._per_item_cache = (bal[0], shares, free)
        return self._per_item_cache

    def thresholds(self) -> FloatArray:
        """The threshold in force at each item: the crediting pool's for a pool's label, the common pool's
        for every other item (null while cold)."""
        p, n = self.policy, len(self.f.score)
        theta = np.full(n, np.nan)
        if not n:
            return theta
        _, shares, _ = self._per_item()
        mech = self.mechanism
        common = ~((mech >= POOL_BASE + 1) | (mech == COLD))
        for start, end, rules in self.windows:
            w = slice(start, end)
            for k, rule in enumerate(rules):
                mine = (mech[w] == POOL_BASE + k) if k else common[w]
                if k == 0 and p.controller == "threshold":
                    theta[w][mine] = p.min_score
                elif not rule.cold and mine.any():
                    theta[w][mine] = rule.threshold(shares[k][w][mine], p.min_score)
        return theta

    def inclusion(self) -> FloatArray:
        """Every item's inclusion probability given the state before it:
        ``c (a + (1 - a) g (1 - prod_k (1 - p_k)))``."""
        p, n = self.policy, len(self.f.score)
        if not n:
            return np.zeros(0)
        t_bal, shares, free = self._per_item()
        none_picks = np.ones(n)
        for k in range(len(p.pools)):
            x, size = self.scores[k], self.size[k]
            if k == 0 and p.controller == "threshold":
                prob = (x > INELIGIBLE).astype(np.float64)
            else:
                c = shares[k] * size
                above, tied = self.above[k], self.tied[k]
                with np.errstate(divide="ignore", invalid="ignore"):
                    warm = np.where(tied > 0, np.clip((c - above) / tied, 0.0, 1.0), c > above)
                prob = np.where(size > 0, warm, np.minimum(1.0, shares[k]))
                prob[(x <= INELIGIBLE) | (self.base[k] <= 0)] = 0.0
                if k == 0:
                    prob[(self.cluster_taken < self.index) & (t_bal < self.diversity_yields)] = 0.0
            none_picks *= 1.0 - prob
        p_candidate = np.where(self.blocked | self._pending_ids(), 0.0, 1.0 - none_picks)
        a = p.audit_rate
        out: FloatArray = (self.tm >= free) * (a + (1.0 - a) * (t_bal >= 1.0) * p_candidate)
        return out

    def _pending_ids(self) -> BoolArray:
        """Items whose id is pending at their time, or was sent earlier in this batch and still is."""
        items, sent, sent_at, tm = self.state.pending.items, self.sent, self.sent_at, self.tm
        ids = self.f.ids
        out = np.zeros(len(ids), dtype=bool)
        hits = (items.keys() | sent.keys()) & set(ids) if items or sent else set()
        if not hits:
            return out
        replaced = self.replaced
        for j in [j for j, i in enumerate(ids) if i in hits]:
            i = ids[j]
            if i in sent_at and sent_at[i] < j:
                out[j] = sent[i][0] > tm[j]
            elif i in items and i not in replaced:
                out[j] = items[i][0] > tm[j]
        return out

    def _clusters(self, start: int, end: int) -> bool:
        """Diversity: the window's likely picks (critical balance within ``ln(oversample) / kappa`` of the
        set point) clustered into ``picks / oversample`` groups; each item of the window gets its nearest
        center. False when the mode is off or the items carry no embeddings."""
        p, f = self.policy, self.f
        m = p.over
        if m == 1.0 or f.vectors is None or end <= start:
            return False
        likely = np.flatnonzero(self.crit[0, start:end] < self.diversity_yields - 1.0)
        if not len(likely):
            return False
        x = f.vectors[start:end]
        if p.diversity_space == "gradient":
            assert f.probs is not None
            x = gradient_embedding(f.probs[start:end], x)
        u = uniforms(f.hashes[start + likely[:1]], p.seed, _CLUSTERS_STREAM)
        k = max(1, min(len(likely), math.floor(len(likely) / m + float(u[0]))))
        if p.diversity == "kcenter":
            centers = kcenter(x[likely], k, int(np.argmax(f.score[start + likely])))
        else:
            centers = kmeanspp(x[likely], k, uniforms(f.hashes[start + likely], p.seed, _SEEDING_STREAM))
        self.cluster[start:end] = assign(x, likely[centers])
        return True

    # -- the end ----------------------------------------------------------------------------------------

    def final_state(self) -> PartitionState:
        """The partition state once the batch is committed."""
        p, n, state = self.policy, len(self.f.score), self.state
        if not n:
            return state
        b = state.budget
        budget = BudgetState(
            self.ref[0],
            b.ledger.with_grants(self.caps.new, float(self.tm[-1])),
            b.items + n,
            b.labels + len(self.caps.new),
            n - 1 - self.ref_at[0],
        )
        reserved = list(enumerate(p.pools))[1:]
        pending = state.pending.with_sent(
            list(self.sent),
            [e for _, e in self.sent.values()],
            [x for x, _ in self.sent.values()],
            p.pending_max_items,
        ).expired(float(self.tm[-1]))
        return replace(
            state,
            budget=budget,
            balances={pool.name: Balance(self.ref[k], n - 1 - self.ref_at[k]) for k, pool in reserved},
            pending=pending,
            lost=self.lost[0],
            pool_lost={pool.name: self.lost[k] for k, pool in reserved},
        )
