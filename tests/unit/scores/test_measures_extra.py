"""Measures beyond the softmax: Bayesian (MC-dropout samples), committee, gradient and embedding measures, and
the core-set that novelty measures against.

Every measure that maps into [0, 1] goes through the same property checks (range, determinism, batch against
one row at a time, class and row permutations, purity); closed forms and brute-force references follow.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selector.arrays import FloatArray, IntArray
from selector.scores.bayesian import bald, predictive_entropy, predictive_variance
from selector.scores.committee import agreement, kl_consensus, vote_entropy
from selector.scores.embedding import CoreSet, Float32Array, density, nearest_distance
from selector.scores.gradient import egl, gradient_embedding
from tests.unit.strategies import prob_rows

PROPERTY = settings(max_examples=60, deadline=None)
ATOL = 1e-12

StackMeasure = Callable[[FloatArray], FloatArray]
STACK_MEASURES: list[tuple[str, StackMeasure]] = [
    ("bald", bald),
    ("predictive_entropy", predictive_entropy),
    ("predictive_variance", predictive_variance),
    ("vote_entropy", vote_entropy),
    ("kl_consensus", kl_consensus),
]
STACK_IDS = [name for name, _ in STACK_MEASURES]


@st.composite
def stacks(draw: st.DrawFn) -> FloatArray:
    """(n, T, C) stacks of probability rows (MC samples or committee members), T = 1 included; an item's rows
    are independent, all equal, or one-hot rows spread over the classes."""
    n_classes = draw(st.integers(2, 8))
    t = draw(st.integers(1, 5))
    items = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["independent", "independent", "agree", "spread"]))
        if kind == "agree":
            items.append([draw(prob_rows(n_classes))] * t)
        elif kind == "spread":
            items.append(np.eye(n_classes)[np.arange(t) % n_classes].tolist())
        else:
            items.append([draw(prob_rows(n_classes)) for _ in range(t)])
    return np.asarray(items, dtype=np.float64)


@st.composite
def embeddings(draw: st.DrawFn) -> tuple[FloatArray, FloatArray]:
    """Rows ``x`` (n, d) and a reservoir (m, d), m = 0 included, with zero rows and repeated values."""
    d = draw(st.integers(1, 5))
    value = st.one_of(st.floats(-10, 10), st.sampled_from([0.0, 1.0, -1.0]))
    row = st.one_of(st.lists(value, min_size=d, max_size=d), st.just([0.0] * d))
    x = draw(st.lists(row, min_size=1, max_size=6))
    reservoir = draw(st.lists(row, min_size=0, max_size=6))
    return np.asarray(x, dtype=np.float64), np.asarray(reservoir, dtype=np.float64).reshape(-1, d)


@pytest.mark.parametrize(("name", "measure"), STACK_MEASURES, ids=STACK_IDS)
class TestStackMeasureConformance:
    @PROPERTY
    @given(x=stacks())
    def test_scores_lie_in_unit_interval(self, name: str, measure: StackMeasure, x: FloatArray) -> None:
        """Every score is a finite float64 in [0, 1], one per item."""
        s = measure(x)
        assert s.shape == (len(x),)
        assert s.dtype == np.float64
        assert np.isfinite(s).all()
        assert ((s >= 0.0) & (s <= 1.0)).all()

    @PROPERTY
    @given(x=stacks())
    def test_deterministic(self, name: str, measure: StackMeasure, x: FloatArray) -> None:
        """The same input gives bit-identical scores."""
        np.testing.assert_array_equal(measure(x), measure(x.copy()))

    @PROPERTY
    @given(x=stacks())
    def test_batch_equals_one_row_at_a_time(self, name: str, measure: StackMeasure, x: FloatArray) -> None:
        """Scoring a batch gives what scoring each item alone gives."""
        single = np.array([measure(x[i : i + 1])[0] for i in range(len(x))])
        np.testing.assert_allclose(measure(x), single, rtol=0, atol=ATOL)

    @PROPERTY
    @given(x=stacks(), data=st.data())
    def test_permuting_classes_changes_nothing(
        self, name: str, measure: StackMeasure, x: FloatArray, data: st.DataObject
    ) -> None:
        """Relabeling the classes, the same way in every sample or member, leaves every score as it was."""
        perm = data.draw(st.permutations(range(x.shape[2])))
        np.testing.assert_allclose(measure(x[:, :, perm]), measure(x), rtol=0, atol=ATOL)

    @PROPERTY
    @given(x=stacks(), data=st.data())
    def test_permuting_rows_permutes_scores(
        self, name: str, measure: StackMeasure, x: FloatArray, data: st.DataObject
    ) -> None:
        """Shuffling items shuffles the scores the same way."""
        perm = data.draw(st.permutations(range(len(x))))
        np.testing.assert_allclose(measure(x[perm]), measure(x)[perm], rtol=0, atol=ATOL)

    @PROPERTY
    @given(x=stacks(), data=st.data())
    def test_order_of_samples_or_members_changes_nothing(
        self, name: str, measure: StackMeasure, x: FloatArray, data: st.DataObject
    ) -> None:
        """Samples and committee members are exchangeable: reordering them within an item changes nothing."""
        perm = data.draw(st.permutations(range(x.shape[1])))
        np.testing.assert_allclose(measure(x[:, perm]), measure(x), rtol=0, atol=ATOL)

    @PROPERTY
    @given(x=stacks())
    def test_input_is_not_modified(self, name: str, measure: StackMeasure, x: FloatArray) -> None:
        """A measure is pure: the caller's array is left as it was."""
        before = x.copy()
        measure(x)
        np.testing.assert_array_equal(x, before)

    def test_empty_batch_gives_empty_scores(self, name: str, measure: StackMeasure) -> None:
        """A batch with no items scores to an empty array."""
        assert measure(np.zeros((0, 3, 4))).shape == (0,)

    def test_float32_input_gives_float64_scores(self, name: str, measure: StackMeasure) -> None:
        """float32 probabilities are scored in float64, to the same values."""
        x = np.array([[[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]])
        s = measure(x.astype(np.float32))
        assert s.dtype == np.float64
        np.testing.assert_allclose(s, measure(x), rtol=0, atol=1e-6)


class TestBayesianClosedForms:
    @pytest.mark.parametrize("t", [1, 2, 7])
    def test_agreeing_samples_score_zero_on_bald_and_variance(self, t: int) -> None:
        """Samples that all give the same prediction carry no model uncertainty."""
        x = np.tile(np.array([[0.6, 0.3, 0.1], [0.25, 0.25, 0.5]])[:, None, :], (1, t, 1))
        np.testing.assert_allclose(bald(x), 0.0, rtol=0, atol=ATOL)
        np.testing.assert_allclose(predictive_variance(x), 0.0, rtol=0, atol=ATOL)

    @pytest.mark.parametrize("n_classes", [2, 3, 10])
    def test_one_hot_samples_covering_every_class_score_one(self, n_classes: int) -> None:
        """T = C one-hot samples, one per class, are maximal for BALD, predictive entropy and variance."""
        x = np.eye(n_classes)[None]
        for measure in (bald, predictive_entropy, predictive_variance):
            assert measure(x)[0] == pytest.approx(1.0, abs=ATOL)

    def test_bald_general_value(self) -> None:
        """BALD = (H(mean) - mean H) / log C on a worked example."""
        a, b = np.array([0.8, 0.2]), np.array([0.4, 0.6])

        def h(p: FloatArray) -> float:
            return float(-(p * np.log(p)).sum())

        expected = (h((a + b) / 2) - (h(a) + h(b)) / 2) / math.log(2)
        assert bald(np.array([[a, b]]))[0] == pytest.approx(expected, abs=1e-15)

    def test_predictive_entropy_of_confident_but_disagreeing_samples(self) -> None:
        """Predictive entropy is the entropy of the mean: [1, 0] and [0, 1] average to uniform, scoring 1."""
        assert predictive_entropy(np.array([[[1.0, 0.0], [0.0, 1.0]]]))[0] == pytest.approx(1.0)

    def test_predictive_variance_general_value(self) -> None:
        """sum_c Var_t(p_tc) / (1 - 1/C), with the population variance over samples."""
        x = np.array([[[0.8, 0.2], [0.4, 0.6]]])
        expected = (0.2**2 + 0.2**2) / 0.5
        assert predictive_variance(x)[0] == pytest.approx(expected, abs=1e-15)


class TestCommitteeClosedForms:
    @pytest.mark.parametrize(("k", "c"), [(2, 2), (3, 3), (4, 2), (2, 5), (6, 3)])
    def test_even_split_of_votes_scores_one(self, k: int, c: int) -> None:
        """Votes spread evenly over min(K, C) classes give the maximal vote entropy."""
        committee = np.eye(c)[np.arange(k) % min(k, c)][None]
        assert vote_entropy(committee)[0] == pytest.approx(1.0, abs=ATOL)

    def test_unanimous_committee_scores_zero(self) -> None:
        """Members that all vote for the same class, with different confidence, give vote entropy 0."""
        committee = np.array([[[0.9, 0.1, 0.0], [0.5, 0.3, 0.2], [0.4, 0.35, 0.25]]])
        assert vote_entropy(committee).tolist() == [0.0]

    def test_committee_of_one_scores_zero(self) -> None:
        """K = 1 has nobody to disagree with."""
        assert vote_entropy(np.array([[[0.5, 0.5]], [[0.2, 0.8]]])).tolist() == [0.0, 0.0]

    def test_tied_member_splits_its_vote(self) -> None:
        """A member tied between two classes gives half a vote to each: shares [0.75, 0.25]."""
        committee = np.array([[[0.5, 0.5], [0.9, 0.1]]])
        expected = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(2)
        assert vote_entropy(committee)[0] == pytest.approx(expected, abs=1e-15)

    def test_kl_consensus_is_zero_when_members_agree(self) -> None:
        """Members equal to their mean diverge from it by nothing."""
        committee = np.tile(np.array([0.6, 0.3, 0.1]), (1, 4, 1))
        np.testing.assert_allclose(kl_consensus(committee), 0.0, rtol=0, atol=ATOL)

    def test_kl_consensus_of_opposite_certain_members_is_one(self) -> None:
        """[1, 0] and [0, 1] each lie log 2 from their mean [0.5, 0.5]: log 2 / log 2 = 1."""
        assert kl_consensus(np.array([[[1.0, 0.0], [0.0, 1.0]]]))[0] == pytest.approx(1.0, abs=ATOL)

    def test_kl_consensus_general_value(self) -> None:
        """mean_k KL(p_k || mean) / log C on a worked example."""
        a, b = np.array([0.8, 0.2]), np.array([0.4, 0.6])
        m = (a + b) / 2
        expected = (float((a * np.log(a / m)).sum()) + float((b * np.log(b / m)).sum())) / 2 / math.log(2)
        assert kl_consensus(np.array([[a, b]]))[0] == pytest.approx(expected, abs=1e-15)


class TestAgreement:
    COMMITTEE = np.array(
        [
            [[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.4, 0.0]],
            [[0.5, 0.5, 0.0], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]],
        ]
    )

    def test_vote_share_of_the_predicted_class(self) -> None:
        """Two of three members vote class 0; a tied member gives half a vote to each tied class."""
        np.testing.assert_allclose(agreement(self.COMMITTEE, np.array([0, 0])), [2 / 3, 1 / 6], atol=1e-15)
        np.testing.assert_allclose(agreement(self.COMMITTEE, np.array([1, 2])), [1 / 3, 2 / 3], atol=1e-15)

    def test_shares_over_all_classes_sum_to_one(self) -> None:
        """Every member's vote is counted exactly once, however it is split."""
        total = sum(agreement(self.COMMITTEE, np.full(2, c)) for c in range(3))
        np.testing.assert_allclose(total, 1.0, rtol=0, atol=ATOL)

    @PROPERTY
    @given(x=stacks(), data=st.data())
    def test_range_and_relabeling(self, x: FloatArray, data: st.DataObject) -> None:
        """Shares lie in [0, 1]; relabeling classes, with the predicted class relabeled too, changes none."""
        c = x.shape[2]
        predicted: IntArray = np.asarray(
            data.draw(st.lists(st.integers(0, c - 1), min_size=len(x), max_size=len(x))), dtype=np.int64
        )
        s = agreement(x, predicted)
        assert s.shape == (len(x),)
        assert ((s >= 0.0) & (s <= 1.0)).all()
        perm = np.asarray(data.draw(st.permutations(range(c))))
        np.testing.assert_allclose(agreement(x[:, :, perm], np.argsort(perm)[predicted]), s, atol=ATOL)

    @PROPERTY
    @given(x=stacks(), data=st.data())
    def test_batch_rows_and_determinism(self, x: FloatArray, data: st.DataObject) -> None:
        """Row shuffles permute the shares, single rows agree with the batch, and repeats are identical."""
        predicted = np.zeros(len(x), dtype=np.int64)
        s = agreement(x, predicted)
        np.testing.assert_array_equal(agreement(x, predicted), s)
        perm = np.asarray(data.draw(st.permutations(range(len(x)))))
        np.testing.assert_allclose(agreement(x[perm], predicted[perm]), s[perm], rtol=0, atol=ATOL)
        single = [agreement(x[i : i + 1], predicted[i : i + 1])[0] for i in range(len(x))]
        np.testing.assert_allclose(s, single, rtol=0, atol=ATOL)


def _egl_brute_force(p: FloatArray, h: FloatArray) -> FloatArray:
    out = np.zeros(len(p))
    for i in range(len(p)):
        for c in range(p.shape[1]):
            grad = np.outer(p[i] - np.eye(p.shape[1])[c], h[i])
            out[i] += p[i, c] * np.linalg.norm(grad)
    return out


class TestGradient:
    RNG_SEED = 20240611

    def _random(self, n: int = 30, c: int = 5, d: int = 7) -> tuple[FloatArray, FloatArray]:
        rng = np.random.default_rng(self.RNG_SEED)
        return rng.dirichlet(np.ones(c), size=n), rng.normal(size=(n, d))

    def test_egl_equals_brute_force_over_classes(self) -> None:
        """EGL = sum_c p_c ||(p - e_c) ⊗ h||, computed without forming a gradient."""
        p, h = self._random()
        np.testing.assert_allclose(egl(p, h), _egl_brute_force(p, h), rtol=1e-12, atol=1e-12)

    @pytest.mark.parametrize("n_classes", [2, 3, 10])
    def test_egl_is_zero_for_a_certain_prediction(self, n_classes: int) -> None:
        """A one-hot prediction has nothing to learn from its own label: exactly 0."""
        h = np.random.default_rng(1).normal(size=(n_classes, 4))
        assert egl(np.eye(n_classes), h).tolist() == [0.0] * n_classes

    def test_egl_scales_linearly_with_the_embedding_norm(self) -> None:
        """The gradient is an outer product with h, so EGL(p, a h) = |a| EGL(p, h)."""
        p, h = self._random()
        np.testing.assert_allclose(egl(p, -3.0 * h), 3.0 * egl(p, h), rtol=1e-12)

    @PROPERTY
    @given(probs=st.integers(2, 8).flatmap(lambda c: st.lists(prob_rows(c), min_size=1, max_size=8)))
    def test_egl_is_finite_and_non_negative(self, probs: list[list[float]]) -> None:
        """EGL is a raw magnitude: finite, >= 0, float64, and per row the same in a batch or alone."""
        p = np.asarray(probs)
        h = np.random.default_rng(len(p)).normal(size=(len(p), 3)).astype(np.float32)
        s = egl(p, h)
        assert s.dtype == np.float64
        assert np.isfinite(s).all()
        assert (s >= 0.0).all()
        np.testing.assert_allclose(s, [egl(p[i : i + 1], h[i : i + 1])[0] for i in range(len(p))], atol=ATOL)

    def test_gradient_embedding_equals_brute_force_outer_product(self) -> None:
        """Row i is (p_i - e_yhat) ⊗ h_i flattened, yhat = argmax p_i, in float64 even from float32 h."""
        p, h = self._random()
        h32 = h.astype(np.float32)
        g = gradient_embedding(p, h32)
        assert g.dtype == np.float64
        assert g.shape == (len(p), p.shape[1] * h.shape[1])
        for i in range(len(p)):
            expected = np.outer(p[i] - np.eye(p.shape[1])[p[i].argmax()], h32[i].astype(np.float64))
            np.testing.assert_array_equal(g[i], expected.ravel())

    def test_gradient_embedding_breaks_ties_to_the_lowest_class(self) -> None:
        """With the top two classes tied, the lower one is taken as the predicted label."""
        g = gradient_embedding(np.array([[0.4, 0.4, 0.2]]), np.array([[1.0]]))
        np.testing.assert_allclose(g[0], [-0.6, 0.4, 0.2], atol=1e-15)

    def test_inputs_are_not_modified(self) -> None:
        """Both functions leave the caller's arrays as they were."""
        p, h = self._random()
        p0, h0 = p.copy(), h.copy()
        egl(p, h)
        gradient_embedding(p, h)
        np.testing.assert_array_equal(p, p0)
        np.testing.assert_array_equal(h, h0)


class TestDensity:
    @PROPERTY
    @given(xr=embeddings(), as_float32=st.booleans())
    def test_scores_lie_in_unit_interval(self, xr: tuple[FloatArray, FloatArray], as_float32: bool) -> None:
        """Density is a finite float64 in [0, 1] per row, for a float32 reservoir too."""
        x, r = xr
        s = density(x, r.astype(np.float32) if as_float32 else r)
        assert s.shape == (len(x),)
        assert s.dtype == np.float64
        assert np.isfinite(s).all()
        assert ((s >= 0.0) & (s <= 1.0)).all()

    @PROPERTY
    @given(xr=embeddings(), data=st.data())
    def test_invariances(self, xr: tuple[FloatArray, FloatArray], data: st.DataObject) -> None:
        """Deterministic; one row at a time equals the batch; shuffling rows permutes the scores; shuffling
        the coordinates of x and the reservoir alike, or the reservoir's rows, changes nothing."""
        x, r = xr
        s = density(x, r)
        np.testing.assert_array_equal(density(x, r), s)
        np.testing.assert_allclose([density(x[i : i + 1], r)[0] for i in range(len(x))], s, atol=ATOL)
        rows = np.asarray(data.draw(st.permutations(range(len(x)))))
        np.testing.assert_allclose(density(x[rows], r), s[rows], rtol=0, atol=ATOL)
        cols = np.asarray(data.draw(st.permutations(range(x.shape[1]))))
        np.testing.assert_allclose(density(x[:, cols], r[:, cols]), s, rtol=0, atol=ATOL)
        kept = np.asarray(data.draw(st.permutations(range(len(r)))), dtype=np.int64)
        np.testing.assert_allclose(density(x, r[kept]), s, rtol=0, atol=ATOL)

    def test_point_against_copies_of_itself_is_one(self) -> None:
        """Every remembered item points the same way: mean cosine 1, whatever the scale."""
        x = np.array([[1.0, -2.0, 3.0]])
        assert density(x, np.vstack([x, 2 * x, 0.5 * x]))[0] == pytest.approx(1.0, abs=ATOL)

    def test_orthogonal_or_opposite_reservoir_is_zero(self) -> None:
        """Orthogonal items have cosine 0 and opposite ones are clipped to 0."""
        x = np.array([[1.0, 0.0, 0.0]])
        r = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -4.0], [-1.0, 0.0, 0.0]])
        assert density(x, r).tolist() == [0.0]

    def test_empty_reservoir_gives_neutral_ones(self) -> None:
        """With nothing remembered, density is the neutral weight 1."""
        assert density(np.ones((3, 4)), np.zeros((0, 4), dtype=np.float32)).tolist() == [1.0] * 3

    def test_zero_vector_has_cosine_zero(self) -> None:
        """A zero embedding is similar to nothing, and nothing is similar to a zero reservoir row."""
        assert density(np.zeros((1, 2)), np.array([[1.0, 1.0]])).tolist() == [0.0]
        assert density(np.array([[1.0, 1.0]]), np.array([[1.0, 1.0], [0.0, 0.0]]))[0] == pytest.approx(0.5)

    def test_float32_reservoir_matches_float64(self) -> None:
        """A float32 reservoir scores like the same values held in float64."""
        rng = np.random.default_rng(3)
        x, r = rng.normal(size=(5, 8)), rng.normal(size=(9, 8)).astype(np.float32)
        np.testing.assert_allclose(density(x, r), density(x, r.astype(np.float64)), rtol=0, atol=ATOL)


class TestNearestDistance:
    def test_equals_brute_force(self) -> None:
        """Distance to the nearest point equals the minimum over explicit differences."""
        rng = np.random.default_rng(4)
        x, pts = rng.normal(size=(256, 128)), rng.normal(size=(256, 128)).astype(np.float32)
        brute = np.sqrt(((x[:, None, :] - pts[None, :, :].astype(np.float64)) ** 2).sum(-1)).min(axis=1)
        out = nearest_distance(x, pts)
        assert out.dtype == np.float64
        np.testing.assert_allclose(out, brute, rtol=1e-9)

    def test_no_points_gives_infinity(self) -> None:
        """Nothing remembered: every row is infinitely novel."""
        assert nearest_distance(np.ones((2, 3)), np.zeros((0, 3))).tolist() == [math.inf, math.inf]

    def test_far_from_the_origin_stays_accurate(self) -> None:
        """Embeddings with a large common offset keep their small distances (no cancellation blow-up)."""
        offset = np.full((1, 64), 1e4)
        pts = offset + np.eye(64)[:3]
        x = offset + np.eye(64)[:1] * 1.001
        assert nearest_distance(x, pts)[0] == pytest.approx(0.001, rel=1e-6)

    def test_a_member_is_at_distance_zero(self) -> None:
        """A row that is one of the points is at distance 0 from them."""
        pts = np.random.default_rng(5).normal(size=(10, 16))
        np.testing.assert_allclose(nearest_distance(pts[3:4], pts), 0.0, atol=1e-7)


def _coreset_brute_force(points: Float32Array, capacity: int, new: FloatArray) -> Float32Array:
    """The rule as written, recomputing every distance for every row."""
    pts = list(points.astype(np.float64))
    for row in new.astype(np.float32).astype(np.float64):
        if len(pts) < capacity:
            pts.append(row)
            continue
        arr = np.array(pts)
        dist = np.sqrt(((arr[:, None, :] - arr[None, :, :]) ** 2).sum(-1))
        np.fill_diagonal(dist, np.inf)
        worst = int(np.argmin(dist.min(axis=1)))
        if np.sqrt(((arr - row) ** 2).sum(-1)).min() <= dist.min(axis=1)[worst]:
            continue
        del pts[worst]
        pts.append(row)
    return np.array(pts, dtype=np.float32).reshape(-1, points.shape[1])


class TestCoreSet:
    @PROPERTY
    @given(
        capacity=st.integers(1, 6),
        batches=st.lists(
            st.lists(st.sampled_from([0.0, 1.0, 2.5, -3.0]), min_size=2, max_size=2), max_size=12
        ),
        split=st.integers(0, 12),
    )
    def test_never_exceeds_capacity(self, capacity: int, batches: list[list[float]], split: int) -> None:
        """However rows arrive (duplicates, several calls), the set holds at most ``capacity`` float32 rows,
        and fills up before it starts replacing."""
        rows = np.asarray(batches, dtype=np.float64).reshape(-1, 2)
        cs = CoreSet.empty(capacity, 2).with_points(rows[:split]).with_points(rows[split:])
        assert cs.points.dtype == np.float32
        assert len(cs.points) == min(capacity, len(rows))

    def test_matches_the_rule_computed_by_brute_force(self) -> None:
        """Row by row, the incremental update keeps exactly what the stated replacement rule keeps."""
        rng = np.random.default_rng(6)
        start = rng.normal(size=(12, 5)).astype(np.float32)
        new = rng.normal(size=(80, 5)) * rng.uniform(0.2, 3.0, size=(80, 1))
        got = CoreSet(start, 12).with_points(new[:30]).with_points(new[30:]).points
        np.testing.assert_array_equal(got, _coreset_brute_force(start, 12, new))

    def test_ties_remove_the_oldest_member(self) -> None:
        """With two members equally redundant, the lower (older) one makes room, and the order is kept."""
        start = np.array([[0.0], [1.0], [5.0]], dtype=np.float32)
        got = CoreSet(start, 3).with_points(np.array([[20.0]])).points
        np.testing.assert_array_equal(got, np.array([[1.0], [5.0], [20.0]], dtype=np.float32))

    def test_duplicate_of_a_member_is_not_added_when_full(self) -> None:
        """A row already in the set covers nothing new and is skipped."""
        pts = np.random.default_rng(7).normal(size=(8, 4)).astype(np.float32)
        cs = CoreSet(pts, 8)
        np.testing.assert_array_equal(cs.with_points(pts[[2, 5, 2]]).points, pts)

    def test_keeps_spread_over_separated_clusters(self) -> None:
        """Fed many points from 20 far-apart clusters in random order, 20 slots end up covering them."""
        rng = np.random.default_rng(8)
        centers = rng.normal(size=(20, 16)) * 100.0
        labels = rng.permutation(np.repeat(np.arange(20), 50))
        x = centers[labels] + rng.normal(size=(len(labels), 16))
        cs = CoreSet.empty(20, 16)
        for chunk in np.array_split(x, 25):
            cs = cs.with_points(chunk)
        covered = {int(np.argmin(((centers - p) ** 2).sum(1))) for p in cs.points.astype(np.float64)}
        assert len(cs.points) == 20
        assert len(covered) >= 18

    def test_does_not_mutate_its_input(self) -> None:
        """with_points returns a new set; the old object and its points are left as they were."""
        pts = np.random.default_rng(9).normal(size=(4, 3)).astype(np.float32)
        cs = CoreSet(pts.copy(), 4)
        new = np.random.default_rng(10).normal(size=(10, 3)) * 10.0
        new_before = new.copy()
        out = cs.with_points(new)
        assert out is not cs
        np.testing.assert_array_equal(cs.points, pts)
        np.testing.assert_array_equal(new, new_before)
        assert not np.array_equal(out.points, pts)

    def test_no_new_rows_gives_the_same_set(self) -> None:
        """Offering nothing changes nothing."""
        cs = CoreSet(np.ones((2, 3), dtype=np.float32), 4)
        assert cs.with_points(np.zeros((0, 3))) is cs

    @pytest.mark.parametrize("n", [0, 1, 7])
    def test_round_trip_is_exact(self, n: int) -> None:
        """to_dict/from_dict restores the same float32 points bit for bit, the empty set included."""
        pts = (np.random.default_rng(11).normal(size=(n, 5)) * 1e3).astype(np.float32)
        d = CoreSet(pts, 7).to_dict()
        assert d["dim"] == 5
        assert isinstance(d["points"], str)
        back = CoreSet.from_dict(d, 7)
        assert back.capacity == 7
        assert back.points.dtype == np.float32
        assert back.points.shape == (n, 5)
        np.testing.assert_array_equal(back.points, pts)

    def test_from_dict_with_smaller_capacity_keeps_most_recent(self) -> None:
        """Restoring into fewer slots keeps the newest rows, in order."""
        pts = np.arange(12, dtype=np.float32).reshape(6, 2)
        back = CoreSet.from_dict(CoreSet(pts, 6).to_dict(), 4)
        np.testing.assert_array_equal(back.points, pts[2:])
        assert len(back.with_points(np.full((1, 2), 99.0)).points) == 4
