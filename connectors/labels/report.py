"""``selector status`` as text: warnings, counts, the headline estimate, the window, then compact tables."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from connectors.labels.status import MIN_CALIBRATION_LABELS, WINDOWS, LabelStatus, Scoped
from selector.quality.estimates import Interval
from selector.quality.population import Estimates

MAX_ROWS = 20
"""Rows of a breakdown table (the versions or segments with the most items); the rest are summed up in one
line."""
METHOD_NAMES = {"prediction_powered": "prediction-powered", "ipw": "IPW", "label_free": "label-free"}


def span(seconds: float) -> str:
    """A duration as its largest whole unit: ``24 h``, ``90 min``, ``45 s``."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size and seconds % size == 0 and (unit != "d" or seconds > 2 * 86400):
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def _interval(i: Interval) -> str:
    if i.n == 0 and math.isnan(i.estimate):
        return "no labels yet"
    return f"{i.estimate:6.1%}  [{i.low:6.1%}, {i.high:6.1%}]  from {i.n} labels"


def _cell(i: Interval | None) -> str:
    """An estimate and its interval in 23 characters (``-`` when there is none)."""
    if i is None or math.isnan(i.estimate):
        return f"{'-':<23}"
    return f"{i.estimate:6.1%} [{i.low:5.1%},{i.high:6.1%}]"


def _warnings(status: LabelStatus) -> list[str]:
    out = []
    for what, counts in (
        ("resolved labels", status.unknown_labels),
        ("decisions' predicted classes", status.unknown_predicted),
    ):
        if counts:
            few = ", ".join(f"{k!r} ({n})" for k, n in list(counts.items())[:5])
            more = f" and {len(counts) - 5} more" if len(counts) > 5 else ""
            out.append(
                f"WARNING: {sum(counts.values())} stored {what} are not in the configured classes: "
                f"{few}{more}; they enter no estimate. Pass the configuration that wrote this store (-c), or "
                "fix 'classes'."
            )
    for classes, n in status.other_classes.items():
        out.append(
            f"WARNING: {n} counted predictions have {classes} classes, not the {len(status.recall)} "
            "configured; they enter no estimate. Pass the configuration that wrote this store (-c), or fix "
            "'classes'."
        )
    return out


def _headline(status: LabelStatus) -> list[str]:
    window = f"last {span(status.window_s)}"
    if not status.read_predictions:
        lines = ["accuracy (IPW; quality.read_predictions is off)"]
        for w, name in zip(WINDOWS, ("since start", window), strict=True):
            lines.append(f"  {name:<14} {_interval(status.estimates[w].ipw.accuracy)}")
        return lines
    lines = []
    for w in WINDOWS:
        s = status.estimates[w]
        a = s.accuracy("prediction_powered")
        value = (
            "no estimate yet" if math.isnan(a.estimate) else f"{a.estimate:.1%} [{a.low:.1%}, {a.high:.1%}]"
        )
        head = "accuracy (prediction-powered)" if w == "since_start" else f"  {window:<27}"
        lines.append(f"{head} {value} over {s.items} items, {s.labels} labels")
    d = status.estimates["sliding"].divergence
    limit = status.divergence_limit_sigmas
    if d is not None and not math.isnan(d.sigmas):
        verdict = (
            "BEYOND quality.divergence_sigmas: the confidence no longer says how often the model is right"
            if abs(d.sigmas) > limit
            else f"within quality.divergence_sigmas {limit:g}"
        )
        lines.append(
            f"  divergence, {window}: prediction-powered minus label-free accuracy {d.gap:+.1%} = "
            f"{d.sigmas:+.1f} standard errors, {verdict}"
        )
    elif d is not None:
        lines.append(f"  divergence, {window}: too few labels yet ({d.labels})")
    return lines


def _estimates_table(title: str, s: Scoped, methods: Sequence[str]) -> list[str]:
    head = f"{title:<28}" + "".join(f"{METHOD_NAMES[m]:<25}" for m in methods)
    ests: list[Estimates | None] = [getattr(s, m) for m in methods]
    rows: list[tuple[str, list[Interval | None]]] = [
        ("accuracy", [e.accuracy if e else None for e in ests]),
        ("defect rate", [e.defect_rate if e else None for e in ests]),
    ]
    for c in s.ipw.recall:
        rows.append((f"recall {c}", [e.recall[c] if e else None for e in ests]))
    for c in s.ipw.precision:
        rows.append((f"precision {c}", [e.precision[c] if e else None for e in ests]))
    return [head.rstrip()] + [
        (f"  {name:<26}" + "".join(f"{_cell(i):<25}" for i in cells)).rstrip() for name, cells in rows
    ]


def _breakdown(title: str, column: str, scopes: Mapping[str, Scoped], methods: Sequence[str]) -> list[str]:
    if not scopes:
        return []
    ranked = sorted(scopes.items(), key=lambda kv: (-kv[1].items, -kv[1].labels, kv[0]))
    head = f"  {column:<26}{'items':>9}{'labels':>8}  " + "".join(f"{METHOD_NAMES[m]:<25}" for m in methods)
    lines = [title, head.rstrip()]
    for key, s in ranked[:MAX_ROWS]:
        cells = "".join(f"{_cell(s.accuracy(m)):<25}" for m in methods)
        lines.append(f"  {key[:25]:<26}{s.items:>9}{s.labels:>8}  {cells}".rstrip())
    rest = ranked[MAX_ROWS:]
    if rest:
        items, labels = sum(s.items for _, s in rest), sum(s.labels for _, s in rest)
        lines.append(f"  {f'({len(rest)} more)':<26}{items:>9}{labels:>8}")
    return lines


def _confusion(title: str, shares: list[list[float]], classes: Sequence[str], labels: int) -> list[str]:
    if labels == 0:
        return [f"{title}: no labels yet"]
    width = max(8, *(len(c) + 2 for c in classes))
    lines = [f"{title} (rows: true class, columns: predicted; IPW shares of the items, {labels} labels)"]
    lines.append(f"  {'':<14}" + "".join(f"{c[: width - 1]:>{width}}" for c in classes))
    for c, row in zip(classes, shares, strict=True):
        lines.append(f"  {c[:13]:<14}" + "".join(f"{v:>{width}.1%}" for v in row))
    return lines


def render(status: LabelStatus) -> str:
    """The status as a text report: warnings first, then counts, the headline estimate (prediction-powered
    since start, then the window), the estimates of each window by each method, the breakdowns per model
    version and segment, the confusion matrices, agreement and calibration."""
    methods = ("prediction_powered", "ipw", "label_free") if status.read_predictions else ("ipw",)
    window = f"last {span(status.window_s)}"
    rejected = status.rejected_predictions
    not_counted = (
        f" ({sum(rejected.values())} not counted: " + ", ".join(f"{k} {n}" for k, n in rejected.items()) + ")"
        if rejected
        else ""
    )
    lines = _warnings(status)
    lines += [
        f"decisions sent for labeling  {status.decisions}",
        f"label messages               {status.label_messages}",
        f"labels awaiting decision     {status.parked_labels} (parked: dataset.unknown_label_ttl_s)",
        f"labeled items                {status.labeled} resolved, {status.unresolved} awaiting quorum",
        f"predictions counted          {status.estimates['since_start'].items}{not_counted}"
        if status.read_predictions
        else "predictions counted          none (quality.read_predictions is off)",
        "",
        *_headline(status),
        f"accuracy, auto-accepted      {_interval(status.accuracy['auto_accept'])} (audits)",
    ]
    shown = list(zip(WINDOWS, ("since start", window), strict=True))
    first, sliding = status.estimates["since_start"], status.estimates["sliding"]
    if (first.items, first.labels) == (sliding.items, sliding.labels):  # the window holds everything
        shown = shown[:1]
        lines += ["", f"{window}: every item and label since start (the tables hold for both windows)"]
    for w, name in shown:
        s = status.estimates[w]
        empty = s.items == 0 and s.labels == 0
        lines += ["", f"{name}: no items counted, no labels"] if empty else [
            "", *_estimates_table(f"{name} (95% intervals)", s, methods)
        ]  # fmt: skip
    for w, name in shown:
        for what, scopes in (("model version", status.models[w]), ("segment", status.segments[w])):
            table = _breakdown(f"accuracy by {what}, {name}", what.split()[-1], scopes, methods)
            lines += ["", *table] if table else []
    classes = list(status.estimates["since_start"].ipw.recall)
    for w, name in shown:
        lines += [
            "",
            *_confusion(f"confusion, {name}", status.confusion[w], classes, status.estimates[w].labels),
        ]
    agreement = (
        "no item has two votes yet"
        if status.agreement is None
        else f"{status.agreement:.1%} over {status.agreement_items} items with several votes"
    )
    lines += ["", f"annotator agreement          {agreement}"]
    lines += _annotators(status)
    c = status.calibration
    lines.append(
        f"calibration (IPW)            too few labels yet (needs {MIN_CALIBRATION_LABELS})"
        if c is None
        else f"calibration (IPW)            temperature {c.fitted:.3g} fits {c.items} labels best: ECE "
        f"{c.ece_configured:.3f} at the configured {c.configured:g}, {c.ece_fitted:.3f} at {c.fitted:.3g} "
        "(calibration.temperature)"
    )
    return "\n".join(lines)


def _annotators(status: LabelStatus) -> list[str]:
    """How votes became labels, the weak items, and each annotator as the consensus sees them."""
    weak = f"; {status.weak_items} items with a weak consensus" if status.weak_items else ""
    lines = [f"consensus                    {status.consensus}{weak}"]
    if not status.annotators:
        return lines
    lines.append("  annotator            votes  agrees with consensus  estimated accuracy")
    for name, a in sorted(status.annotators.items(), key=lambda kv: (-kv[1].items, kv[0])):
        agrees = "-" if math.isnan(a.agreement_with_consensus) else f"{a.agreement_with_consensus:.1%}"
        lines.append(f"  {name[:20]:<20} {a.items:>5}  {agrees:>21}  {a.estimated_accuracy:>18.1%}")
    return lines
