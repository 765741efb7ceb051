"""One decision per item: accept, query, audit or skip.

For a batch of validated predictions, in this order:

1. **audit**: a uniform draw ``u(id) < audit_rate`` (deterministic per id), granted if the caps have room;
   it covers confident items too, so the accuracy of auto-accepted predictions can be estimated without bias.
2. **query**: chosen by the spending controller (:mod:`selector.budget.controller`): an exploration pick,
   or an informative item (scored by :mod:`selector.scoring`) a pool's streaming-quantile threshold
   selects, granted by the token gate and caps.
3. **accept**: ``max_c p_c >= accept_threshold[argmax_c p_c]`` on the calibrated probabilities (and so for
   every detection box, and a committee's agreement with the predicted class when one is required):
   published as a pseudo-label.
4. **skip**: everything else.

Every decision carries its inclusion probability (see the controller). :meth:`Router.decide` never mutates;
:meth:`Router.commit` applies a decision's state once its records were delivered, so a crash re-decides the
same items the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from selector.arrays import BoolArray, FloatArray, IntArray
from selector.budget.controller import (
    AUDIT as MECH_AUDIT,
)
from selector.budget.controller import (
    COLD,
    POOL_BASE,
    Features,
    Outcome,
    PartitionState,
    Policy,
    Pool,
    chunk_items,
    initial_partition,
)
from selector.budget.controller import decide as control
from selector.calibration import apply_temperature
from selector.config import HORIZONS_S, Config, Horizon
from selector.decode import Batch
from selector.draws import id_hashes
from selector.scores import committee
from selector.scoring import Inputs, Scored, Scorer, ScoringState, box_aggregate, shape_groups
from selector.stats import RouterStats

ROUTES = ("accept", "query", "audit", "skip")
ACCEPT, QUERY, AUDIT, SKIP = range(4)


@dataclass(frozen=True)
class Decisions:
    """Decisions for one batch, as columns aligned with the batch rows."""

    route: np.ndarray  # int8 codes into ROUTES
    score: FloatArray
    scores: dict[str, FloatArray]
    predicted: IntArray
    confidence: FloatArray
    eligible: BoolArray
    """met the auto-accept rule (accepted unless chosen for labeling; audits of these rate auto-accept)"""
    inclusion: FloatArray
    threshold: FloatArray
    selected_by: list[str | None]
    """why a labeled item was chosen: audit, exploration, or its pool (uncertainty, class:..., segment:...)"""
    state: PartitionState
    """the partition's state once these decisions are committed"""
    memory: ScoringState
    """the partition's scoring memory once these decisions are committed"""
    shortfall: dict[str, float] = field(default_factory=dict)
    """budget credit lost in this batch, in labels, by reason (see the controller)"""
    model_switches: list[tuple[str | None, str]] = field(default_factory=list)
    """(old, new) model versions that restarted the partition's windows in this batch"""

    def __len__(self) -> int:
        return len(self.route)

    def counts(self) -> dict[str, int]:
        """Number of items per route."""
        bins = np.bincount(self.route, minlength=len(ROUTES))
        return {name: int(bins[i]) for i, name in enumerate(ROUTES)}


def cap_limits(
    caps: Mapping[Horizon, int], partition: int, n_partitions: int
) -> dict[str, tuple[float, int]]:
    """The share of every cap that belongs to one partition: the caps split by largest remainder.

    The shares of all partitions add up to the cap exactly, so instances that own disjoint partitions can
    never exceed it together.
    """
    out: dict[str, tuple[float, int]] = {}
    for horizon, cap in caps.items():
        share = cap // n_partitions + (1 if partition < cap % n_partitions else 0)
        out[horizon] = (HORIZONS_S[horizon], share)
    return out


def policy_of(config: Config) -> Policy:
    """The controller's policy from the configuration."""
    b = config.budget
    pools = [Pool("uncertainty", "common", 1.0)]
    pools += [
        Pool(f"class:{c}", "class", share, config.classes.index(c)) for c, share in b.class_shares.items()
    ]
    pools += [Pool(f"segment:{g}", "segment", share, g) for g, share in b.segment_shares.items()]
    if b.exploration > 0:
        pools.append(Pool("exploration", "exploration", b.exploration))
    return Policy(
        rate=b.rate,
        audit_rate=b.audit_rate,
        pools=tuple(pools),
        controller=b.controller,
        min_score=b.query_threshold,
        window_items=b.window_items,
        max_burst=b.max_burst,
        seed=b.seed,
        pending_ttl_s=config.pending.ttl_s,
        dedup_distance=config.pending.dedup_distance,
        pending_max_items=config.pending.max_items,
        diversity=config.diversity.mode,
        diversity_space=config.diversity.space,
        oversample=config.diversity.oversample,
    )


class Router:
    """Scores and routes batches per input partition; holds each partition's state and the stats."""

    def __init__(self, config: Config, n_partitions: int = 1) -> None:
        self.n_partitions = n_partitions
        self.stats = RouterStats(config.classes)
        self._states: dict[int, PartitionState] = {}
        self._memory: dict[int, ScoringState] = {}
        self.owned: set[int] = set(range(n_partitions))
        self.configure(config)

    def configure(self, config: Config) -> None:
        """Apply a (new) configuration; every partition's state is kept, re-shaped to the new policy."""
        self.config = config
        self.policy = policy_of(config)
        self._thresholds = np.asarray(config.accept_thresholds(), dtype=np.float64)
        names = {MECH_AUDIT: "audit", COLD: "cold_start"}
        self._mechanisms: list[str | None] = [names.get(i) for i in range(POOL_BASE)]
        self._mechanisms += [p.name for p in self.policy.pools]
        self._states = {p: self._restore(p, s.to_dict()) for p, s in self._states.items()}
        self.scorer = Scorer(config)
        self._memory = {p: self.scorer.restore(m.to_dict()) for p, m in self._memory.items()}

    def _limits(self, partition: int) -> dict[str, tuple[float, int]]:
        return cap_limits(self.config.budget.caps, partition, self.n_partitions)

    def _restore(self, partition: int, snapshot: dict[str, Any]) -> PartitionState:
        return PartitionState.from_dict(self.policy, self._limits(partition), snapshot)

    def assign(self, owned: set[int], n_partitions: int) -> None:
        """Declare the partitions this instance owns of the topic's ``n_partitions`` (cap shares follow)."""
        self.owned = set(owned)
        if n_partitions != self.n_partitions:
            self.n_partitions = n_partitions
            self._states = {p: self._restore(p, s.to_dict()) for p, s in self._states.items()}

    def state(self, partition: int) -> PartitionState:
        """The committed state of a partition (fresh if never seen)."""
        found = self._states.get(partition)
        if found is None:
            found = initial_partition(self.policy, self._limits(partition))
        return found

    def scoring_state(self, partition: int) -> ScoringState:
        """The committed scoring memory of a partition (empty if never seen)."""
        found = self._memory.get(partition)
        return found if found is not None else self.scorer.initial()

    def snapshot(self, partition: int) -> dict[str, Any]:
        """Plain-data state of a partition, for the state topic."""
        out = self.state(partition).to_dict()
        if self.scorer.stateful:
            out["scoring"] = self.scoring_state(partition).to_dict()
        return out

    def restore(self, partition: int, snapshot: dict[str, Any]) -> None:
        """Adopt a snapshot taken by this or another instance."""
        self._states[partition] = self._restore(partition, snapshot)
        self._memory[partition] = self.scorer.restore(snapshot.get("scoring"))

    def forget(self, partition: int) -> None:
        """Drop a partition's state (it was revoked; its new owner restores it from the state topic)."""
        self._states.pop(partition, None)
        self._memory.pop(partition, None)

    def labels_received(self, ids: list[str]) -> None:
        """Labels arrived for these ids: they are no longer pending in any owned partition."""
        for p, s in self._states.items():
            pending = s.pending.without(ids)
            if pending is not s.pending:
                self._states[p] = replace(s, pending=pending)

    def pending_count(self) -> int:
        """Items sent for labeling and not yet labeled (nor expired), over owned partitions."""
        return sum(len(self._states[p].pending) for p in self.owned if p in self._states)

    def cap_remaining(self, now: float) -> dict[str, int]:
        """Cap headroom per horizon, summed over the partitions this instance owns."""
        total: dict[str, int] = dict.fromkeys(self.config.budget.caps, 0)
        for p in sorted(self.owned):
            for h, r in self.state(p).budget.ledger.remaining(now).items():
                total[h] += r
        return total

    def query_thresholds(self) -> dict[str, float]:
        """Threshold per pool at its base share, averaged over owned partitions (for the metrics); the share
        in force moves around it with the pool's balance."""
        out: dict[str, float] = {}
        base = self.policy.base_shares()
        for k, pool in enumerate(self.policy.pools):
            thetas = [
                float(self.state(p).rules[pool.name].threshold(base[k : k + 1], self.policy.min_score)[0])
                for p in sorted(self.owned)
            ]
            finite = [t for t in thetas if np.isfinite(t)]
            out[pool.name] = float(np.mean(finite)) if finite else float("nan")
        return out

    def inputs(self, batch: Batch) -> Inputs:
        """The batch's columns as scoring reads them, probabilities (and boxes) calibrated."""
        t = self.config.calibration.temperature
        return Inputs(
            apply_temperature(batch.probs, t),
            batch.samples,
            batch.committee,
            [b if b is None or t == 1.0 else apply_temperature(b, t) for b in batch.detections],
            batch.predicted_loss if len(batch.predicted_loss) == len(batch) else None,
            batch.cost if len(batch.cost) == len(batch) else None,
            batch.vectors,
        )

    def _accept(self, x: Inputs, predicted: IntArray, confidence: FloatArray) -> BoolArray:
        """Confident enough to auto-accept: the item, each of its boxes, and its committee's agreement."""
        accept: BoolArray = confidence >= self._thresholds[predicted]
        if any(d is not None for d in x.detections):
            rows, box_ok = box_aggregate(
                x.detections,
                lambda p: (p.max(axis=1) >= self._thresholds[p.argmax(axis=1)]).astype(np.float64),
                "min",
            )
            accept[rows] &= box_ok > 0
        need = self.config.accept.committee_agreement
        if need > 0 and any(c is not None for c in x.committee):
            agree = np.full(len(x), np.nan)
            for rows_k, members in shape_groups(x.committee):
                agree[rows_k] = committee.agreement(members, predicted[rows_k])
            accept &= ~(agree < need)  # NaN (no committee) does not hold an item back
        return accept

    def decide(self, partition: int, batch: Batch, t: FloatArray) -> Decisions:
        """Decide every row of ``batch`` at times ``t`` (seconds); mutates nothing."""
        x = self.inputs(batch)
        n = len(batch)
        predicted: IntArray = x.probs.argmax(axis=1) if n else np.zeros(0, dtype=np.int64)
        confidence: FloatArray = x.probs.max(axis=1) if n else np.zeros(0)
        accept = self._accept(x, predicted, confidence)
        segment = (
            np.asarray(batch.segment, dtype=object)
            if self.config.budget.segment_shares
            else np.empty(0, dtype=object)
        )
        hashes = batch.hashes if len(batch.hashes) == n else id_hashes(batch.ids)
        t = np.asarray(t, dtype=np.float64)
        embeddings = batch.embedding or [None] * n
        state, memory = self.state(partition), self.scoring_state(partition)
        parts: list[tuple[Scored, Outcome]] = []
        i = 0
        while i < n or not parts:
            # stateful scoring advances every chunk_items of the partition (absolute positions, whatever the
            # controller's windows do), so batch cuts change nothing
            chunk = chunk_items(self.policy)
            end = min(n, i + chunk - state.budget.items % chunk) if self.scorer.stateful else n
            rows = x.rows(i, end)
            scored = self.scorer.score(memory, rows)
            features = Features(
                scored.score,
                predicted[i:end],
                segment[i:end],
                accept[i:end],
                hashes[i:end],
                t[i:end],
                batch.ids[i:end],
                embeddings[i:end],
                rows.vectors,
                rows.probs,
                batch.model[i:end] if batch.model else None,
            )
            out = control(self.policy, state, features)
            state = out.state
            boundary = state.budget.items % chunk == 0
            memory = self.scorer.advance(memory, rows, scored, out.query | out.audit, hashes[i:end], boundary)
            parts.append((scored, out))
            i = end
        route = np.full(n, SKIP, dtype=np.int8)
        route[accept] = ACCEPT
        route[np.concatenate([o.query for _, o in parts])] = QUERY
        route[np.concatenate([o.audit for _, o in parts])] = AUDIT
        mechanisms = self._mechanisms
        selected_by = [mechanisms[m] for _, o in parts for m in o.mechanism.tolist()]
        return Decisions(
            route,
            np.concatenate([sc.score for sc, _ in parts]),
            {k: np.concatenate([sc.scores[k] for sc, _ in parts]) for k in parts[0][0].scores},
            predicted,
            confidence,
            accept,
            np.concatenate([o.inclusion for _, o in parts]),
            np.concatenate([o.threshold for _, o in parts]),
            selected_by,
            state,
            memory,
            _summed([o.shortfall for _, o in parts]),
            [sw for _, o in parts for sw in o.model_switches],
        )

    def commit(self, partition: int, decisions: Decisions) -> None:
        """Apply a delivered batch's decisions: advance the partition's state and count them."""
        self._states[partition] = decisions.state
        self._memory[partition] = decisions.memory
        self.stats.record(decisions.route, decisions.score, decisions.predicted)
        self.stats.record_budget(decisions.shortfall, len(decisions.model_switches))


def _summed(parts: list[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for d in parts:
        for k, v in d.items():
            out[k] = out.get(k, 0.0) + v
    return out
