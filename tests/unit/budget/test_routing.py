"""Specification of the router: one route per item, its precedence, inclusion probabilities, decide/commit."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selector.arrays import FloatArray
from selector.budget.walk import _AUDIT_STREAM as AUDIT_STREAM
from selector.budget.walk import _POOL_STREAM_BASE as COMMON_POOL_STREAM  # the common pool is pool 0
from selector.config import Config, parse_config
from selector.draws import id_hashes, uniforms
from selector.messages.prediction import Batch
from selector.routing import ACCEPT, AUDIT, QUERY, ROUTES, SKIP, Decisions, Router

CLASSES = ["ok", "scratch", "dent"]
CONFIDENT = [0.97, 0.02, 0.01]  # accepted at the default threshold 0.9
UNCERTAIN = [0.34, 0.33, 0.33]  # entropy ~1: a query candidate
MIDDLING = [0.85, 0.14, 0.01]  # neither confident enough nor above the floor query_threshold 0.6


def config(**budget: Any) -> Config:
    """Rate 1 and no caps unless overridden, so only the rule under test decides.

    At rate 1 without audits the quantile controller selects every item above the floor 0.6 (its cold-start
    rule selects with probability 1, its quantile at rate 1 is the lowest eligible score).
    """
    b = {"rate": 1.0, "max_burst": 1000.0, "caps": {}, "audit_rate": 0.0, "query_threshold": 0.6, **budget}
    return parse_config({"classes": CLASSES, "accept": {"default_threshold": 0.9}, "budget": b})


def batch(rows: list[list[float]], ids: list[str] | None = None) -> Batch:
    n = len(rows)
    ids = ids if ids is not None else [f"item-{i}" for i in range(n)]
    return Batch(
        position=np.arange(n, dtype=np.int64),
        ids=ids,
        probs=np.asarray(rows, dtype=np.float64).reshape(n, len(CLASSES)),
        ts_s=np.zeros(n),
        model=[None] * n,
        segment=[None] * n,
        payload=[None] * n,
        meta=[None] * n,
    )


def ids_by_audit_draw(cfg: Config, audited: bool, count: int, pool_below: float = 1.0) -> list[str]:
    """Ids whose deterministic audit draw is (or is not) below the audit rate, and whose common-pool draw is
    below ``pool_below`` (so the pool selects them when its selection probability is at least that)."""
    out: list[str] = []
    k = 0
    while len(out) < count:
        rid = f"id-{k}"
        h = id_hashes([rid])
        drawn = uniforms(h, cfg.budget.seed, AUDIT_STREAM)[0] < cfg.budget.audit_rate
        picked = uniforms(h, cfg.budget.seed, COMMON_POOL_STREAM)[0] < pool_below
        if drawn == audited and picked:
            out.append(rid)
        k += 1
    return out


def routes(d: Decisions) -> list[str]:
    return [ROUTES[r] for r in d.route.tolist()]


class TestRoutePrecedence:
    def test_route_codes_match_names(self) -> None:
        """The integer codes index ROUTES, which the stats and metrics use as label values."""
        assert [ROUTES[c] for c in (ACCEPT, QUERY, AUDIT, SKIP)] == ["accept", "query", "audit", "skip"]

    def test_each_kind_of_item_gets_its_route(self) -> None:
        """Confident -> accept, informative -> query, neither -> skip (no audits, no binding budget)."""
        d = Router(config()).decide(0, batch([CONFIDENT, UNCERTAIN, MIDDLING]), np.zeros(3))
        assert routes(d) == ["accept", "query", "skip"]

    def test_audit_comes_first(self) -> None:
        """An audit draw wins over accept, query and skip alike, so audits are uniform over all items."""
        cfg = config(audit_rate=0.5)
        ids = ids_by_audit_draw(cfg, audited=True, count=3)
        d = Router(cfg).decide(0, batch([CONFIDENT, UNCERTAIN, MIDDLING], ids), np.zeros(3))
        assert routes(d) == ["audit", "audit", "audit"]

    def test_query_beats_accept(self) -> None:
        """A confident item is a query candidate like any other: with the floor at 0 and the budget to spare
        it is queried, and it still says that it met the accept rule."""
        d = Router(config(query_threshold=0.0)).decide(0, batch([CONFIDENT, MIDDLING]), np.zeros(2))
        assert routes(d) == ["query", "query"]
        assert d.eligible.tolist() == [True, False]

    def test_query_needs_the_budget(self) -> None:
        """An informative item the controller selects is skipped when the token gate has no token.

        The threshold controller makes every item above the floor a candidate; at rate 0.01 with a burst of
        one token only the first candidate is paid for.
        """
        cfg = config(rate=0.01, audit_rate=0.0, max_burst=1.0, controller="threshold")
        d = Router(cfg).decide(0, batch([UNCERTAIN] * 3), np.zeros(3))
        assert routes(d) == ["query", "skip", "skip"]
        assert d.selected_by == ["uncertainty", None, None]

    def test_audit_blocked_by_the_cap_falls_back_to_the_other_routes(self) -> None:
        """When the caps are full, an audited item is routed as if it had not been drawn (never queried)."""
        cfg = config(audit_rate=0.5, caps={"hour": 1})
        ids = ids_by_audit_draw(cfg, audited=True, count=3)
        d = Router(cfg).decide(0, batch([UNCERTAIN, CONFIDENT, UNCERTAIN], ids), np.zeros(3))
        assert routes(d) == ["audit", "accept", "skip"]

    def test_accept_uses_the_threshold_of_the_predicted_class(self) -> None:
        """Per-class thresholds: 0.7 on 'dent' passes dent's 0.6 but not the default 0.9 of 'ok'."""
        cfg = parse_config(
            {
                "classes": CLASSES,
                "accept": {"default_threshold": 0.9, "thresholds": {"dent": 0.6}},
                "budget": {"rate": 1.0, "audit_rate": 0.0, "query_threshold": 1.0, "caps": {}},
            }
        )
        d = Router(cfg).decide(0, batch([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7], [0.1, 0.35, 0.55]]), np.zeros(3))
        assert routes(d) == ["skip", "accept", "skip"]
        assert d.predicted.tolist() == [0, 2, 2]

    def test_threshold_is_inclusive(self) -> None:
        """Confidence equal to the threshold is accepted (>=)."""
        d = Router(config()).decide(0, batch([[0.9, 0.05, 0.05]]), np.zeros(1))
        assert routes(d) == ["accept"]

    def test_empty_batch(self) -> None:
        """An empty batch decides nothing and leaves the budget as it was."""
        router = Router(config())
        d = router.decide(0, batch([]), np.zeros(0))
        assert len(d) == 0
        assert d.counts() == dict.fromkeys(ROUTES, 0)


class TestInclusionProbability:
    def test_query_has_audit_plus_pool_probability_others_the_audit_rate(self) -> None:
        """pi = a + (1 - a) p: at rate 1 a fresh balance makes the cold common pool's share exceed 1, so an
        uncertain item is picked with p = 1; items under the floor can only be sent by the audit draw."""
        cfg = config(audit_rate=0.25)
        ids = ids_by_audit_draw(cfg, audited=False, count=3)
        d = Router(cfg).decide(0, batch([CONFIDENT, UNCERTAIN, MIDDLING], ids), np.zeros(3))
        assert routes(d) == ["accept", "query", "skip"]
        assert d.inclusion.tolist() == [0.25, 1.0, 0.25]

    def test_audit_counts_both_ways_an_item_could_have_been_sent(self) -> None:
        """An audited uncertain item could also have been queried (a + (1 - a) p, here p = 1); one under the
        floor not (a)."""
        cfg = config(audit_rate=0.25)
        ids = ids_by_audit_draw(cfg, audited=True, count=2)
        d = Router(cfg).decide(0, batch([UNCERTAIN, CONFIDENT], ids), np.zeros(2))
        assert routes(d) == ["audit", "audit"]
        assert d.selected_by == ["audit", "audit"]
        assert d.inclusion.tolist() == [1.0, 0.25]

    def test_a_closed_gate_leaves_only_the_audit_chance(self) -> None:
        """The probability is the item's chance given the state before it: the first candidate finds a token
        (pi = a + (1 - a) 1), the second arrives with the balance at 0.01 tokens, when only an audit could
        have sent it (pi = a); it is skipped."""
        cfg = config(rate=0.01, audit_rate=0.005, max_burst=1.0, controller="threshold")
        ids = ids_by_audit_draw(cfg, audited=False, count=2)
        d = Router(cfg).decide(0, batch([UNCERTAIN, UNCERTAIN], ids), np.zeros(2))
        assert routes(d) == ["query", "skip"]
        assert d.inclusion.tolist() == pytest.approx([1.0, 0.005])


class TestDecideAndCommit:
    def test_decide_does_not_mutate_the_router(self) -> None:
        """Deciding twice gives the same decisions: neither budget state nor stats moved."""
        router = Router(config(rate=0.3, caps={"hour": 4}))
        b = batch([UNCERTAIN] * 10)
        before = router.state(0).to_dict()
        one = router.decide(0, b, np.arange(10.0))
        two = router.decide(0, b, np.arange(10.0))
        np.testing.assert_array_equal(one.route, two.route)
        assert router.state(0).to_dict() == before
        assert router.stats.total == 0

    def test_commit_advances_the_state(self) -> None:
        """After commit, the next decision starts from the committed state (the cap is now used)."""
        router = Router(config(caps={"hour": 2}))
        first = router.decide(0, batch([UNCERTAIN] * 2), np.zeros(2))
        router.commit(0, first)
        assert router.state(0) is first.state
        second = router.decide(0, batch([UNCERTAIN] * 2), np.ones(2))
        assert routes(first) == ["query", "query"]
        assert routes(second) == ["skip", "skip"]

    def test_uncommitted_decision_is_re_decided_the_same_way(self) -> None:
        """A crash before commit re-decides the same items identically."""
        router = Router(config(rate=0.2, audit_rate=0.1, caps={"minute": 3}))
        rows = [UNCERTAIN, CONFIDENT, MIDDLING, UNCERTAIN] * 5
        router.commit(0, router.decide(0, batch(rows), np.arange(20.0)))
        b2 = batch(rows, [f"later-{i}" for i in range(20)])
        lost = router.decide(0, b2, np.arange(20.0, 40.0))
        again = router.decide(0, b2, np.arange(20.0, 40.0))
        np.testing.assert_array_equal(lost.route, again.route)
        np.testing.assert_array_equal(lost.inclusion, again.inclusion)

    def test_same_input_same_decisions_in_another_instance(self) -> None:
        """Two routers with the same config decide the same (draws depend on id and seed, not on history)."""
        cfg = config(rate=0.3, audit_rate=0.1, caps={"hour": 5})
        rows = [UNCERTAIN, CONFIDENT, MIDDLING] * 10
        a = Router(cfg).decide(0, batch(rows), np.arange(30.0))
        b = Router(cfg).decide(0, batch(rows), np.arange(30.0))
        np.testing.assert_array_equal(a.route, b.route)
        np.testing.assert_array_equal(a.inclusion, b.inclusion)

    def test_partitions_have_separate_states(self) -> None:
        """Committing on one partition does not spend another partition's budget."""
        router = Router(config(caps={"hour": 2}), n_partitions=2)
        router.commit(0, router.decide(0, batch([UNCERTAIN]), np.zeros(1)))
        assert routes(router.decide(1, batch([UNCERTAIN]), np.zeros(1))) == ["query"]
        assert router.state(0).budget.labels == 1
        assert router.state(1).budget.labels == 0

    def test_stats_count_the_committed_routes(self) -> None:
        """After commits, the stats hold exactly the summed route counts and the score total."""
        router = Router(config(rate=0.3, audit_rate=0.1, caps={"hour": 6}))
        expected = dict.fromkeys(ROUTES, 0)
        score_sum = 0.0
        for k in range(5):
            rows = [UNCERTAIN, CONFIDENT, MIDDLING] * 4
            d = router.decide(0, batch(rows, [f"b{k}-{i}" for i in range(12)]), np.full(12, float(k)))
            router.commit(0, d)
            for name, count in d.counts().items():
                expected[name] += count
            score_sum += float(d.score.sum())
        assert router.stats.items == expected
        assert router.stats.total == 60
        assert router.stats.score_sum == pytest.approx(score_sum)
        assert int(router.stats.score_bucket_counts.sum()) == 60

    def test_decisions_record_every_measure_and_the_configured_one(self) -> None:
        """Every measure is computed; the deciding score is the configured measure."""
        d = Router(config()).decide(0, batch([CONFIDENT, UNCERTAIN]), np.zeros(2))
        assert set(d.scores) == {"least_confidence", "margin", "ratio", "entropy"}
        np.testing.assert_array_equal(d.score, d.scores["entropy"])

    def test_threshold_column_is_the_common_pools_threshold_per_item(self) -> None:
        """The threshold controller's threshold is the floor; a cold quantile pool has none yet (NaN, written
        as null), and its picks say they are cold-start picks."""
        rows = batch([CONFIDENT, UNCERTAIN])
        fixed = Router(config(controller="threshold")).decide(0, rows, np.zeros(2))
        cold = Router(config()).decide(0, rows, np.zeros(2))
        assert fixed.threshold.tolist() == [0.6, 0.6]
        assert np.isnan(cold.threshold).all()
        assert cold.selected_by == [None, "cold_start"]


def _hour_violations(times: FloatArray, cap: int) -> int:
    return sum(1 for end in times if np.sum((times > end - 3600.0) & (times <= end)) > cap)


class TestHardCapThroughTheRouter:
    @settings(max_examples=30, deadline=None)
    @given(
        st.integers(1, 8),
        st.integers(1, 3),
        st.lists(st.tuples(st.integers(1, 40), st.floats(0, 1800)), min_size=1, max_size=25),
    )
    def test_hourly_cap_is_never_exceeded_over_many_batches(
        self, cap: int, n_partitions: int, batches: list[tuple[int, float]]
    ) -> None:
        """Labels (queries and audits) in any sliding hour never exceed the cap, over all partitions."""
        cfg = config(rate=0.5, audit_rate=0.2, caps={"hour": cap})
        router = Router(cfg, n_partitions=n_partitions)
        now, labeled = 0.0, []
        for k, (size, advance) in enumerate(batches):
            now += advance
            p = k % n_partitions
            d = router.decide(
                p,
                batch([UNCERTAIN, CONFIDENT] * size, [f"i{k}-{i}" for i in range(2 * size)]),
                np.full(2 * size, now),
            )
            router.commit(p, d)
            labeled += [now] * int(np.sum((d.route == QUERY) | (d.route == AUDIT)))
        assert _hour_violations(np.asarray(labeled), cap) == 0

    def test_cap_remaining_sums_the_owned_partitions(self) -> None:
        """Headroom reported for metrics is the sum of the owned partitions' shares minus their use."""
        router = Router(config(caps={"hour": 5}), n_partitions=2)  # shares 3 and 2
        router.commit(0, router.decide(0, batch([UNCERTAIN] * 2), np.zeros(2)))
        assert router.cap_remaining(1.0) == {"hour": 3}
        router.assign({1}, 2)
        assert router.cap_remaining(1.0) == {"hour": 2}

    def test_reassignment_with_more_partitions_reshares_the_cap(self) -> None:
        """When the partition count changes, each state is restored under its new share with its grants."""
        router = Router(config(caps={"hour": 4}), n_partitions=1)
        router.commit(0, router.decide(0, batch([UNCERTAIN] * 4), np.zeros(4)))
        router.assign({0, 1}, 2)  # shares 2 and 2: partition 0 is already full
        assert routes(router.decide(0, batch([UNCERTAIN]), np.ones(1))) == ["skip"]
        assert routes(router.decide(1, batch([UNCERTAIN]), np.ones(1))) == ["query"]
