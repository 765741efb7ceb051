"""The tally of every decided item, and the label-free and prediction-powered estimates built on it."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.estimates import CLASSES, DEFECTS, mid_range_line, model_bands, one_percent_line, ppi, walk
from bench.estimates import label_free as label_free_of
from selector.errors import SelectorError
from selector.quality.divergence import divergence, divergence_arrays
from selector.quality.population import (
    Labeled,
    Tally,
    label_free,
    prediction_powered,
)

NAMES = list(CLASSES)


def probs_of(rng: np.random.Generator, n: int, c: int = 3) -> np.ndarray:
    return rng.dirichlet(np.ones(c) * 0.5, n)


def intervals(e: object) -> list[object]:
    return [e.accuracy, *e.recall.values(), *e.precision.values(), e.defect_rate]  # type: ignore[attr-defined]


class TestTally:
    def test_sums_by_predicted_class(self) -> None:
        """expected[k, j] sums p_j over the items predicted k, expected_sq the squares."""
        probs = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]])
        t = Tally.of_batch(probs, np.array([0, 0, 2]))
        assert t.n == 3
        assert t.expected == pytest.approx(np.array([[1.3, 0.5, 0.2], [0, 0, 0], [0.1, 0.1, 0.8]]))
        assert t.expected_sq[0] == pytest.approx([0.85, 0.13, 0.02])
        assert (Tally.zeros(3).expected == 0).all() and Tally.zeros(3).n == 0

    @settings(max_examples=40, deadline=None)
    @given(st.integers(0, 30), st.integers(0, 30), st.integers(0, 1000))
    def test_adding_batches_is_the_tally_of_the_whole(self, a: int, b: int, seed: int) -> None:
        """Tally(x) + Tally(y) == Tally(x ++ y), and the dict form survives JSON."""
        rng = np.random.default_rng(seed)
        p = probs_of(rng, a + b)
        pred = p.argmax(axis=1)
        whole = Tally.of_batch(p, pred)
        summed = Tally.of_batch(p[:a], pred[:a]) + Tally.of_batch(p[a:], pred[a:])
        assert summed.n == whole.n and np.allclose(summed.expected, whole.expected)
        back = Tally.from_dict(orjson.loads(orjson.dumps(summed.to_dict())))
        assert back.n == whole.n and np.allclose(back.expected_sq, whole.expected_sq)

    def test_bad_input_is_refused(self) -> None:
        with pytest.raises(SelectorError, match="predicted classes"):
            Tally.of_batch(np.ones((2, 3)) / 3, np.array([0, 3]))
        with pytest.raises(SelectorError, match="rows must sum to 1"):
            Tally.of_batch(np.ones((2, 3)), np.array([0, 1]))
        with pytest.raises(SelectorError, match="finite"):
            Tally.of_batch(np.array([[np.nan, 0.5, 0.5]]), np.array([0]))
        with pytest.raises(SelectorError, match="need probs"):
            Tally.of_batch(np.ones((2, 3)) / 3, np.array([0]))
        with pytest.raises(SelectorError, match="cannot add"):
            _ = Tally.zeros(2) + Tally.zeros(3)
        with pytest.raises(SelectorError, match="not a tally"):
            Tally.from_dict({"n": 1, "expected": [[1.0]]})
        with pytest.raises(SelectorError, match="not a tally"):
            Tally.from_dict({"n": 1, "expected": [[1.0, 0.0]], "expected_sq": [[1.0, 0.0]]})


class TestLabelFree:
    def test_cbpe_formulas(self) -> None:
        """accuracy = trace / n, recall_j = E[j, j] / E[:, j].sum(), precision_k = E[k, k] / E[k].sum(),
        defect rate = E[:, defects].sum() / n; Interval.n is the items behind it."""
        probs = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]])
        e = label_free(Tally.of_batch(probs, np.array([0, 0, 2])), NAMES, DEFECTS)
        assert e.accuracy.estimate == pytest.approx(2.1 / 3) and e.accuracy.n == 3
        assert e.recall["ok"].estimate == pytest.approx(1.3 / 1.4)
        assert e.precision["ok"].estimate == pytest.approx(1.3 / 2.0)
        assert e.defect_rate.estimate == pytest.approx(1.6 / 3)
        assert math.isnan(e.precision["scratch"].estimate)  # nothing predicted scratch
        assert all(i.low < i.high for i in intervals(e))

    def test_available_from_the_first_item_and_narrowing(self) -> None:
        one = label_free(Tally.of_batch(np.array([[0.9, 0.05, 0.05]]), np.array([0])), NAMES, DEFECTS)
        assert one.accuracy.estimate == pytest.approx(0.9) and one.accuracy.low < 0.9 < one.accuracy.high
        many = label_free(
            Tally.of_batch(np.tile([[0.9, 0.05, 0.05]], (10_000, 1)), np.zeros(10_000, int)), NAMES, DEFECTS
        )
        assert many.accuracy.high - many.accuracy.low < 0.02


def random_scope(seed: int, n: int, m: int) -> tuple[Tally, Labeled]:
    rng = np.random.default_rng(seed)
    p = probs_of(rng, n)
    pred = p.argmax(axis=1)
    pi = rng.choice([0.002, 0.05, 0.3, 1.0], n)
    idx = rng.choice(n, min(m, n), replace=False)
    label = np.array([rng.choice(3, p=row) for row in p[idx]], dtype=np.int64)
    return Tally.of_batch(p, pred), Labeled(label, pred[idx], p[idx], pi[idx])


class TestPredictionPowered:
    def test_no_labels_gives_the_label_free_point_and_the_whole_unit_interval(self) -> None:
        """Without labels nothing corrects the confidence: the point is the label-free one, the interval
        claims nothing ([0, 1])."""
        tally, lab = random_scope(0, 200, 0)
        e, lf = prediction_powered(tally, lab, NAMES, DEFECTS), label_free(tally, NAMES, DEFECTS)
        assert e.accuracy.estimate == pytest.approx(lf.accuracy.estimate)
        assert all((i.low, i.high) == (0.0, 1.0) for i in intervals(e)) and e.accuracy.n == 0

    def test_every_item_labeled_with_certainty_gives_the_labeled_values(self) -> None:
        """If every decided item is labeled (pi = 1) the corrections replace the proxies exactly."""
        rng = np.random.default_rng(3)
        p = probs_of(rng, 300)
        pred = p.argmax(axis=1)
        label = rng.integers(0, 3, 300)
        e = prediction_powered(Tally.of_batch(p, pred), Labeled(label, pred, p, np.ones(300)), NAMES, DEFECTS)
        hit = (label == pred) & (label == 2)
        assert e.accuracy.estimate == pytest.approx(np.mean(label == pred))
        assert e.recall["dent"].estimate == pytest.approx(hit.sum() / (label == 2).sum())
        assert e.precision["dent"].estimate == pytest.approx(hit.sum() / (pred == 2).sum())
        assert e.defect_rate.estimate == pytest.approx(np.mean(DEFECTS[label]))
        assert e.accuracy.n == 300 and e.recall["dent"].n == (label == 2).sum()

    @settings(max_examples=60, deadline=None)
    @given(st.integers(1, 80), st.integers(0, 80), st.integers(0, 10_000))
    def test_intervals_in_unit_interval_holding_the_estimate(self, n: int, m: int, seed: int) -> None:
        """0 <= low <= estimate <= high <= 1 and low < high whenever the estimate exists (also label-free)."""
        tally, lab = random_scope(seed, n, m)
        for e in (prediction_powered(tally, lab, NAMES, DEFECTS), label_free(tally, NAMES, DEFECTS)):
            for i in intervals(e):
                assert 0.0 <= i.low < i.high <= 1.0
                assert math.isnan(i.estimate) or i.low <= i.estimate <= i.high

    def test_unbiased_where_the_confidence_is_wrong(self) -> None:
        """After a drift the confidence cannot see (3% of the confident 'ok' items are dents), the mean
        prediction-powered accuracy over 2,000 replicates of 500 labels is within 0.002 of the truth; the
        label-free one is off by 0.028."""
        line = one_percent_line(drift=0.03)
        w = walk(line, (500,), 2000, seed=7)
        truth = line.true_values()[0]
        assert abs(float(np.mean(ppi(line, w, 0).estimate[:, 0])) - truth) < 0.002
        assert float(np.mean(label_free_of(line, w, 0).estimate[:, 0])) - truth > 0.025

    def test_narrower_than_ipw_under_calibration(self) -> None:
        """Mid-range line, calibrated, 500 labels: the prediction-powered accuracy interval is narrower than
        the IPW one on average (the ratio is in the bench, docs/performance.md)."""
        line = mid_range_line()
        w = walk(line, (500,), 300, seed=8)
        p = ppi(line, w, 0)
        i = model_bands(w.label, line.predicted[w.types], w.pi, len(CLASSES), DEFECTS)
        assert np.mean(p.high - p.low, axis=0)[0] < 0.95 * np.mean(i.high - i.low, axis=0)[0]

    def test_bad_input_is_refused(self) -> None:
        tally, lab = random_scope(0, 20, 5)
        with pytest.raises(SelectorError, match="differ in length"):
            prediction_powered(
                tally, Labeled(lab.label, lab.predicted[:2], lab.probs, lab.pi), NAMES, DEFECTS
            )
        with pytest.raises(SelectorError, match=r"\(0, 1\]"):
            prediction_powered(
                tally, Labeled(lab.label, lab.predicted, lab.probs, lab.pi * 0), NAMES, DEFECTS
            )
        with pytest.raises(SelectorError, match=r"label class indices must lie in \[0, 3\)"):
            prediction_powered(
                tally,
                Labeled(lab.label + 3 * (lab.label == 2), lab.predicted, lab.probs, lab.pi),
                NAMES,
                DEFECTS,
            )
        with pytest.raises(SelectorError, match=r"labeled probs must be \(5, 3\)"):
            prediction_powered(
                tally, Labeled(lab.label, lab.predicted, lab.probs[:, :2], lab.pi), NAMES, DEFECTS
            )
        with pytest.raises(SelectorError, match="for 2 classes"):
            label_free(tally, NAMES[:2], DEFECTS[:2])


def sigmas(line_drift: float, grid: tuple[int, ...], reps: int, seed: int) -> np.ndarray:
    line = one_percent_line(drift=line_drift)
    w = walk(line, grid, reps, seed)
    out = []
    for g, n in enumerate(grid):
        t = w.types[:, :n]
        gap, se = divergence_arrays(
            w.items[:, g].astype(float), w.label[:, :n], line.predicted[t], line.probs[t], w.pi[:, :n]
        )
        out.append(gap / se)
    return np.array(out)


class TestDivergence:
    def test_quiet_while_calibration_holds(self) -> None:
        """Calibrated 1%-defect line, 2,000 replicates at 30..500 labels: |sigmas| > 4 in at most 1%."""
        s = sigmas(0.0, (30, 100, 500), 2000, seed=9)
        assert (np.abs(s) > 4).mean(axis=1).max() <= 0.01

    def test_grows_with_the_labels_after_a_drift(self) -> None:
        """A drift the confidence cannot see (10% of the confident 'ok' items become dents): the median
        sigmas falls with every grid point and passes -4 by 1,000 labels."""
        med = np.median(sigmas(0.1, (50, 200, 1000), 300, seed=10), axis=1)
        assert med[0] > med[1] > med[2] and med[2] < -4

    def test_nan_below_min_labels_and_on_the_scalar_api(self) -> None:
        tally, lab = random_scope(1, 100, 10)
        d = divergence(tally, lab, min_labels=30)
        assert d.labels == 10 and math.isnan(d.sigmas) and d.se > 0
        assert not math.isnan(divergence(tally, lab, min_labels=5).sigmas)
        empty = divergence(
            Tally.zeros(3), Labeled(np.zeros(0, int), np.zeros(0, int), np.zeros((0, 3)), np.zeros(0))
        )
        assert (empty.gap, empty.labels) == (0.0, 0) and math.isnan(empty.sigmas)
