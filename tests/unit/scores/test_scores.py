"""Conformance suite for every informativeness measure in the registry, plus closed-form values.

The suite is parametrized over ``selector.scores.base.MEASURES``: a measure added to the registry is run
through every check here without anyone editing this file.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selector.arrays import FloatArray
from selector.errors import SelectorError
from selector.scores import compute, entropy, least_confidence, margin, measure_names, ratio
from selector.scores.base import FIELD_OF, MEASURES, ONLINE, STATEFUL, Measure
from tests.unit.strategies import prob_rows

ALL = sorted(MEASURES.items())
IDS = [name for name, _ in ALL]
PROPERTY = settings(max_examples=60, deadline=None)


@st.composite
def prob_matrices(draw: st.DrawFn, min_rows: int = 1) -> FloatArray:
    """An (n, C) matrix of probability rows with 2 <= C <= 12."""
    n_classes = draw(st.integers(2, 12))
    rows = draw(st.lists(prob_rows(n_classes), min_size=min_rows, max_size=20))
    return np.asarray(rows, dtype=np.float64)


@pytest.mark.parametrize(("name", "measure"), ALL, ids=IDS)
class TestMeasureConformance:
    @PROPERTY
    @given(probs=prob_matrices())
    def test_scores_lie_in_unit_interval(self, name: str, measure: Measure, probs: FloatArray) -> None:
        """Every score is a finite number in [0, 1], one per row."""
        s = measure(probs)
        assert s.shape == (len(probs),)
        assert np.isfinite(s).all()
        assert ((s >= 0.0) & (s <= 1.0)).all()

    @PROPERTY
    @given(probs=prob_matrices(), data=st.data())
    def test_permuting_classes_changes_nothing(
        self, name: str, measure: Measure, probs: FloatArray, data: st.DataObject
    ) -> None:
        """Measures depend on the distribution, not on which class is which."""
        perm = data.draw(st.permutations(range(probs.shape[1])))
        np.testing.assert_allclose(measure(probs[:, perm]), measure(probs), rtol=0, atol=1e-12)

    @PROPERTY
    @given(probs=prob_matrices(), data=st.data())
    def test_permuting_rows_permutes_scores(
        self, name: str, measure: Measure, probs: FloatArray, data: st.DataObject
    ) -> None:
        """Measures see no item order: shuffling rows shuffles the scores the same way."""
        perm = data.draw(st.permutations(range(len(probs))))
        np.testing.assert_allclose(measure(probs[perm]), measure(probs)[perm], rtol=0, atol=1e-12)

    @PROPERTY
    @given(probs=prob_matrices())
    def test_batch_equals_one_row_at_a_time(self, name: str, measure: Measure, probs: FloatArray) -> None:
        """Scoring a batch gives what scoring each row alone gives."""
        single = np.array([measure(probs[i : i + 1])[0] for i in range(len(probs))])
        np.testing.assert_allclose(measure(probs), single, rtol=0, atol=1e-12)

    @PROPERTY
    @given(probs=prob_matrices())
    def test_input_is_not_modified(self, name: str, measure: Measure, probs: FloatArray) -> None:
        """A measure is pure: the caller's matrix is left as it was."""
        before = probs.copy()
        measure(probs)
        np.testing.assert_array_equal(probs, before)

    @pytest.mark.parametrize("n_classes", [2, 3, 10, 12])
    def test_one_hot_scores_zero(self, name: str, measure: Measure, n_classes: int) -> None:
        """A certain prediction carries no information."""
        assert measure(np.eye(n_classes)).tolist() == [0.0] * n_classes

    @pytest.mark.parametrize("n_classes", [2, 3, 10, 12])
    def test_uniform_scores_one(self, name: str, measure: Measure, n_classes: int) -> None:
        """A uniform prediction is maximally informative."""
        s = measure(np.full((1, n_classes), 1.0 / n_classes))
        assert s[0] == pytest.approx(1.0, abs=1e-12)

    def test_empty_batch_gives_empty_scores(self, name: str, measure: Measure) -> None:
        """A batch with no rows scores to an empty array."""
        assert measure(np.zeros((0, 4))).shape == (0,)


class TestClosedForms:
    P = np.array([[0.6, 0.3, 0.1]])

    def test_margin(self) -> None:
        """margin = 1 - (p1 - p2) = 1 - (0.6 - 0.3) = 0.7."""
        assert margin(self.P)[0] == pytest.approx(0.7, abs=1e-15)

    def test_ratio(self) -> None:
        """ratio = p2 / p1 = 0.3 / 0.6 = 0.5."""
        assert ratio(self.P)[0] == pytest.approx(0.5, abs=1e-15)

    def test_least_confidence(self) -> None:
        """least confidence = (1 - p1) * C / (C - 1) = 0.4 * 3 / 2 = 0.6."""
        assert least_confidence(self.P)[0] == pytest.approx(0.6, abs=1e-15)

    def test_entropy(self) -> None:
        """entropy([0.5, 0.5, 0, 0]) = log 2 / log 4 = 0.5, with 0 log 0 = 0."""
        assert entropy(np.array([[0.5, 0.5, 0.0, 0.0]]))[0] == pytest.approx(0.5, abs=1e-15)

    def test_entropy_general_row(self) -> None:
        """entropy is -sum p log p / log C."""
        expected = -(0.6 * math.log(0.6) + 0.3 * math.log(0.3) + 0.1 * math.log(0.1)) / math.log(3)
        assert entropy(self.P)[0] == pytest.approx(expected, abs=1e-15)

    def test_tied_top_two_is_maximal_for_margin_and_ratio(self) -> None:
        """A tie between the two best classes scores 1 on margin and ratio even when a third class exists."""
        p = np.array([[0.4, 0.4, 0.2]])
        assert margin(p)[0] == pytest.approx(1.0)
        assert ratio(p)[0] == 1.0


class TestRegistry:
    def test_compute_returns_every_requested_measure(self) -> None:
        """compute() returns one array per requested name, equal to calling the measure directly."""
        p = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
        out = compute(p, ["margin", "entropy"])
        assert list(out) == ["margin", "entropy"]
        np.testing.assert_array_equal(out["margin"], margin(p))
        np.testing.assert_array_equal(out["entropy"], entropy(p))

    def test_unknown_measure_lists_the_valid_names(self) -> None:
        """An unknown name is an error that names it and lists the registry."""
        with pytest.raises(SelectorError) as info:
            compute(np.array([[0.5, 0.5]]), ["entropy", "bald"])
        assert str(info.value) == (
            "unknown measure(s) ['bald']; valid measures: least_confidence, margin, ratio, entropy"
        )

    def test_measure_names_is_the_registry_in_order(self) -> None:
        """measure_names() lists every measure with its field, the probability measures first."""
        assert measure_names() == list(FIELD_OF)
        assert measure_names()[: len(MEASURES)] == list(MEASURES)
        assert {FIELD_OF[m] for m in MEASURES} == {"probs"}
        assert set(FIELD_OF) >= ONLINE | STATEFUL
