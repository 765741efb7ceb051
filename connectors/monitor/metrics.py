"""The monitor's Prometheus collector and its section of the HTTP endpoint (status, health, readiness)."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from connectors.monitor.cap_watch import pause_status
from connectors.monitor.loop import Monitor
from connectors.monitor.route_records import STAGES
from connectors.web.metrics import build_info, histogram, kafka_outage
from connectors.web.server import Part
from selector.stats import BATCH_SECONDS_BUCKETS, ROUTE_NAMES, SCORE_BUCKETS

log = logging.getLogger(__name__)

DEAD_LETTER_STAGES = STAGES
"""The monitor's dead-letter stages, each exported from the first scrape (the label loop's is
:data:`~connectors.labels.loop.DEAD_LETTER_STAGE`)."""


class SelectorCollector:
    """Exports a :class:`~connectors.monitor.loop.Monitor`'s state as ``selector_*`` metrics."""

    def __init__(self, monitor: Monitor, clock: Callable[[], float] = time.time) -> None:
        self.monitor = monitor
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        m = self.monitor
        cfg = m.config
        rs = m.router.stats
        items = CounterMetricFamily("selector_items", "Items decided, by route.", labels=["route"])
        for route in ROUTE_NAMES:
            items.add_metric([route], rs.items[route])
        yield items
        spend = CounterMetricFamily(
            "selector_labels_requested",
            "Items sent for labeling (query or audit), by predicted class: the budget's spend per class.",
            labels=["class"],
        )
        for name, n in zip(cfg.classes, rs.requested_by_class.tolist(), strict=True):
            spend.add_metric([name], n)
        yield spend
        dlq = CounterMetricFamily(
            "selector_dead_letters", "Records sent to the dead-letter topic, by stage.", labels=["stage"]
        )
        for stage, n in sorted(dead_letters(m).items()):
            dlq.add_metric([stage], n)
        yield dlq
        yield GaugeMetricFamily(
            "selector_budget_target_ratio",
            "Target fraction of items sent to labeling.",
            value=cfg.budget.rate,
        )
        remaining = GaugeMetricFamily(
            "selector_budget_cap_remaining",
            "Labels this instance may still send before a hard cap is reached, by horizon.",
            labels=["horizon"],
        )
        for horizon, left in m.router.cap_remaining(self.clock()).items():
            remaining.add_metric([horizon], left)
        yield remaining
        short = CounterMetricFamily(
            "selector_budget_shortfall_labels",
            "Labels the budget allowed and that were not spent, by reason: floor (too few items above "
            "budget.query_threshold), cap (a hard cap held labels back), pool:<name> (a reserved pool found "
            "too few eligible items; the common pool made it up).",
            labels=["reason"],
        )
        for reason, lost in sorted(shortfall(m).items()):
            short.add_metric([reason], lost)
        yield short
        yield CounterMetricFamily(
            "selector_model_switches",
            "New model versions in the predictions that restarted a partition's score windows.",
            value=rs.model_switches,
        )
        thr = GaugeMetricFamily(
            "selector_threshold",
            "Decision thresholds by class: kind=accept (confidence) and kind=query (informativeness).",
            labels=["class", "kind"],
        )
        for name, kinds in thresholds(m).items():
            for kind, value in kinds.items():
                thr.add_metric([name, kind], value)
        yield thr
        yield histogram(
            "selector_score",
            "Informativeness of decided items (the configured measure), on [0, 1].",
            SCORE_BUCKETS,
            rs.score_bucket_counts,
            rs.score_sum,
        )
        ms = m.stats
        yield histogram(
            "selector_batch_seconds",
            "Time to decide, deliver and commit one polled batch.",
            BATCH_SECONDS_BUCKETS,
            ms.batch_bucket_counts,
            ms.batch_seconds_sum,
        )
        lag = GaugeMetricFamily(
            "selector_consumer_lag_messages",
            "Predictions not yet decided, by input partition.",
            labels=["partition"],
        )
        for partition in sorted(m.assigned):
            lag.add_metric([str(partition)], ms.lag.get(partition, 0))
        yield lag
        yield GaugeMetricFamily(
            "selector_labels_pending",
            "Items sent for labeling whose label has not arrived (nor expired), over owned partitions.",
            value=m.router.pending_count(),
        )
        yield CounterMetricFamily(
            "selector_labels_received", "Label messages read from the labels topic.", value=ms.labels_received
        )
        reloads = CounterMetricFamily(
            "selector_config_reloads", "Configuration reloads, by outcome.", labels=["outcome"]
        )
        for outcome in ("applied", "rejected"):
            reloads.add_metric([outcome], ms.reloads[outcome])
        yield reloads
        yield GaugeMetricFamily(
            "selector_last_progress_timestamp_seconds",
            "Wall-clock time of the poll loop's last completed iteration.",
            value=ms.last_progress,
        )
        yield from kafka_outage(m.outage)
        yield build_info(m.selector_info["config_hash"])


def dead_letters(m: Monitor) -> dict[str, int]:
    """Records dead-lettered by stage: every stage of :data:`DEAD_LETTER_STAGES` (0 until one fails there)."""
    counted = m.router.stats.dead_letters
    return {stage: counted.get(stage, 0) for stage in DEAD_LETTER_STAGES} | counted


def shortfall(m: Monitor) -> dict[str, float]:
    """Budget credit lost, in labels, by reason: ``floor``, ``cap`` and ``pool:<name>`` of every reserved
    pool of the current policy (0 until it falls short)."""
    lost = m.router.stats.shortfall
    reasons = ["floor", "cap", *(f"pool:{pool.name}" for pool in m.router.policy.pools[1:])]
    return {reason: lost.get(reason, 0.0) for reason in reasons} | lost


def thresholds(m: Monitor) -> dict[str, dict[str, float]]:
    """Per class: its accept threshold and the live query threshold of its pool (or the common pool's)."""
    live = m.router.query_thresholds()
    return {
        name: {"accept": accept, "query": live.get(f"class:{name}", live["uncertainty"])}
        for name, accept in zip(m.config.classes, m.config.accept_thresholds(), strict=True)
    }


HISTORY_SAMPLES = 300
"""Samples of the monitor's route counters kept for the dashboard (every SAMPLE_S: ten minutes)."""


def monitor_part(m: Monitor) -> Part:
    """The monitor's collector, health, readiness (partitions assigned) and status section, whose
    ``history`` holds ``[time, accept, query, audit, skip]`` counter samples."""
    history: deque[list[float]] = deque(maxlen=HISTORY_SAMPLES)

    def sample(now: float) -> None:
        items = m.router.stats.items
        history.append([now, *(float(items[r]) for r in ROUTE_NAMES)])

    def status() -> dict[str, Any]:
        cfg, rs, ms = m.config, m.router.stats, m.stats
        now = time.time()
        return {
            "items": dict(rs.items),
            "total": rs.total,
            "budget": {
                "rate": cfg.budget.rate,
                "audit_rate": cfg.budget.audit_rate,
                "caps": dict(cfg.budget.caps),
                "cap_remaining": m.router.cap_remaining(now),
                "cap_reached": pause_status(m.router, now),
                "shortfall": shortfall(m),
                "model_switches": rs.model_switches,
            },
            "requested_by_class": dict(zip(cfg.classes, rs.requested_by_class.tolist(), strict=True)),
            "thresholds": thresholds(m),
            "score_histogram": {"bounds": list(SCORE_BUCKETS), "counts": rs.score_bucket_counts.tolist()},
            "labels_pending": m.router.pending_count(),
            "labels_received": ms.labels_received,
            "dead_letters": dead_letters(m),
            "assigned": sorted(m.assigned),
            "lag": {str(p): ms.lag.get(p, 0) for p in sorted(m.assigned)},
            "last_progress": ms.last_progress,
            "history": list(history),
        }

    collector = SelectorCollector(m)
    ready = lambda: bool(m.assigned)  # noqa: E731
    return Part("monitor", collector, lambda: m.stats.last_progress, ready, status, sample, m.outage)
