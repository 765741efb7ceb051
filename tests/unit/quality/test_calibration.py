"""Specification of temperature scaling: the fit recovers a known temperature; applying it keeps the order."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from selector.arrays import FloatArray, IntArray
from selector.errors import SelectorError
from selector.quality.calibration import (
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    apply_temperature,
    calibrate,
    expected_calibration_error,
    fit_temperature,
    logits_of,
    nll,
    softmax,
)

N = 20_000
C = 4
TRUE_T = 3.0
T_TOLERANCE = 15 / math.sqrt(N)
"""About 10% at 20k items: the fitted temperature's standard error here is ~1/sqrt(n) relative, this is
several of them (the data are seeded, so the test is deterministic; the margin is for other seeds)."""


def sample(seed: int, n: int = N) -> tuple[FloatArray, IntArray]:
    """Logits of a known model and labels drawn from its softmax: calibrated by construction."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, size=(n, C)) + np.array([1.0, 0.0, -0.5, -1.0])
    p = softmax(z)
    labels = (np.cumsum(p, axis=1) < rng.random(n)[:, None]).sum(axis=1).clip(0, C - 1)
    return z, labels.astype(np.int64)


def entropy(p: FloatArray) -> FloatArray:
    q = np.where(p > 0, p, 1.0)
    out: FloatArray = -(p * np.log(q)).sum(axis=1)
    return out


probability_rows = hnp.arrays(
    np.float64,
    st.tuples(st.integers(1, 8), st.integers(2, 6)),
    elements=st.floats(0.0, 1.0),
).filter(lambda a: bool((a.sum(axis=1) > 0).all()))


class TestFitTemperature:
    def test_recovers_the_temperature_of_over_confident_logits(self) -> None:
        """Logits multiplied by 3 are fitted a temperature within ~10% of 3 on 20k items."""
        z, labels = sample(0)
        t = fit_temperature(TRUE_T * z, labels)
        assert abs(t / TRUE_T - 1) < T_TOLERANCE

    def test_calibrated_logits_get_a_temperature_near_one(self) -> None:
        """Labels drawn from the model's own softmax need no correction."""
        z, labels = sample(1)
        assert abs(fit_temperature(z, labels) - 1) < T_TOLERANCE

    def test_fitted_temperature_minimizes_the_nll(self) -> None:
        """No temperature nearby has a lower negative log likelihood than the fitted one."""
        z, labels = sample(2, n=2000)
        t = fit_temperature(TRUE_T * z, labels)
        best = nll(softmax(TRUE_T * z / t), labels)
        for factor in (0.99, 1.01, 0.9, 1.1):
            assert best <= nll(softmax(TRUE_T * z / (t * factor)), labels)

    def test_is_deterministic_and_shift_invariant(self) -> None:
        """The same data give the same bits; a constant added to a row changes nothing (log probs work)."""
        z, labels = sample(3, n=3000)
        t = fit_temperature(z, labels)
        assert fit_temperature(z, labels) == t
        assert fit_temperature(logits_of(softmax(z)), labels) == pytest.approx(t, rel=1e-8)

    def test_hand_computed_case(self) -> None:
        """Margin 4 and 3 of 4 right: the optimum puts 0.75 on the top class, so T = 4 / ln 3."""
        z = np.array([[4.0, 0.0], [4.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
        assert fit_temperature(z, np.array([0, 0, 1, 1])) == pytest.approx(4 / math.log(3), rel=1e-8)

    def test_all_right_hits_the_lower_bound_and_all_wrong_the_upper(self) -> None:
        """When the loss keeps falling to one side the nearer bound of [0.05, 20] is returned."""
        z = np.array([[2.0, 0.0], [0.0, 2.0]])
        assert fit_temperature(z, np.array([0, 1])) == MIN_TEMPERATURE
        assert fit_temperature(z, np.array([1, 0])) == MAX_TEMPERATURE

    def test_flat_logits_keep_temperature_one(self) -> None:
        """Uniform rows have the same loss at every temperature: no change is the answer."""
        assert fit_temperature(np.zeros((3, 3)), np.array([0, 1, 2])) == 1.0

    @pytest.mark.parametrize(
        ("logits", "labels", "message"),
        [
            (np.zeros((0, 3)), np.zeros(0, dtype=np.int64), "at least one labeled item, got none"),
            (np.zeros((2, 3)), np.array([0, 3]), "labels must be class indices in [0, 3): item 1 has 3"),
            (np.zeros((2, 3)), np.array([-1, 0]), "labels must be class indices in [0, 3): item 0 has -1"),
            (np.zeros((2, 3)), np.array([0]), "'logits' must be (n, C) and labels (n,)"),
            (np.array([[0.0, np.inf]]), np.array([0]), "logits must be finite"),
        ],
    )
    def test_invalid_input_raises(self, logits: FloatArray, labels: IntArray, message: str) -> None:
        """Empty input, labels out of range, mismatched shapes and non-finite logits are errors saying so."""
        with pytest.raises(SelectorError) as info:
            fit_temperature(logits, labels)
        assert message in str(info.value)


class TestApplyTemperature:
    @given(probability_rows, st.floats(MIN_TEMPERATURE, MAX_TEMPERATURE))
    def test_rows_stay_normalized_and_the_top_class_stays_on_top(self, raw: FloatArray, t: float) -> None:
        """Every row sums to 1, and the class that was most probable is still a most probable one."""
        p = raw / raw.sum(axis=1, keepdims=True)
        q = apply_temperature(p, t)
        assert q.shape == p.shape
        assert np.allclose(q.sum(axis=1), 1.0, rtol=0, atol=1e-12)
        top = p.argmax(axis=1)
        assert (q[np.arange(len(q)), top] == q.max(axis=1)).all()
        assert (q[p == 0] == 0).all()

    def test_temperature_one_returns_the_same_object(self) -> None:
        """The hot path pays nothing for the default temperature."""
        p = np.array([[0.7, 0.3]])
        assert apply_temperature(p, 1.0) is p

    def test_one_hot_rows_stay_one_hot(self) -> None:
        """A zero probability stays exactly zero at any temperature."""
        p = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
        for t in (MIN_TEMPERATURE, 0.5, 3.0, MAX_TEMPERATURE):
            assert (apply_temperature(p, t) == p).all()

    def test_higher_temperature_raises_entropy(self) -> None:
        """Softening spreads the mass: entropy increases strictly with T for a non-uniform row."""
        p = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]])
        values = [entropy(apply_temperature(p, t)) for t in (0.25, 0.5, 1.0, 2.0, 4.0)]
        for lower, higher in itertools.pairwise(values):
            assert (higher > lower).all()

    def test_matches_softmax_of_scaled_logits(self) -> None:
        """``apply_temperature(softmax(z), T) == softmax(z / T)``."""
        z, _ = sample(4, n=100)
        assert np.allclose(apply_temperature(softmax(z), 2.5), softmax(z / 2.5), rtol=1e-12, atol=1e-15)

    def test_logits_of_round_trips_through_softmax(self) -> None:
        """Zeros are floored, so the logs are finite, and the softmax gives the probabilities back."""
        p = np.array([[0.5, 0.5, 0.0], [0.1, 0.2, 0.7]])
        z = logits_of(p)
        assert np.isfinite(z).all()
        assert np.allclose(softmax(z), p, rtol=1e-12, atol=1e-300)

    def test_non_positive_temperature_raises(self) -> None:
        with pytest.raises(SelectorError, match=r"temperature must be > 0: 0\.0"):
            apply_temperature(np.array([[0.5, 0.5]]), 0.0)


class TestExpectedCalibrationError:
    def test_perfectly_calibrated_construction_is_zero(self) -> None:
        """Confidence 0.6 right 6 times in 10, 0.9 right 9 in 10: each bin's accuracy is its confidence."""
        p = np.array([[0.6, 0.4]] * 10 + [[0.9, 0.1]] * 10)
        labels = np.array([0] * 6 + [1] * 4 + [0] * 9 + [1])
        assert expected_calibration_error(p, labels) == pytest.approx(0.0, abs=1e-12)

    def test_labels_drawn_from_the_probabilities_are_near_zero(self) -> None:
        """Sampling the labels from the model's own probabilities is calibrated up to sampling noise."""
        z, labels = sample(5)
        assert expected_calibration_error(softmax(z), labels) < 0.02

    def test_hand_computed_toy_case(self) -> None:
        """Bin (0.8, 0.867]: 4 items at 0.85, 2 right: |0.5 - 0.85| * 4/6; bin (0.6, 0.667]: 2 items at
        0.65, none right: |0 - 0.65| * 2/6. ECE = 0.35 * 4/6 + 0.65 * 2/6 = 0.45."""
        p = np.array([[0.85, 0.15]] * 4 + [[0.35, 0.65]] * 2)
        labels = np.array([0, 0, 1, 1, 0, 0])
        assert expected_calibration_error(p, labels) == pytest.approx(0.45, rel=1e-12)

    def test_confidence_one_falls_in_the_last_bin(self) -> None:
        """A one-hot right prediction is perfectly calibrated, a wrong one is off by 1."""
        p = np.array([[1.0, 0.0]])
        assert expected_calibration_error(p, np.array([0])) == 0.0
        assert expected_calibration_error(p, np.array([1])) == 1.0

    def test_nll_of_a_hand_computed_case(self) -> None:
        """``-(log 0.8 + log 0.5) / 2``; a zero probability on the truth is large, not infinite."""
        p = np.array([[0.8, 0.2], [0.5, 0.5]])
        assert nll(p, np.array([0, 1])) == pytest.approx(-(math.log(0.8) + math.log(0.5)) / 2)
        assert 700 < nll(np.array([[1.0, 0.0]]), np.array([1])) < 710

    def test_invalid_input_raises(self) -> None:
        with pytest.raises(SelectorError, match="at least one labeled item"):
            expected_calibration_error(np.zeros((0, 2)), np.zeros(0, dtype=np.int64))
        with pytest.raises(SelectorError, match="bins must be >= 1: 0"):
            expected_calibration_error(np.array([[0.5, 0.5]]), np.array([0]), bins=0)


class TestCalibrate:
    def test_over_confident_model_gets_better_after_fitting(self) -> None:
        """NLL and ECE drop, accuracy is that of the argmax, and the temperature is near the true one."""
        z, labels = sample(6)
        probs = softmax(TRUE_T * z)
        report = calibrate(probs, labels)
        assert abs(report.temperature / TRUE_T - 1) < T_TOLERANCE
        assert report.items == N
        assert report.accuracy == pytest.approx(float(np.mean(probs.argmax(axis=1) == labels)))
        assert report.nll_after < report.nll_before
        assert report.ece_after < report.ece_before / 5
        assert report.ece_after < 0.02

    def test_given_logits_are_what_is_fitted(self) -> None:
        """Logits and the log of their softmax fit the same temperature."""
        z, labels = sample(7, n=2000)
        from_logits = calibrate(softmax(z), labels, logits=z)
        from_probs = calibrate(softmax(z), labels)
        assert from_logits.temperature == pytest.approx(from_probs.temperature, rel=1e-8)


class TestWeighted:
    def test_integer_weights_count_like_repeated_rows(self) -> None:
        """Weight 3 on a row fits, scores and bins exactly like the row three times."""
        z, labels = sample(11, 400)
        w = np.random.default_rng(2).integers(1, 4, 400).astype(np.float64)
        rep = np.repeat(np.arange(400), w.astype(int))
        assert fit_temperature(z, labels, w) == pytest.approx(fit_temperature(z[rep], labels[rep]), rel=1e-9)
        p = softmax(z)
        assert nll(p, labels, w) == pytest.approx(nll(p[rep], labels[rep]), rel=1e-12)
        ece = expected_calibration_error(p, labels, weights=w)
        assert ece == pytest.approx(expected_calibration_error(p[rep], labels[rep]), rel=1e-12)

    def test_inverse_probability_weights_undo_a_selective_sample(self) -> None:
        """A model 4x over-confident where it is confident and calibrated elsewhere (one temperature cannot
        fix both, so the best one depends on the mix), labeled with pi rising steeply with uncertainty (as
        queries are): weighted by 1 / pi the fit finds the stream's temperature; unweighted it finds the
        uncertain items' instead. (Had one temperature been right everywhere, selecting on the input alone
        would not bias the fit.)"""
        z, labels = sample(12, 60_000)
        over = z * np.where(softmax(z).max(axis=1) > 0.6, 4.0, 1.0)[:, None]
        p = softmax(over)
        pi = np.clip(0.02 + 0.9 * (1.0 - p.max(axis=1)) ** 2, 0.0, 1.0)
        picked = np.random.default_rng(3).random(len(pi)) < pi
        stream = fit_temperature(over, labels)
        weighted = fit_temperature(over[picked], labels[picked], 1.0 / pi[picked])
        plain = fit_temperature(over[picked], labels[picked])
        assert abs(weighted - stream) < 0.1 * stream < abs(plain - stream)

    def test_bad_weights_are_refused(self) -> None:
        z, labels = sample(13, 10)
        with pytest.raises(SelectorError, match="weights must be 10 positive finite numbers, one per item"):
            fit_temperature(z, labels, np.zeros(10))
        with pytest.raises(SelectorError, match="weights must be 10 positive finite numbers"):
            nll(softmax(z), labels, np.ones(9))
