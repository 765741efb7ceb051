"""What the label loop knows: counts, the deployed model's estimated quality, annotator agreement.

Computed from the dataset store (and the model registry when there is one); read by ``selector status`` and
exported as metrics by the label loop. Every estimate comes by three methods, each with a 95% interval:

- **prediction_powered** (the headline): the calibrated confidence of every counted prediction
  (:mod:`connectors.labels.population`), corrected by the human labels weighted by ``1 / pi``
  (:func:`selector.quality.population.prediction_powered`);
- **label_free**: the calibrated confidence alone (:func:`selector.quality.population.label_free`);
- **ipw**: the labeled decisions alone, each weighted by ``1 / pi`` (Hajek,
  :func:`selector.quality.estimates.model_estimates`).

Scopes: since start and over the sliding window ``quality.window_s`` (predictions by their time bucket,
labeled decisions by ``decided_at``), overall, per model version and per segment (a prediction without a
segment counts in the totals only). The divergence of the prediction-powered and label-free accuracy, in
standard errors, is a concept-drift signal. The accuracy of auto-accepted predictions comes from audits (a
simple random sample of them: Wilson interval). Only human labels enter an estimate (never seeds or
pseudo-labels).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from connectors.labels.population import FOLDED, Population, predicted_counts, window_start
from connectors.labels.revote import label_consensus
from connectors.model.dataset import DatasetStore, Example
from connectors.web.server import json_ready
from selector.arrays import BoolArray
from selector.config import Config
from selector.messages.timestamps import parse_ts
from selector.quality.calibration import apply_temperature, calibrate, expected_calibration_error
from selector.quality.divergence import Divergence, divergence
from selector.quality.estimates import Interval, confusion, model_estimates, weighted_mean, wilson
from selector.quality.labels import pairwise_agreement
from selector.quality.population import (
    Estimates,
    Labeled,
    Tally,
    label_free,
    labels_only,
    prediction_powered,
)

WINDOWS = ("since_start", "sliding")
"""The two time scopes of every estimate."""
METHODS = ("ipw", "prediction_powered", "label_free")
"""How each estimate is made."""
UNKNOWN_MODEL = "unknown"
"""The model version of a prediction that named none."""


@dataclass(frozen=True)
class Calibration:
    """The temperature that calibrates the model's probabilities on the labeled decisions, weighted by
    ``1 / pi`` so they stand for the stream, and the calibration error under it and the configured one."""

    items: int
    fitted: float
    configured: float
    ece_configured: float
    ece_fitted: float


@dataclass(frozen=True)
class Scoped:
    """The estimates over one scope's items (a window, maybe one model version or segment) by each method."""

    items: int
    """predictions counted in it (0 when ``quality.read_predictions`` is off)"""
    labels: int
    """human labels of its decisions"""
    ipw: Estimates
    prediction_powered: Estimates | None
    """None when ``quality.read_predictions`` is off"""
    label_free: Estimates | None
    divergence: Divergence | None
    """prediction-powered minus label-free accuracy"""

    def accuracy(self, method: str) -> Interval:
        """The accuracy by ``method`` (an empty interval when that method has no estimate here)."""
        est: Estimates | None = getattr(self, method)
        return Interval.empty() if est is None else est.accuracy


@dataclass(frozen=True)
class Annotator:
    """One annotator as the consensus sees them (:class:`selector.quality.consensus.AnnotatorReport`)."""

    items: int
    agreement_with_consensus: float
    """share of their votes equal to the consensus label, over items with two votes or more (NaN: none)"""
    estimated_accuracy: float


@dataclass(frozen=True)
class LabelStatus:
    """A snapshot of the dataset store's labels and the estimates they support."""

    decisions: int
    label_messages: int
    parked_labels: int
    """label messages waiting for their decision (joined when it arrives, dead-lettered after
    ``dataset.unknown_label_ttl_s``)"""
    labeled: int
    """items whose votes resolved (quorum met, and a consensus label: see ``consensus``)"""
    unresolved: int
    """items with votes that do not resolve yet"""
    audits: int
    """resolved audits of items that met the auto-accept rule"""
    audit_errors: int
    """of those, how many the model got wrong"""
    accuracy: dict[str, Interval]
    """by scope: overall (IPW since start) and auto_accept (audits)"""
    recall: dict[str, Interval]
    """IPW, since start"""
    defect_rate: Interval
    """IPW, since start"""
    agreement: float | None
    """chance that two annotators of the same item agree (None: no item has two votes)"""
    agreement_items: int
    """items with two votes or more"""
    by_model: dict[str, Interval]
    """accuracy (IPW) of each model version over the labeled decisions it made, since start"""
    calibration: Calibration | None
    """temperature scaling fitted on the labeled decisions (None below MIN_CALIBRATION_LABELS)"""
    read_predictions: bool
    """the population is counted (``quality.read_predictions``)"""
    window_s: float
    window_start: float
    """where the sliding window starts (seconds since the epoch; it ends when the status was taken)"""
    estimates: dict[str, Scoped]
    """by window (since_start, sliding)"""
    models: dict[str, dict[str, Scoped]]
    """by window, then model version"""
    segments: dict[str, dict[str, Scoped]]
    """by window, then segment"""
    confusion: dict[str, list[list[float]]]
    """by window: IPW shares of the items, [true class][predicted class]"""
    divergence_sigmas: dict[str, float]
    """by window: prediction-powered minus label-free accuracy in standard errors (NaN: too few labels)"""
    divergence_limit_sigmas: float
    """``quality.divergence_sigmas``: the alert fires beyond it"""
    rejected_predictions: dict[str, int]
    """records of the predictions topic not counted, by reason"""
    unknown_labels: dict[str, int]
    """resolved labels not in ``classes``, items per label (a store written under another configuration)"""
    unknown_predicted: dict[str, int]
    """stored decisions whose predicted class is not in ``classes``, per class"""
    other_classes: dict[int, int]
    """predictions counted under another number of classes than ``classes`` has, per number"""
    consensus: str
    """how votes became labels: ``dataset.consensus``, or ``majority`` when a vote names a class not
    configured"""
    annotators: dict[str, Annotator] = field(default_factory=dict)
    """each annotator's votes, agreement with the consensus and estimated accuracy, by name"""
    weak_items: int = 0
    """items whose consensus is weak (another vote is asked while they have fewer than
    ``dataset.max_votes``)"""

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON: intervals as {estimate, low, high, n}, NaN as None."""
        plain: dict[str, Any] = json_ready(asdict(self))
        return plain


MIN_CALIBRATION_LABELS = 30
"""Labeled decisions needed before a temperature is fitted."""


def _calibration(labels: _Labels, configured: float) -> Calibration | None:
    if len(labels.label) < MIN_CALIBRATION_LABELS:
        return None
    w = 1.0 / labels.pi
    report = calibrate(labels.raw, labels.label, weights=w)
    now = expected_calibration_error(labels.probs, labels.label, weights=w)
    return Calibration(len(labels.label), report.temperature, configured, now, report.ece_after)


def _seconds(texts: set[str]) -> dict[str, float]:
    """Seconds since the epoch of each RFC 3339 ``decided_at``: the monitor's UTC text (``...Z``) parsed by
    numpy at once, anything else one by one."""
    unique = list(texts)
    if all(t.endswith("Z") for t in unique):
        try:
            ms = np.array([t[:-1] for t in unique], dtype="datetime64[ms]").astype(np.int64)
            return dict(zip(unique, (ms / 1000.0).tolist(), strict=True))
        except ValueError:
            pass
    return {t: parse_ts(t) for t in unique}


@dataclass(frozen=True)
class _Labels:
    """The human-labeled decisions with known classes, as columns."""

    label: np.ndarray
    predicted: np.ndarray
    raw: np.ndarray
    """the probabilities as the model gave them"""
    probs: np.ndarray
    """calibrated with ``calibration.temperature``"""
    pi: np.ndarray
    decided_s: np.ndarray
    model: np.ndarray
    segment: np.ndarray

    @classmethod
    def of(cls, known: list[Example], index: dict[str, int], temperature: float) -> _Labels:
        at = _seconds({e.decided_at for e in known})
        probs = np.array([e.probs for e in known], dtype=np.float64).reshape(len(known), len(index))
        return cls(
            np.array([index[e.label] for e in known], dtype=np.int64),
            np.array([index[e.predicted] for e in known], dtype=np.int64),
            probs,
            apply_temperature(probs, temperature) if len(known) else probs,
            np.array([e.inclusion for e in known], dtype=np.float64),
            np.array([at[e.decided_at] for e in known], dtype=np.float64),
            np.array([e.model or UNKNOWN_MODEL for e in known], dtype=str),
            np.array([e.segment or "" for e in known], dtype=str),
        )

    def take(self, rows: BoolArray) -> Labeled:
        return Labeled(self.label[rows], self.predicted[rows], self.probs[rows], self.pi[rows])


def _sum(tallies: Iterable[Tally], n_classes: int) -> Tally:
    total = Tally.zeros(n_classes)
    for t in tallies:
        total = total + t
    return total


class _Estimator:
    """Builds the :class:`Scoped` estimates of any subset of the labels and the population."""

    def __init__(self, config: Config, labels: _Labels, counted: bool) -> None:
        self.classes = config.classes
        self.defects = np.array(config.defects())
        self.labels = labels
        self.counted = counted

    def scoped(self, rows: BoolArray, tally: Tally) -> Scoped:
        lab = self.labels.take(rows)
        if not self.counted:
            ipw = model_estimates(lab.label, lab.predicted, lab.pi, self.classes, self.defects)
            ipw_estimates = Estimates(ipw.accuracy, ipw.recall, ipw.precision, ipw.defect_rate)
            return Scoped(0, len(lab.label), ipw_estimates, None, None, None)
        return Scoped(
            tally.n,
            len(lab.label),
            labels_only(tally, lab, self.classes, self.defects),
            prediction_powered(tally, lab, self.classes, self.defects),
            label_free(tally, self.classes, self.defects),
            divergence(tally, lab),
        )


def label_status(store: DatasetStore, config: Config, now: float | None = None) -> LabelStatus:
    """Counts and estimates of the store under ``config`` (classes, quorum, defect classes, the window
    ending at ``now``, default the wall clock)."""
    now = time.time() if now is None else now
    book = store.book()
    agreed = label_consensus(config, book)
    resolved = agreed.items if agreed is not None else None
    examples = [
        e
        for e in store.examples(config.dataset.quorum, book, seeds=False, consensus=resolved)
        if e.source == "human"
    ]
    index = {c: k for k, c in enumerate(config.classes)}
    n_classes = len(index)
    known = [e for e in examples if e.label in index and e.predicted in index and len(e.probs) == n_classes]
    labels = _Labels.of(known, index, config.calibration.temperature)
    estimator = _Estimator(config, labels, config.quality.read_predictions)
    population = Population(store, config)
    cells = population.cells() if config.quality.read_predictions else []
    cut = window_start(config, now)
    in_window = {"since_start": np.ones(len(known), dtype=bool), "sliding": labels.decided_s >= cut}
    cells_of = {"since_start": cells, "sliding": [c for c in cells if c.start != FOLDED and c.start >= cut]}

    estimates, models, segments, shares, sigmas = {}, {}, {}, {}, {}
    for w in WINDOWS:
        rows, scope_cells = in_window[w], cells_of[w]
        estimates[w] = estimator.scoped(rows, _sum((c.tally for c in scope_cells), n_classes))
        div = estimates[w].divergence
        sigmas[w] = math.nan if div is None else div.sigmas
        lab = labels.take(rows)
        shares[w] = confusion(lab.label, lab.predicted, lab.pi, n_classes).tolist()
        by_model: dict[str, list[Tally]] = {}
        by_segment: dict[str, list[Tally]] = {}
        for c in scope_cells:
            by_model.setdefault(c.model or UNKNOWN_MODEL, []).append(c.tally)
            if c.segment is not None:
                by_segment.setdefault(c.segment, []).append(c.tally)
        for v in np.unique(labels.model[rows]).tolist():
            by_model.setdefault(v, [])
        for s in np.unique(labels.segment[rows]).tolist():
            if s:
                by_segment.setdefault(s, [])
        models[w] = {
            v: estimator.scoped(rows & (labels.model == v), _sum(ts, n_classes))
            for v, ts in sorted(by_model.items())
        }
        segments[w] = {
            s: estimator.scoped(rows & (labels.segment == s), _sum(ts, n_classes))
            for s, ts in sorted(by_segment.items())
        }

    audited = [e for e in known if e.route == "audit" and e.accept_eligible]
    right = sum(e.label == e.predicted for e in audited)
    agreement, multi = pairwise_agreement(book)
    counts = store.counts()
    correct = (labels.label == labels.predicted).astype(np.float64)
    by_model_ipw = {
        v: weighted_mean(correct[labels.model == v], labels.pi[labels.model == v])
        for v in np.unique(labels.model).tolist()
    }
    overall = estimates["since_start"].ipw
    unknown_labels = Counter(e.label for e in examples if e.label not in index)
    return LabelStatus(
        decisions=counts["decisions"],
        label_messages=counts["label_messages"],
        parked_labels=store.parked_count(),
        labeled=len(examples),
        unresolved=len(book.votes) - len(examples),
        audits=len(audited),
        audit_errors=len(audited) - right,
        accuracy={"overall": overall.accuracy, "auto_accept": wilson(right, len(audited))},
        recall=overall.recall,
        defect_rate=overall.defect_rate,
        agreement=agreement if multi else None,
        agreement_items=multi,
        by_model=by_model_ipw,
        calibration=_calibration(labels, config.calibration.temperature),
        read_predictions=config.quality.read_predictions,
        window_s=config.quality.window_s,
        window_start=cut,
        estimates=estimates,
        models=models,
        segments=segments,
        confusion=shares,
        divergence_sigmas=sigmas,
        divergence_limit_sigmas=config.quality.divergence_sigmas,
        rejected_predictions=population.rejected(),
        other_classes=population.other_classes(),
        consensus=agreed.method if agreed is not None else "majority",
        annotators={
            name: Annotator(a.items, a.agreement_with_consensus, a.estimated_accuracy)
            for name, a in (agreed.annotators.items() if agreed is not None else ())
        },
        weak_items=int(agreed.items.weak.sum()) if agreed is not None else 0,
        unknown_labels=dict(sorted(unknown_labels.items(), key=lambda kv: (-kv[1], kv[0]))),
        unknown_predicted=dict(
            sorted(
                ((k, v) for k, v in predicted_counts(store).items() if k not in index),
                key=lambda kv: (-kv[1], kv[0]),
            )
        ),
    )
