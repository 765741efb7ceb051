"""The Prometheus collector: every documented metric exists from the first scrape, initialised to zero."""

from __future__ import annotations

import math

import numpy as np
import orjson
from prometheus_client import CollectorRegistry

import selector
from connectors.monitor.loop import Monitor
from connectors.monitor.metrics import DEAD_LETTER_STAGES, SelectorCollector, monitor_part
from selector.config import parse_config
from selector.messages.prediction import decode_batch
from selector.stats import SCORE_BUCKETS

REQUIRED = (
    "selector_items_total",
    "selector_dead_letters_total",
    "selector_budget_target_ratio",
    "selector_budget_cap_remaining",
    "selector_budget_shortfall_labels_total",
    "selector_model_switches_total",
    "selector_threshold",
    "selector_score_bucket",
    "selector_batch_seconds_bucket",
    "selector_consumer_lag_messages",
    "selector_build_info",
)


def registry_for(monitor: Monitor) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(SelectorCollector(monitor, clock=lambda: 1_800_000_000.0))
    return registry


class TestCollector:
    def test_building_a_monitor_touches_no_network_and_every_metric_is_exported(self) -> None:
        """A monitor pointed at an address nobody serves still exports every metric with zeroed labels."""
        cfg = parse_config(
            {"budget": {"caps": {"hour": 100, "day": 500}}, "accept": {"thresholds": {"crack": 0.995}}}
        )
        monitor = Monitor(cfg, "127.0.0.1:9")
        monitor.assigned = {0, 1}
        reg = registry_for(monitor)
        names = {s.name for m in reg.collect() for s in m.samples}
        assert set(REQUIRED) <= names
        for route in ("accept", "query", "audit", "skip"):
            assert reg.get_sample_value("selector_items_total", {"route": route}) == 0
        for stage in ("decode", "score", "encode", "produce"):
            assert reg.get_sample_value("selector_dead_letters_total", {"stage": stage}) == 0
        assert reg.get_sample_value("selector_consumer_lag_messages", {"partition": "1"}) == 0
        assert reg.get_sample_value("selector_budget_target_ratio") == 0.02
        for reason in ("floor", "cap"):
            assert reg.get_sample_value("selector_budget_shortfall_labels_total", {"reason": reason}) == 0
        assert reg.get_sample_value("selector_threshold", {"class": "crack", "kind": "accept"}) == 0.995
        for name in cfg.classes:  # a fresh partition's quantile pool has no threshold yet
            assert math.isnan(reg.get_sample_value("selector_threshold", {"class": name, "kind": "query"}))
        info = {"version": selector.__version__, "config_hash": cfg.config_hash()}
        assert reg.get_sample_value("selector_build_info", info) == 1.0

    def test_every_reserved_pool_has_its_shortfall_series_from_the_first_scrape(self) -> None:
        """A class share, a segment share and an exploration share each get a pool:<name> reason at 0,
        beside floor and cap, in the metric and in /api/status's budget section."""
        cfg = parse_config(
            {
                "budget": {
                    "class_shares": {"crack": 0.2},
                    "segment_shares": {"line-2": 0.1},
                    "exploration": 0.05,
                }
            }
        )
        monitor = Monitor(cfg, "127.0.0.1:9")
        reg = registry_for(monitor)
        reasons = {"floor", "cap", "pool:class:crack", "pool:segment:line-2", "pool:exploration"}
        for reason in reasons:
            assert reg.get_sample_value("selector_budget_shortfall_labels_total", {"reason": reason}) == 0
        assert set(monitor_part(monitor).status()["budget"]["shortfall"]) == reasons

    def test_dead_letters_by_stage_count_every_stage_in_metric_and_status(self) -> None:
        """Records dead-lettered at score and produce count under their stage; the other stages stay at 0."""
        monitor = Monitor(parse_config({}), "127.0.0.1:9")
        monitor.router.stats.record_dead_letters("score", ["score_error"] * 2)
        monitor.router.stats.record_dead_letters("produce", ["output_too_large"])
        reg = registry_for(monitor)
        got = {
            s: reg.get_sample_value("selector_dead_letters_total", {"stage": s}) for s in DEAD_LETTER_STAGES
        }
        assert got == {"decode": 0, "score": 2, "encode": 0, "produce": 1}
        assert monitor_part(monitor).status()["dead_letters"] == got

    def test_cap_remaining_sums_the_owned_partitions_shares(self) -> None:
        """Owning 2 of 4 partitions, an instance may spend those 2 shares of each cap (largest remainder)."""
        cfg = parse_config({"budget": {"caps": {"hour": 10, "day": 3}}})
        monitor = Monitor(cfg, "127.0.0.1:9")
        monitor.router.assign({0, 3}, 4)
        reg = registry_for(monitor)
        assert reg.get_sample_value("selector_budget_cap_remaining", {"horizon": "hour"}) == 3 + 2
        assert reg.get_sample_value("selector_budget_cap_remaining", {"horizon": "day"}) == 1 + 0

    def test_a_binding_cap_is_counted_as_the_reason_of_the_shortfall(self) -> None:
        """Rate 0.5 with a cap of 3 an hour, 400 items within the hour: the cap holds all but 3 labels back,
        and the budget credit lost while it binds is counted under reason=cap, none under floor."""
        cfg = parse_config({"budget": {"rate": 0.5, "audit_rate": 0.0, "caps": {"hour": 3}}})
        monitor = Monitor(cfg, "127.0.0.1:9")
        values = [b'{"id": "c%d", "probs": [0.4, 0.3, 0.2, 0.1]}' % i for i in range(400)]
        batch = decode_batch(values, np.zeros(400, dtype=np.int64), n_classes=4)
        decisions = monitor.router.decide(0, batch, 1_800_000_000.0 + np.arange(400.0))
        monitor.router.commit(0, decisions)
        reg = registry_for(monitor)
        assert decisions.counts()["query"] == 3
        lost = reg.get_sample_value("selector_budget_shortfall_labels_total", {"reason": "cap"})
        # 0.5 x 400 credited, 3 spent, at most max_burst (10) still held as balance
        assert 200 - 3 - 10 <= lost <= 200 - 3
        assert reg.get_sample_value("selector_budget_shortfall_labels_total", {"reason": "floor"}) == 0

    def test_counters_and_score_histogram_follow_committed_decisions(self) -> None:
        """After one committed batch the route counters and the score histogram count exactly its items."""
        cfg = parse_config({})
        monitor = Monitor(cfg, "127.0.0.1:9")
        values = [b'{"id": "a%d", "probs": [0.4, 0.3, 0.2, 0.1]}' % i for i in range(50)]
        batch = decode_batch(values, np.zeros(50, dtype=np.int64), n_classes=4)
        decisions = monitor.router.decide(0, batch, np.full(50, 1_800_000_000.0))
        reg = registry_for(monitor)
        assert reg.get_sample_value("selector_score_count") == 0  # deciding alone changes nothing
        monitor.router.commit(0, decisions)
        counts = decisions.counts()
        for route, n in counts.items():
            assert reg.get_sample_value("selector_items_total", {"route": route}) == n
        assert reg.get_sample_value("selector_score_count") == 50
        assert reg.get_sample_value("selector_score_bucket", {"le": "+Inf"}) == 50
        below = sum(decisions.score <= SCORE_BUCKETS[9])
        assert reg.get_sample_value("selector_score_bucket", {"le": repr(SCORE_BUCKETS[9])}) == below

    def test_query_threshold_is_the_live_threshold_of_each_class_pool(self) -> None:
        """kind=query exports Router.query_thresholds(): a class with a reserved share shows its own pool's
        threshold, every other class the common pool's."""
        cfg = parse_config({"budget": {"rate": 0.1, "class_shares": {"crack": 0.3}}})
        monitor = Monitor(cfg, "127.0.0.1:9")
        rng = np.random.default_rng(3)
        raw = rng.dirichlet([1.0, 1.0, 1.0, 1.0], size=600)
        values = [orjson.dumps({"id": f"m{i}", "probs": (p / p.sum()).tolist()}) for i, p in enumerate(raw)]
        batch = decode_batch(values, np.zeros(600, dtype=np.int64), n_classes=4)
        monitor.router.commit(0, monitor.router.decide(0, batch, np.full(600, 1_800_000_000.0)))
        live = monitor.router.query_thresholds()
        assert set(live) == {"uncertainty", "class:crack"}
        assert all(0.0 < v < 1.0 for v in live.values())  # past the cold start: real quantiles
        reg = registry_for(monitor)
        for name in cfg.classes:
            pool = "class:crack" if name == "crack" else "uncertainty"
            assert reg.get_sample_value("selector_threshold", {"class": name, "kind": "query"}) == live[pool]

    def test_labels_requested_count_each_labeled_item_under_its_predicted_class(self) -> None:
        """selector_labels_requested_total{class} counts the queried and audited items by predicted class,
        and sums to the query and audit counters."""
        cfg = parse_config({"budget": {"rate": 0.2, "audit_rate": 0.05, "caps": {}}})
        monitor = Monitor(cfg, "127.0.0.1:9")
        rng = np.random.default_rng(4)
        raw = rng.dirichlet([1.0, 1.0, 1.0, 1.0], size=800)
        values = [orjson.dumps({"id": f"s{i}", "probs": (p / p.sum()).tolist()}) for i, p in enumerate(raw)]
        batch = decode_batch(values, np.zeros(800, dtype=np.int64), n_classes=4)
        decisions = monitor.router.decide(0, batch, np.full(800, 1_800_000_000.0))
        monitor.router.commit(0, decisions)
        labeled = np.isin(decisions.route, [1, 2])  # query, audit
        expected = np.bincount(decisions.predicted[labeled], minlength=4)
        reg = registry_for(monitor)
        got = [reg.get_sample_value("selector_labels_requested_total", {"class": c}) for c in cfg.classes]
        assert (
            got == expected.tolist() and sum(got) == decisions.counts()["query"] + decisions.counts()["audit"]
        )
        assert sum(got) > 100

    def test_batch_seconds_count_every_batch_including_those_over_the_last_bound(self) -> None:
        """A batch of exactly 1 ms lands in le=0.001; one of 12 s in +Inf only; both count and sum."""
        monitor = Monitor(parse_config({}), "127.0.0.1:9")
        monitor.stats.observe_batch(0.001, 10)
        monitor.stats.observe_batch(12.0, 10)
        reg = registry_for(monitor)
        assert reg.get_sample_value("selector_batch_seconds_bucket", {"le": "0.001"}) == 1
        assert reg.get_sample_value("selector_batch_seconds_bucket", {"le": "10.0"}) == 1
        assert reg.get_sample_value("selector_batch_seconds_bucket", {"le": "+Inf"}) == 2
        assert reg.get_sample_value("selector_batch_seconds_count") == 2
        assert reg.get_sample_value("selector_batch_seconds_sum") == 12.001
