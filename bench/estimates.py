"""Coverage and width of the estimates' 95% intervals on a simulated line.

``python bench/estimates.py [--quick]``. A line is a finite set of item types, each with its share of the
stream, the calibrated probabilities the model gives it, the true label distribution (the same when
calibration holds; a concept drift moves it while the confidence stays) and its inclusion probability
(audits of confident items at the audit rate, queries of uncertain items at 0.05..1, more likely where the
model is wrong more often; the first items of the stream at 1, a cold start). The true accuracy, recall,
precision and defect rate follow exactly from the types. A replicate walks the stream until its n-th label:
the labeled items are the cold start then independent draws tilted by ``pi``; between two labels the stream
holds a geometric number of unlabeled items. Every estimator sees what the label loop would: the labeled
items and the tally of every decided item.

Prints Markdown tables: coverage and mean width per estimator (the IPW estimator before issue 14, today's IPW,
prediction-powered, label-free) and n, on the 1%-defect line with calibrated confidence and after a drift
the confidence cannot see; labels and items until the divergence alarm (|sigmas| > 4) after such a drift; the
labels the recall of a defect class needs for a given interval width, IPW against prediction-powered.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench` is not installed, run as a script

import argparse
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from bench.markdown import table
from selector.arrays import FloatArray, IntArray
from selector.quality.divergence import divergence_arrays
from selector.quality.estimates import model_bands
from selector.quality.intervals import Z_95, Bands
from selector.quality.population import (
    label_free_bands,
    labels_only_bands,
    prediction_powered_bands,
)

CLASSES = ("ok", "scratch", "dent")
DEFECTS = np.array([False, True, True])
NAMES = ("accuracy", *(f"recall {c}" for c in CLASSES), *(f"precision {c}" for c in CLASSES), "defect rate")
GRID = (1, 2, 3, 5, 8, 13, 20, 30, 50, 100, 200, 500)


@dataclass(frozen=True)
class Line:
    """Item types of a simulated line."""

    share: FloatArray  # (T,) share of the stream
    probs: FloatArray  # (T, C) calibrated probabilities the model gives
    truth: FloatArray  # (T, C) true label distribution
    pi: FloatArray  # (T,) inclusion probability after the cold start
    cold: int  # the first items, labeled with certainty

    @property
    def predicted(self) -> IntArray:
        out: IntArray = self.probs.argmax(axis=1)
        return out

    def true_values(self) -> FloatArray:
        """Accuracy, recall and precision per class, defect rate: (Q,) in the estimators' order."""
        joint = self.share[:, None] * self.truth  # (T, C): share of type t with label j
        pred = np.eye(len(CLASSES))[self.predicted]  # (T, C)
        hit = (joint * pred).sum(axis=0)  # (C,) share labeled j and predicted j
        accuracy = hit.sum()
        recall = hit / joint.sum(axis=0)
        precision = hit / (self.share[:, None] * pred).sum(axis=0)
        return np.concatenate([[accuracy], recall, precision, [joint[:, DEFECTS].sum()]])


def one_percent_line(drift: float = 0.0, audit: float = 0.01, cold: int = 5) -> Line:
    """A 1%-defect line: mostly confident ``ok`` items (accepted, audited at ``audit``), confident defects
    (queried at 0.3, a class share), and uncertain items queried with ``pi`` rising with their uncertainty.
    ``drift`` turns that share of the confident ``ok`` items into dents the model still calls ``ok`` with
    the same confidence."""
    rows = [  # share, probs (ok, scratch, dent), pi (None: the audit rate)
        (0.930, (0.998, 0.001, 0.001), None),
        (0.040, (0.960, 0.030, 0.010), 0.05),
        (0.003, (0.020, 0.970, 0.010), 0.3),
        (0.002, (0.030, 0.010, 0.960), 0.3),
        (0.012, (0.800, 0.150, 0.050), 0.2),
        (0.006, (0.550, 0.300, 0.150), 0.5),
        (0.003, (0.350, 0.550, 0.100), 0.8),
        (0.002, (0.400, 0.150, 0.450), 1.0),
        (0.002, (0.300, 0.100, 0.600), 0.6),
    ]
    return _line(rows, drift, audit, cold, drifting=(0, 1))


def mid_range_line(drift: float = 0.0, audit: float = 0.05, cold: int = 5) -> Line:
    """A weaker model on a line with 30% defects: every value mid-range."""
    rows = [
        (0.45, (0.90, 0.06, 0.04), None),
        (0.15, (0.60, 0.25, 0.15), 0.2),
        (0.12, (0.15, 0.75, 0.10), 0.1),
        (0.10, (0.20, 0.10, 0.70), 0.1),
        (0.08, (0.40, 0.35, 0.25), 0.5),
        (0.06, (0.30, 0.30, 0.40), 0.7),
        (0.04, (0.35, 0.45, 0.20), 1.0),
    ]
    return _line(rows, drift, audit, cold, drifting=(0,))


def _line(
    rows: Sequence[tuple[float, tuple[float, float, float], float | None]],
    drift: float,
    audit: float,
    cold: int,
    drifting: tuple[int, ...],
) -> Line:
    share = np.array([r[0] for r in rows])
    probs = np.array([r[1] for r in rows])
    pi = np.array([audit if r[2] is None else r[2] for r in rows])
    truth = probs.copy()
    dent = np.eye(len(CLASSES))[2]
    for t in drifting:
        truth[t] = (1.0 - drift) * probs[t] + drift * dent
    return Line(share / share.sum(), probs, truth, pi, cold)


@dataclass(frozen=True)
class Walk:
    """Replicates of a walk down the stream, up to the last label count of the grid."""

    types: IntArray  # (R, n_max) type of each labeled item, in order
    label: IntArray  # (R, n_max)
    pi: FloatArray  # (R, n_max)
    grid: tuple[int, ...]
    items: IntArray  # (R, G) decided items up to the n-th label, n on the grid
    counts: IntArray  # (R, G, T) decided items of each type up to then


def walk(line: Line, grid: Sequence[int], reps: int, seed: int) -> Walk:
    """Replicates of the stream up to each label count of ``grid`` (vectorized over replicates)."""
    rng = np.random.default_rng(seed)
    n_max, n_types = max(grid), len(line.share)
    cold = min(line.cold, n_max)
    tilted = line.share * line.pi / np.dot(line.share, line.pi)
    types = np.concatenate(
        [
            rng.choice(n_types, (reps, cold), p=line.share),
            rng.choice(n_types, (reps, n_max - cold), p=tilted),
        ],
        axis=1,
    )
    pi = np.where(np.arange(n_max) < cold, 1.0, line.pi[types])
    cum = line.truth[types].cumsum(axis=2)
    label = (rng.random((reps, n_max, 1)) > cum).sum(axis=2).clip(0, len(CLASSES) - 1)
    gaps = rng.geometric(np.dot(line.share, line.pi), (reps, n_max)) - 1
    gaps[:, :cold] = 0
    unlabeled_share = line.share * (1 - line.pi) / np.dot(line.share, 1 - line.pi)
    onehot = np.eye(n_types, dtype=np.int64)
    items, counts, done, running = [], [], 0, np.zeros((reps, n_types), dtype=np.int64)
    for n in grid:
        running = running + onehot[types[:, done:n]].sum(axis=1)
        running = running + rng.multinomial(gaps[:, done:n].sum(axis=1), unlabeled_share)
        done = n
        counts.append(running)
        items.append(running.sum(axis=1))
    return Walk(types, label, pi, tuple(grid), np.stack(items, axis=1), np.stack(counts, axis=1))


def tally_arrays(line: Line, counts: IntArray) -> FloatArray:
    """(R, C, C) tallies ``expected`` from per-type counts (R, T)."""
    pred = np.eye(len(CLASSES))[line.predicted]  # (T, C)
    out: FloatArray = np.einsum("rt,tk,tj->rkj", counts.astype(np.float64), pred, line.probs)
    return out


Estimator = Callable[[Line, Walk, int], Bands]


def ipw(line: Line, w: Walk, g: int) -> Bands:
    n = w.grid[g]
    return model_bands(w.label[:, :n], line.predicted[w.types[:, :n]], w.pi[:, :n], len(CLASSES), DEFECTS)


def ppi(line: Line, w: Walk, g: int) -> Bands:
    n = w.grid[g]
    t = w.types[:, :n]
    expected = tally_arrays(line, w.counts[:, g])
    return prediction_powered_bands(
        w.items[:, g].astype(np.float64),
        expected,
        w.label[:, :n],
        line.predicted[t],
        line.probs[t],
        w.pi[:, :n],
        DEFECTS,
    )


def ipw_counted(line: Line, w: Walk, g: int) -> Bands:
    """The labels' own estimates when the decided items are counted (as the label loop's status has them)."""
    n = w.grid[g]
    label, predicted, pi = w.label[:, :n], line.predicted[w.types[:, :n]], w.pi[:, :n]
    return labels_only_bands(w.items[:, g].astype(np.float64), label, predicted, pi, len(CLASSES), DEFECTS)


def label_free(line: Line, w: Walk, g: int) -> Bands:
    return label_free_bands(w.items[:, g].astype(np.float64), tally_arrays(line, w.counts[:, g]), DEFECTS)


def old_ipw(line: Line, w: Walk, g: int) -> Bands:
    """The IPW estimator before issue 14 (its code, copied below), one replicate at a time."""
    n = w.grid[g]
    label, predicted, pi = w.label[:, :n], line.predicted[w.types[:, :n]], w.pi[:, :n]
    correct = (label == predicted).astype(np.float64)
    shape = (len(label), len(NAMES))
    est, low, high = np.full(shape, np.nan), np.zeros(shape), np.ones(shape)
    for r in range(len(label)):
        rows = [(correct[r], pi[r])]
        rows += [(correct[r][label[r] == c], pi[r][label[r] == c]) for c in range(len(CLASSES))]
        rows += [(correct[r][predicted[r] == c], pi[r][predicted[r] == c]) for c in range(len(CLASSES))]
        rows += [(DEFECTS[label[r]].astype(np.float64), pi[r])]
        for q, (y, p) in enumerate(rows):
            if len(y):
                est[r, q], low[r, q], high[r, q] = _old_weighted_mean(y, p)
    return Bands(est, low, high, np.zeros(shape, dtype=np.int64))


def _old_wilson_bounds(p: float, n: float, z: float) -> tuple[float, float]:
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def _old_weighted_mean(y: FloatArray, pi: FloatArray, z: float = Z_95) -> tuple[float, float, float]:
    w = 1.0 / pi
    total = float(w.sum())
    mean = min(1.0, max(0.0, float(np.dot(w, y) / total)))
    var = float(np.sum((1.0 - pi) * w * w * (y - mean) ** 2)) / (total * total)
    if not (pi < 1.0).any():
        return mean, mean, mean
    if 0.0 < mean < 1.0:
        if var <= 0.0:
            return mean, mean, mean
        n_eff = min(float(len(y)), mean * (1.0 - mean) / var)
    else:
        n_eff = total * total / float(np.dot(w, w))
    low, high = _old_wilson_bounds(mean, n_eff, z)
    return mean, low, high


ESTIMATORS: dict[str, Estimator] = {
    "IPW before": old_ipw,
    "IPW": ipw,
    "IPW, items counted": ipw_counted,
    "PPI": ppi,
    "label-free": label_free,
}


@dataclass(frozen=True)
class Coverage:
    """Per grid point and estimand: the share of replicates whose interval holds the truth, mean width."""

    covered: FloatArray  # (G, Q)
    width: FloatArray  # (G, Q)


def coverage(line: Line, w: Walk, estimator: Estimator) -> Coverage:
    truth = line.true_values()
    covered, width = [], []
    for g in range(len(w.grid)):
        b = estimator(line, w, g)
        covered.append(((b.low <= truth) & (truth <= b.high)).mean(axis=0))
        width.append((b.high - b.low).mean(axis=0))
    return Coverage(np.array(covered), np.array(width))


def _concat(before: Walk, after: Walk, g: int) -> tuple[IntArray, IntArray, FloatArray, IntArray, IntArray]:
    """The labeled items (types, labels, pi) and decided items (total, per type) of a scope that holds all of
    ``before`` and ``after`` up to its ``g``-th grid point."""
    n = after.grid[g]
    types = np.concatenate([before.types, after.types[:, :n]], axis=1)
    label = np.concatenate([before.label, after.label[:, :n]], axis=1)
    pi = np.concatenate([before.pi, after.pi[:, :n]], axis=1)
    return (
        types,
        label,
        pi,
        before.items[:, -1] + after.items[:, g],
        before.counts[:, -1] + after.counts[:, g],
    )


def divergence_alarm(
    before: Line, after: Line, labels_before: int, grid: Sequence[int], reps: int, seed: int
) -> tuple[float, float, float]:
    """Labels and items after a drift until ``|sigmas| > 4`` (median over replicates, first grid point that
    fires; the scope holds ``labels_before`` labels from before the drift), and the share that fired."""
    pre = walk(before, (labels_before,), reps, seed) if labels_before else None
    post = walk(after, grid, reps, seed + 1)
    fired_at = np.full(reps, -1)
    for g in range(len(grid)):
        if pre is None:
            n = grid[g]
            types, label, pi, items = post.types[:, :n], post.label[:, :n], post.pi[:, :n], post.items[:, g]
        else:
            types, label, pi, items, _ = _concat(pre, post, g)
        gap, se = divergence_arrays(
            items.astype(np.float64), label, before.predicted[types], before.probs[types], pi
        )
        fires = (np.abs(gap / se) > 4) & (fired_at < 0)
        fired_at[fires] = g
    fired = fired_at >= 0
    if fired.mean() < 0.5:
        return math.nan, math.nan, float(fired.mean())
    at = np.where(fired, fired_at, len(grid))  # never fired: past the grid (counts in the median's favour)
    median_g = int(np.median(at))
    post_items = np.median(post.items[np.arange(reps), np.minimum(at, len(grid) - 1)])
    return float(grid[median_g]), float(post_items), float(fired.mean())


def width_curve(line: Line, estimator: Estimator, grid: Sequence[int], reps: int, seed: int) -> FloatArray:
    """(G, Q) mean interval width per grid point and estimand."""
    return coverage(line, walk(line, grid, reps, seed), estimator).width


def labels_needed(width: FloatArray, grid: Sequence[int], target: float) -> str:
    """The first grid point whose mean width is at most ``target`` ("> last" if none)."""
    hit = np.flatnonzero(width <= target)
    return f"{grid[hit[0]]:,}" if len(hit) else f"> {grid[-1]:,}"


def _percent(x: float) -> str:
    return f"{100 * x:.1f}%"


def _coverage_section(title: str, line: Line, reps: int) -> None:
    w = walk(line, GRID, reps, seed=1)
    results = {name: coverage(line, w, est) for name, est in ESTIMATORS.items()}
    truth = ", ".join(f"{n} {v:.3f}" for n, v in zip(NAMES, line.true_values(), strict=True))
    print(f"\n#### {title}\n\nTrue values: {truth}.\n")
    headers = [
        "labels",
        *(f"{k}: worst coverage" for k in ESTIMATORS),
        *(f"{k}: accuracy width" for k in ESTIMATORS),
    ]
    rows = []
    for g, n in enumerate(GRID):
        cov = [
            f"{_percent(r.covered[g].min())} ({NAMES[int(np.argmin(r.covered[g]))]})"
            for r in results.values()
        ]
        rows.append([str(n), *cov, *(f"{r.width[g, 0]:.3f}" for r in results.values())])
    print(table(headers, rows, "r" * len(headers)))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer replicates (about 20 s)")
    args = parser.parse_args(argv)
    reps, curve_reps = (300, 60) if args.quick else (2000, 200)
    print(f"### Estimates: coverage of 95% intervals ({reps} replicates per cell)")
    print("\nWorst coverage over the 8 estimands (accuracy, recall and precision of ok/scratch/dent, defect")
    print("rate) at each label count, and the mean width of the accuracy interval.")
    scenarios = [
        ("1%-defect line, calibrated confidence, audits at 0.2%", one_percent_line(audit=0.002)),
        (
            "1%-defect line after a drift the confidence cannot see (3% of confident ok are dents)",
            one_percent_line(drift=0.03, audit=0.002),
        ),
        ("1%-defect line, calibrated, audits at 1%", one_percent_line(audit=0.01, cold=0)),
    ]
    for title, line in scenarios:
        _coverage_section(title, line, reps)

    grid = (100, 200, 500, 1000, 2000, 5000)
    print("\n#### Mean interval width as labels accumulate (1%-defect line, calibrated, audits at 1%)\n")
    line = one_percent_line(audit=0.01, cold=0)
    widths = {k: width_curve(line, ESTIMATORS[k], grid, curve_reps, seed=5) for k in ("IPW", "PPI")}
    focus = [0, 1, 2, 3, 7]
    headers = ["labels", *(f"{k}: {NAMES[q]}" for k in widths for q in focus), "PPI / IPW, accuracy"]
    rows = [
        [
            f"{n:,}",
            *(f"{widths[k][g, q]:.3f}" for k in widths for q in focus),
            f"{widths['PPI'][g, 0] / widths['IPW'][g, 0]:.2f}",
        ]
        for g, n in enumerate(grid)
    ]
    print(table(headers, rows, "r" * len(headers)))
    print("\nLabels until the mean width is at most the target:\n")
    rows = []
    for q, target in ((0, 0.05), (0, 0.02), (1, 0.01), (2, 0.3), (3, 0.3), (7, 0.02)):
        rows.append([NAMES[q], f"{target}", *(labels_needed(widths[k][:, q], grid, target) for k in widths)])
    print(table(["estimand", "width", "IPW", "PPI"], rows, "lrrr"))

    print("\n#### Divergence alarm (|sigmas| > 4) after a drift the confidence cannot see\n")
    alarm_grid = (25, 50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000)
    rows = []
    for drift in (0.03, 0.1):
        for audit in (0.002, 0.01):
            before, after = one_percent_line(audit=audit), one_percent_line(drift=drift, audit=audit)
            for scope, pre in (("since start, 200 labels before", 200), ("window from the drift", 0)):
                labels, items, share = divergence_alarm(before, after, pre, alarm_grid, curve_reps, seed=7)
                shown = (f"{labels:,.0f}", f"{items:,.0f}") if not math.isnan(labels) else ("> 5,000", "-")
                rows.append([f"{drift:.0%}", f"{audit:.1%}", scope, *shown, _percent(share)])
    print(
        table(
            ["drift", "audits", "scope", "labels (median)", "items (median)", "fired within 5,000"],
            rows,
            "rrlrrr",
        )
    )


if __name__ == "__main__":
    main()
