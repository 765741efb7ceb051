"""What the label loop knows: counts, the deployed model's estimated quality, annotator agreement.

Computed from the dataset store (and the model registry when there is one); read by ``selector status`` and
exported as metrics by the label loop. Estimates follow :mod:`selector.quality.estimates`:

- **overall** accuracy, per-class recall and the defect rate: inverse-probability weighted (Hajek) over every
  labeled decision, queries and audits alike, each weighted by ``1 / pi``;
- **auto_accept** accuracy: the audited items that met the auto-accept rule are a simple random sample of the
  auto-accepted ones (every item has the same audit probability), so their share of correct predictions with
  its Wilson interval estimates the accuracy of what was auto-accepted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from connectors.model.dataset import DatasetStore, Example
from connectors.web.server import json_ready
from selector.config import Config
from selector.quality.calibration import apply_temperature, calibrate, expected_calibration_error
from selector.quality.estimates import Interval, model_estimates, weighted_mean, wilson
from selector.quality.labels import pairwise_agreement


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
class LabelStatus:
    """A snapshot of the dataset store's labels and the estimates they support."""

    decisions: int
    label_messages: int
    parked_labels: int
    """label messages waiting for their decision (joined when it arrives, dead-lettered after
    ``dataset.unknown_label_ttl_s``)"""
    labeled: int
    """items whose votes resolved (quorum met, a strict majority)"""
    unresolved: int
    """items with votes that do not resolve yet"""
    audits: int
    """resolved audits of items that met the auto-accept rule"""
    audit_errors: int
    """of those, how many the model got wrong"""
    accuracy: dict[str, Interval]
    """by scope: overall (weighted) and auto_accept (audits)"""
    recall: dict[str, Interval]
    defect_rate: Interval
    agreement: float | None
    """chance that two annotators of the same item agree (None: no item has two votes)"""
    agreement_items: int
    """items with two votes or more"""
    by_model: dict[str, Interval]
    """accuracy (IPW) of each model version over the labeled decisions it made"""
    calibration: Calibration | None
    """temperature scaling fitted on the labeled decisions (None below MIN_CALIBRATION_LABELS)"""

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON: intervals as {estimate, low, high, n}, NaN as None."""
        plain: dict[str, Any] = json_ready(asdict(self))
        return plain


MIN_CALIBRATION_LABELS = 30
"""Labeled decisions needed before a temperature is fitted."""


def _calibration(examples: list[Example], index: dict[str, int], configured: float) -> Calibration | None:
    rows = [e for e in examples if len(e.probs) == len(index)]
    if len(rows) < MIN_CALIBRATION_LABELS:
        return None
    probs = np.array([e.probs for e in rows], dtype=np.float64)
    labels = np.array([index[e.label] for e in rows], dtype=np.int64)
    w = np.array([e.weight for e in rows], dtype=np.float64)
    report = calibrate(probs, labels, weights=w)
    now = expected_calibration_error(apply_temperature(probs, configured), labels, weights=w)
    return Calibration(len(rows), report.temperature, configured, now, report.ece_after)


def label_status(store: DatasetStore, config: Config) -> LabelStatus:
    """Counts and estimates of the store under ``config`` (classes, quorum, defect classes)."""
    book = store.book()
    examples = list(store.examples(config.dataset.quorum, book))
    index = {c: k for k, c in enumerate(config.classes)}
    known = [e for e in examples if e.label in index and e.predicted in index]
    label = np.array([index[e.label] for e in known], dtype=np.int64)
    predicted = np.array([index[e.predicted] for e in known], dtype=np.int64)
    pi = np.array([e.inclusion for e in known], dtype=np.float64)
    est = model_estimates(label, predicted, pi, config.classes, np.array(config.defects()))
    audited = [e for e in known if e.route == "audit" and e.accept_eligible]
    right = sum(e.label == e.predicted for e in audited)
    agreement, multi = pairwise_agreement(book)
    counts = store.counts()
    correct = (label == predicted).astype(np.float64)
    version = np.array([e.model or "unknown" for e in known], dtype=object)
    by_model = {str(v): weighted_mean(correct[version == v], pi[version == v]) for v in sorted(set(version))}
    return LabelStatus(
        decisions=counts["decisions"],
        label_messages=counts["label_messages"],
        parked_labels=store.parked_count(),
        labeled=len(examples),
        unresolved=len(book.votes) - len(examples),
        audits=len(audited),
        audit_errors=len(audited) - right,
        accuracy={"overall": est.accuracy, "auto_accept": wilson(right, len(audited))},
        recall=est.recall,
        defect_rate=est.defect_rate,
        agreement=agreement if multi else None,
        agreement_items=multi,
        by_model=by_model,
        calibration=_calibration(known, index, config.calibration.temperature),
    )


def _interval(i: Interval) -> str:
    if i.n == 0:
        return "no labels yet"
    return f"{i.estimate:6.1%}  [{i.low:6.1%}, {i.high:6.1%}]  from {i.n} labels"


def render(status: LabelStatus) -> str:
    """The status as an aligned text report."""
    lines = [
        f"decisions sent for labeling  {status.decisions}",
        f"label messages               {status.label_messages}",
        f"labels awaiting decision     {status.parked_labels} (parked: dataset.unknown_label_ttl_s)",
        f"labeled items                {status.labeled} resolved, {status.unresolved} awaiting quorum",
        "",
        "estimates (95% intervals)",
        f"  accuracy, overall (IPW)    {_interval(status.accuracy['overall'])}",
        f"  accuracy, auto-accepted    {_interval(status.accuracy['auto_accept'])}",
        f"  defect rate (IPW)          {_interval(status.defect_rate)}",
    ]
    lines += [f"  recall {name:<19} {_interval(i)}" for name, i in status.recall.items()]
    lines += [f"  accuracy of model {m:<8} {_interval(i)}" for m, i in status.by_model.items()]
    agreement = (
        "no item has two votes yet"
        if status.agreement is None
        else f"{status.agreement:.1%} over {status.agreement_items} items with several votes"
    )
    lines += ["", f"annotator agreement          {agreement}"]
    c = status.calibration
    lines.append(
        f"calibration (IPW)            too few labels yet (needs {MIN_CALIBRATION_LABELS})"
        if c is None
        else f"calibration (IPW)            temperature {c.fitted:.3g} fits {c.items} labels best: ECE "
        f"{c.ece_configured:.3f} at the configured {c.configured:g}, {c.ece_fitted:.3f} at {c.fitted:.3g} "
        "(calibration.temperature)"
    )

    return "\n".join(lines)
