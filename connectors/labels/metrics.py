"""The label loop's Prometheus collector and its section of the HTTP endpoint."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from connectors.labels.loop import DEAD_LETTER_STAGE, LATENCY_BUCKETS, LabelLoop
from connectors.labels.retraining import OUTCOMES, REASONS
from connectors.labels.status import METHODS, WINDOWS, LabelStatus, Scoped
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


MAX_SEGMENTS = 50
"""Segments exported (those with the most items since start): the breakdown's cardinality stays bounded."""

Row = tuple[list[str], Interval]


def _ratio_families(stem: str, doc: str, labels: list[str], rows: Iterable[Row]) -> Iterator[Metric]:
    """``{stem}_ratio`` with its ``_low_ratio`` and ``_high_ratio`` (the 95% interval), one sample per row."""
    families = [
        GaugeMetricFamily(f"{stem}_ratio", doc, labels=labels),
        GaugeMetricFamily(f"{stem}_low_ratio", f"{doc} Lower end of its 95% interval.", labels=labels),
        GaugeMetricFamily(f"{stem}_high_ratio", f"{doc} Upper end of its 95% interval.", labels=labels),
    ]
    for values, i in rows:
        for family, v in zip(families, (i.estimate, i.low, i.high), strict=True):
            family.add_metric(values, v)
    yield from families


def _estimate_rows(st: LabelStatus) -> Iterator[Row]:
    """Every (metric, class, method, window) of the totals; NaN where a method has no estimate."""
    classes = list(st.recall)
    for w in WINDOWS:
        scope = st.estimates[w]
        for method in METHODS:
            est = getattr(scope, method)
            empty = Interval.empty()
            yield ["accuracy", "", method, w], est.accuracy if est else empty
            yield ["defect_rate", "", method, w], est.defect_rate if est else empty
            for c in classes:
                yield ["recall", c, method, w], est.recall[c] if est else empty
                yield ["precision", c, method, w], est.precision[c] if est else empty


def _breakdown(what: str, scopes: dict[str, dict[str, Scoped]], keys: list[str]) -> Iterator[Metric]:
    """Accuracy by each method per model version or segment (``keys``), with the items and labels behind
    it, in both windows (an empty interval where a key has nothing in a window)."""
    rows: list[Row] = []
    items = GaugeMetricFamily(
        f"selector_estimate_{what}_items",
        f"Predictions counted per {what} and window.",
        labels=[what, "window"],
    )
    labels = GaugeMetricFamily(
        f"selector_estimate_{what}_labels", f"Human labels per {what} and window.", labels=[what, "window"]
    )
    for w in WINDOWS:
        for key in keys:
            s = scopes[w].get(key)
            items.add_metric([key, w], s.items if s else 0)
            labels.add_metric([key, w], s.labels if s else 0)
            rows += [([key, m, w], s.accuracy(m) if s else Interval.empty()) for m in METHODS]
    yield from _ratio_families(
        f"selector_estimate_{what}_accuracy",
        f"Estimated accuracy per {what}, by method (ipw, prediction_powered, label_free) and window "
        f"(since_start, sliding: quality.window_s).",
        [what, "method", "window"],
        rows,
    )
    yield items
    yield labels


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
        yield from self._estimates(st, current)
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
            "selector_labels_weak_consensus_items",
            "Labeled items whose consensus is weak (dataset.weak_below): another vote is asked for them.",
            value=st.weak_items,
        )
        yield CounterMetricFamily(
            "selector_revotes_requested",
            "Decisions sent again to the to-label topic for another vote (weak consensus).",
            value=loop.revotes,
        )
        yield GaugeMetricFamily(
            "selector_last_progress_timestamp_seconds",
            "Wall-clock time of the label loop's last completed round.",
            value=loop.last_round,
        )
        yield from kafka_outage(loop.outage)
        yield from self._retraining(current)
        yield build_info(loop.config.config_hash())

    def _estimates(self, st: LabelStatus, current: str | None) -> Iterator[Metric]:
        loop = self.loop
        yield from _ratio_families(
            "selector_estimate",
            "Estimated quality of the model: metric (accuracy, recall, precision, defect_rate), class "
            "(recall and precision), method (prediction_powered over every counted prediction, label_free, "
            "ipw over the labeled decisions) and window (since_start, sliding: quality.window_s); NaN "
            "without an estimate.",
            ["metric", "class", "method", "window"],
            _estimate_rows(st),
        )
        items = GaugeMetricFamily(
            "selector_estimate_items", "Predictions counted in the population, per window.", labels=["window"]
        )
        labels = GaugeMetricFamily(
            "selector_estimate_labels", "Human labels behind the estimates, per window.", labels=["window"]
        )
        sigmas = GaugeMetricFamily(
            "selector_estimate_divergence_sigmas",
            "Prediction-powered minus label-free accuracy, in standard errors, per window (NaN with fewer "
            "than 30 labels): beyond quality.divergence_sigmas the confidence no longer tells the truth.",
            labels=["window"],
        )
        gap = GaugeMetricFamily(
            "selector_estimate_divergence_ratio",
            "Prediction-powered minus label-free accuracy, per window.",
            labels=["window"],
        )
        for w in WINDOWS:
            s = st.estimates[w]
            items.add_metric([w], s.items)
            labels.add_metric([w], s.labels)
            sigmas.add_metric([w], st.divergence_sigmas[w])
            gap.add_metric([w], s.divergence.gap if s.divergence else math.nan)
        yield from (items, labels, sigmas, gap)
        yield GaugeMetricFamily(
            "selector_estimate_divergence_threshold_sigmas",
            "The divergence beyond which SelectorEstimateDivergence fires (quality.divergence_sigmas).",
            value=loop.config.quality.divergence_sigmas,
        )
        records = CounterMetricFamily(
            "selector_population_records",
            "Records of the predictions topic the label loop read: counted in the population, or "
            "undecodable (not counted).",
            labels=["outcome"],
        )
        for outcome, n in loop.predictions.items():
            records.add_metric([outcome], n)
        yield records

        # versions active in the window and the promoted one; the segments with the most items
        models = sorted({*st.models["sliding"], *([current] if current else [])})
        ranked = sorted(
            st.segments["since_start"].items(), key=lambda kv: (-kv[1].items, -kv[1].labels, kv[0])
        )
        yield from _breakdown("model", st.models, models)
        yield from _breakdown("segment", st.segments, sorted(k for k, _ in ranked[:MAX_SEGMENTS]))

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
            "predictions": dict(loop.predictions),
            "divergence_alert_sigmas": loop.config.quality.divergence_sigmas,  # the dashboard's alert level
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
