"""Prometheus export: a collector that reads the core's counters at scrape time, and the HTTP endpoint.

No module-level metrics: the collector is registered into an injected registry, so tests use a fresh
``CollectorRegistry()``. Every label combination is present from the first scrape (initialised to 0).
"""

from __future__ import annotations

import logging
import math
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

import selector
from connectors.cap_watch import pause_status
from connectors.label_loop import DEAD_LETTER_STAGE, LATENCY_BUCKETS, LabelLoop
from connectors.monitor import BATCH_SECONDS_BUCKETS, Monitor
from connectors.outage import OutageWatch
from connectors.registry import ModelRegistry
from connectors.retraining import OUTCOMES, REASONS
from connectors.route_records import STAGES
from connectors.web import Endpoint, Part
from selector.estimates import Interval
from selector.stats import ROUTE_NAMES, SCORE_BUCKETS

log = logging.getLogger(__name__)

DEAD_LETTER_STAGES = STAGES
"""The monitor's dead-letter stages, each exported from the first scrape (the label loop's is
:data:`~connectors.label_loop.DEAD_LETTER_STAGE`)."""


def histogram(
    name: str, doc: str, bounds: tuple[float, ...], counts: Any, total: float
) -> HistogramMetricFamily:
    """``counts`` per bucket; one more count than bounds is the overflow above the last bound."""
    counts = [int(c) for c in counts]
    cumulative, buckets = 0, []
    for bound, c in zip(bounds, counts[: len(bounds)], strict=True):
        cumulative += c
        buckets.append((repr(float(bound)), cumulative))
    buckets.append(("+Inf", sum(counts)))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=total)


class SelectorCollector:
    """Exports a :class:`~connectors.monitor.Monitor`'s state as ``selector_*`` metrics."""

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


def _intervals(name: str, doc: str, label: str | None, intervals: Mapping[str, Interval]) -> Iterator[Metric]:
    """An estimate and its 95% interval as three gauges: ``name``, ``name`` with _low and _high before the
    unit suffix (NaN while nothing is labeled), and the labels behind it."""
    stem = name.removesuffix("_ratio")
    labels = [label] if label else []
    families = [
        GaugeMetricFamily(f"{stem}_ratio", doc, labels=labels),
        GaugeMetricFamily(f"{stem}_low_ratio", f"{doc} Lower end of its 95% interval.", labels=labels),
        GaugeMetricFamily(f"{stem}_high_ratio", f"{doc} Upper end of its 95% interval.", labels=labels),
        GaugeMetricFamily(f"{stem}_labels", f"{doc} Labeled items behind it.", labels=labels),
    ]
    for key, i in intervals.items():
        values = (i.estimate, i.low, i.high, float(i.n))
        for family, value in zip(families, values, strict=True):
            family.add_metric([key] if label else [], value)
    yield from families


def kafka_outage(watch: OutageWatch) -> Iterator[Metric]:
    """``selector_kafka_unreachable`` (1 while the cluster does not answer) and
    ``selector_kafka_outages_total`` (outages noticed since start)."""
    yield GaugeMetricFamily(
        "selector_kafka_unreachable",
        "1 while the Kafka cluster does not answer this process (it exits 4 after kafka.outage_deadline_s).",
        value=0.0 if watch.reachable else 1.0,
    )
    yield CounterMetricFamily(
        "selector_kafka_outages", "Kafka outages this process noticed since it started.", value=watch.outages
    )


def build_info(config_hash: str) -> GaugeMetricFamily:
    info = GaugeMetricFamily(
        "selector_build_info", "Version and config hash of this instance.", labels=["version", "config_hash"]
    )
    info.add_metric([selector.__version__, config_hash], 1.0)
    return info


class LabelLoopCollector:
    """Exports a :class:`~connectors.label_loop.LabelLoop`'s ingestion, label latency and estimates."""

    def __init__(self, loop: LabelLoop) -> None:
        self.loop = loop

    def collect(self) -> Iterator[Metric]:
        loop = self.loop
        st = loop.status
        messages = CounterMetricFamily(
            "selector_label_messages", "Label messages read, by outcome.", labels=["outcome"]
        )
        for outcome, key in (("stored", "labels"), ("unknown_id", "unknown"), ("invalid", "invalid")):
            messages.add_metric([outcome], loop.totals[key])
        yield messages
        dlq = CounterMetricFamily(
            "selector_dead_letters", "Records sent to the dead-letter topic, by stage.", labels=["stage"]
        )
        dlq.add_metric([DEAD_LETTER_STAGE], loop.totals["unknown"] + loop.totals["invalid"])
        yield dlq
        yield GaugeMetricFamily(
            "selector_labels_parked",
            "Label messages waiting for their decision (joined when it is read, dead-lettered as unknown_id "
            "after dataset.unknown_label_ttl_s).",
            value=loop.parked,
        )
        yield CounterMetricFamily(
            "selector_decisions_ingested",
            "Decisions read from the to-label topic and stored (first per item).",
            value=loop.totals["decisions"],
        )
        yield histogram(
            "selector_label_latency_seconds",
            "Time from the decision that asked for a label to each vote's label message.",
            LATENCY_BUCKETS,
            loop.latency_counts,
            loop.latency_sum,
        )
        items = GaugeMetricFamily(
            "selector_labeled_items",
            "Items with votes: resolved (quorum and a strict majority) or awaiting.",
            labels=["state"],
        )
        items.add_metric(["resolved"], st.labeled)
        items.add_metric(["unresolved"], st.unresolved)
        yield items
        current = ModelRegistry(loop.config.retrain.registry).current()
        yield from _intervals(
            "selector_estimated_accuracy_ratio",
            "Estimated accuracy: overall (IPW over every labeled decision), of auto-accepted predictions "
            "(audits), and of the registry's promoted model over the decisions it made (current_model).",
            "scope",
            {**st.accuracy, "current_model": st.by_model.get(current or "", Interval.empty())},
        )
        yield from _intervals(
            "selector_estimated_recall_ratio", "Estimated recall of each class (IPW).", "class", st.recall
        )
        yield from _intervals(
            "selector_estimated_defect_rate_ratio",
            "Estimated share of defects in the stream (IPW).",
            None,
            {"": st.defect_rate},
        )
        temperature = GaugeMetricFamily(
            "selector_calibration_temperature",
            "Temperature scaling: the configured one, and the one fitted on the labeled decisions (IPW).",
            labels=["kind"],
        )
        ece = GaugeMetricFamily(
            "selector_calibration_error_ratio",
            "Expected calibration error on the labeled decisions (IPW) under each temperature.",
            labels=["temperature"],
        )
        c = st.calibration
        temperature.add_metric(["configured"], loop.config.calibration.temperature)
        temperature.add_metric(["fitted"], math.nan if c is None else c.fitted)
        ece.add_metric(["configured"], math.nan if c is None else c.ece_configured)
        ece.add_metric(["fitted"], math.nan if c is None else c.ece_fitted)
        yield temperature
        yield ece
        yield GaugeMetricFamily(
            "selector_annotator_agreement_ratio",
            "Chance that two annotators of the same item agree (NaN until an item has two votes).",
            value=math.nan if st.agreement is None else st.agreement,
        )
        yield GaugeMetricFamily(
            "selector_last_progress_timestamp_seconds",
            "Wall-clock time of the label loop's last completed round.",
            value=loop.last_round,
        )
        yield from kafka_outage(loop.outage)
        yield from self._retraining(current)
        yield build_info(loop.config.config_hash())

    def _retraining(self, current: str | None) -> Iterator[Metric]:
        r = self.loop.retrainer
        requests = CounterMetricFamily(
            "selector_retrain_requests",
            "Retrain requests published, by reason (one request may have several).",
            labels=["reason"],
        )
        for reason in REASONS:
            requests.add_metric([reason], r.requests[reason] if r else 0)
        yield requests
        retrains = CounterMetricFamily(
            "selector_retrains", "Built-in trainer runs, by outcome.", labels=["outcome"]
        )
        for outcome in OUTCOMES:
            retrains.add_metric([outcome], r.outcomes[outcome] if r else 0)
        yield retrains
        alarms = CounterMetricFamily(
            "selector_drift_alarms",
            "Page-Hinkley alarms on the confidence of audited items, by direction.",
            labels=["direction"],
        )
        for direction in ("up", "down"):
            alarms.add_metric([direction], r.alarms[direction] if r else 0)
        yield alarms
        yield GaugeMetricFamily(
            "selector_retrain_running",
            "1 while the built-in trainer runs a retrain, else 0.",
            value=1.0 if r and r.running else 0.0,
        )
        yield GaugeMetricFamily(
            "selector_last_retrain_request_timestamp_seconds",
            "Wall-clock time of the last retrain request (0: none yet).",
            value=(r.triggers.last_request_at or 0.0) if r else 0.0,
        )
        yield GaugeMetricFamily(
            "selector_last_retrain_timestamp_seconds",
            "Wall-clock time the last built-in trainer run ended (0: none yet).",
            value=r.last_retrain if r else 0.0,
        )
        info = GaugeMetricFamily(
            "selector_model_info", "The promoted model version of the registry (value 1).", labels=["version"]
        )
        if current is not None:
            info.add_metric([current], 1.0)
        yield info


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


def labels_part(loop: LabelLoop) -> Part:
    """The label loop's collector, health, readiness (a round completed) and status section."""

    def status() -> dict[str, Any]:
        r = loop.retrainer
        return {
            **loop.status.as_dict(),
            "parked_labels": loop.parked,
            "totals": dict(loop.totals),
            "latency": {"bounds": list(LATENCY_BUCKETS), "counts": loop.latency_counts.tolist()},
            "retrain": {
                "requests": dict(r.requests) if r else {},
                "outcomes": dict(r.outcomes) if r else {},
                "running": bool(r and r.running),
                "last_event": r.last_event if r else None,
            },
            "registry_current": ModelRegistry(loop.config.retrain.registry).current(),
            "last_progress": loop.last_round,
        }

    return Part(
        "labels",
        LabelLoopCollector(loop),
        lambda: loop.last_round,
        lambda: loop.rounds > 0,
        status,
        kafka=loop.outage,
    )


def serve(
    parts: list[Part],
    host: str,
    port: int,
    *,
    dashboard: bool = True,
    metrics_of: list[Part] | None = None,
    sock: socket.socket | None = None,
) -> Endpoint:
    """Start a process's HTTP endpoint (metrics, health, status, dashboard) in a daemon thread (on ``sock``
    when the port was bound at start-up)."""
    return Endpoint(parts, host, port, dashboard=dashboard, metrics_of=metrics_of, sock=sock).start()
