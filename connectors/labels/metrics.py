"""The label loop's Prometheus collector and its section of the HTTP endpoint."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from connectors.labels.loop import DEAD_LETTER_STAGE, LATENCY_BUCKETS, LabelLoop
from connectors.labels.retraining import OUTCOMES, REASONS
from connectors.web.metrics import build_info, histogram, kafka_outage
from connectors.web.server import Part
from selector.quality.estimates import Interval


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


class LabelLoopCollector:
    """Exports a :class:`~connectors.labels.loop.LabelLoop`'s ingestion, label latency and estimates."""

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
        current = loop.registry_current
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
            "registry_current": loop.registry_current,
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
