"""One decision per item: accept, query, audit or skip.

For a batch of validated predictions, in this order:

1. **audit** — a uniform draw ``u(id) < audit_rate`` (deterministic per id), granted if the caps have room;
   covers confident items too, so the accuracy of auto-accepted predictions can be estimated without bias.
2. **accept** — ``max_c p_c >= accept_threshold[argmax_c p_c]``: published as a pseudo-label.
3. **query** — ``score >= query_threshold`` and the budget grants it (:mod:`selector.budget.token_bucket`).
4. **skip** — everything else.

Every decision carries its inclusion probability ``pi``, the probability that the item was sent to labeling
under this mechanism given the budget state: ``1`` for a query (and for an audit the budget would also have
queried), ``audit_rate`` otherwise. :meth:`Router.decide` never mutates; :meth:`Router.commit` applies a
decision's budget state once its records were delivered, so a crash re-decides the same items the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from selector.arrays import FloatArray, IntArray
from selector.budget import BudgetState, initial_state, spend
from selector.budget.token_bucket import Spend
from selector.config import HORIZONS_S, MEASURES, Config, Horizon
from selector.decode import Batch
from selector.draws import id_hashes, uniforms
from selector.scores import compute
from selector.stats import RouterStats

ROUTES = ("accept", "query", "audit", "skip")
ACCEPT, QUERY, AUDIT, SKIP = range(4)
_AUDIT_STREAM = 1


@dataclass(frozen=True)
class Decisions:
    """Decisions for one batch, as columns aligned with the batch rows."""

    route: np.ndarray  # int8 codes into ROUTES
    score: FloatArray
    scores: dict[str, FloatArray]
    predicted: IntArray
    confidence: FloatArray
    inclusion: FloatArray
    threshold: float
    state: BudgetState
    """the partition's budget state once these decisions are committed"""

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


class Router:
    """Scores and routes batches per input partition; holds each partition's budget state and the stats."""

    def __init__(self, config: Config, n_partitions: int = 1) -> None:
        self.config = config
        self.n_partitions = n_partitions
        self.stats = RouterStats(config.classes)
        self._thresholds = np.asarray(config.accept_thresholds(), dtype=np.float64)
        self._states: dict[int, BudgetState] = {}
        self.owned: set[int] = set(range(n_partitions))

    def assign(self, owned: set[int], n_partitions: int) -> None:
        """Declare the partitions this instance owns of the topic's ``n_partitions`` (cap shares follow)."""
        self.owned = set(owned)
        if n_partitions != self.n_partitions:
            self.n_partitions = n_partitions
            self._states = {
                p: BudgetState.from_dict(cap_limits(self.config.budget.caps, p, n_partitions), s.to_dict())
                for p, s in self._states.items()
            }

    def state(self, partition: int) -> BudgetState:
        """The committed budget state of a partition (fresh if never seen)."""
        found = self._states.get(partition)
        if found is None:
            found = initial_state(cap_limits(self.config.budget.caps, partition, self.n_partitions))
        return found

    def cap_remaining(self, now: float) -> dict[str, int]:
        """Cap headroom per horizon, summed over the partitions this instance owns."""
        total: dict[str, int] = dict.fromkeys(self.config.budget.caps, 0)
        for p in sorted(self.owned):
            for h, r in self.state(p).ledger.remaining(now).items():
                total[h] += r
        return total

    def decide(self, partition: int, batch: Batch, t: FloatArray) -> Decisions:
        """Decide every row of ``batch`` at times ``t`` (seconds); mutates nothing."""
        cfg = self.config
        probs = batch.probs
        scores = compute(probs, MEASURES)
        score = scores[cfg.scoring.measure]
        predicted: IntArray = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=np.int64)
        confidence: FloatArray = probs.max(axis=1) if len(probs) else np.zeros(0)
        accept = confidence >= self._thresholds[predicted]
        audit_rate = cfg.budget.audit_rate
        audit_draw = uniforms(id_hashes(batch.ids), cfg.budget.seed, _AUDIT_STREAM) < audit_rate
        candidate = ~accept & (score >= cfg.budget.query_threshold)
        s: Spend = spend(
            self.state(partition),
            t,
            candidate,
            audit_draw,
            rate=cfg.budget.rate,
            max_burst=cfg.budget.max_burst,
        )
        route = np.full(len(batch), SKIP, dtype=np.int8)
        route[accept] = ACCEPT
        route[s.query] = QUERY
        route[s.audit] = AUDIT
        inclusion = np.full(len(batch), audit_rate)
        inclusion[s.query | s.query_possible] = 1.0
        return Decisions(
            route, score, scores, predicted, confidence, inclusion, cfg.budget.query_threshold, s.state
        )

    def commit(self, partition: int, decisions: Decisions) -> None:
        """Apply a delivered batch's decisions: advance the partition's budget and count them."""
        self._states[partition] = decisions.state
        self.stats.record(decisions.route, decisions.score)
