"""Conformance suite for the measures that read optional prediction fields (MC-dropout samples, committee
members, embeddings), their closed-form values, the core-set, and the diversity primitives."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selector.arrays import FloatArray
from selector.diversity import assign, kcenter, kmeanspp, one_per_cluster
from selector.scores import bayesian, committee, embedding, gradient
from selector.scores.embedding import CoreSet

PROPERTY = settings(max_examples=60, deadline=None)

STACKED: list[tuple[str, Callable[[FloatArray], FloatArray]]] = [
    ("bald", bayesian.bald),
    ("predictive_entropy", bayesian.predictive_entropy),
    ("predictive_variance", bayesian.predictive_variance),
    ("vote_entropy", committee.vote_entropy),
    ("kl_consensus", committee.kl_consensus),
]
"""Measures of an (n, T or K, C) stack of probability rows."""


@st.composite
def prob_row(draw: st.DrawFn, c: int) -> list[float]:
    """A probability vector with exact one-hot, uniform and zero-heavy rows mixed in."""
    kind = draw(st.sampled_from(["weights", "weights", "one_hot", "uniform", "sparse"]))
    if kind == "one_hot":
        row = [0.0] * c
        row[draw(st.integers(0, c - 1))] = 1.0
        return row
    if kind == "uniform":
        return [1.0 / c] * c
    elements = st.floats(0, 1) if kind == "weights" else st.sampled_from([0.0, 0.0, 1e-300, 1.0, 3.0])
    w = draw(st.lists(elements, min_size=c, max_size=c))
    total = math.fsum(w)
    return [x / total for x in w] if total > 0 and math.isfinite(total) else [1.0 / c] * c


@st.composite
def stacks(draw: st.DrawFn) -> FloatArray:
    """An (n, T, C) array: n items, T samples (or K members) each, 2 <= C <= 8, T >= 1."""
    c = draw(st.integers(2, 8))
    t = draw(st.integers(1, 6))
    n = draw(st.integers(1, 8))
    rows = draw(st.lists(st.lists(prob_row(c), min_size=t, max_size=t), min_size=n, max_size=n))
    return np.asarray(rows, dtype=np.float64)


@pytest.mark.parametrize(("name", "measure"), STACKED, ids=[n for n, _ in STACKED])
class TestStackedConformance:
    @PROPERTY
    @given(x=stacks())
    def test_in_unit_interval_and_finite(
        self, name: str, measure: Callable[[FloatArray], FloatArray], x: FloatArray
    ) -> None:
        """One finite score in [0, 1] per item."""
        s = measure(x)
        assert s.shape == (len(x),)
        assert np.isfinite(s).all() and (s >= 0).all() and (s <= 1).all()

    @PROPERTY
    @given(x=stacks(), data=st.data())
    def test_class_permutation_changes_nothing(
        self, name: str, measure: Callable[[FloatArray], FloatArray], x: FloatArray, data: st.DataObject
    ) -> None:
        """Relabeling classes (the same way in every sample) leaves every score unchanged."""
        perm = data.draw(st.permutations(range(x.shape[2])))
        np.testing.assert_allclose(measure(x[:, :, perm]), measure(x), rtol=0, atol=1e-12)

    @PROPERTY
    @given(x=stacks(), data=st.data())
    def test_row_and_sample_order(
        self, name: str, measure: Callable[[FloatArray], FloatArray], x: FloatArray, data: st.DataObject
    ) -> None:
        """Permuting items permutes scores; permuting an item's samples/members changes nothing."""
        rows = data.draw(st.permutations(range(len(x))))
        np.testing.assert_allclose(measure(x[rows]), measure(x)[rows], rtol=0, atol=1e-12)
        inner = data.draw(st.permutations(range(x.shape[1])))
        np.testing.assert_allclose(measure(x[:, inner]), measure(x), rtol=0, atol=1e-12)

    @PROPERTY
    @given(x=stacks())
    def test_batch_equals_one_item_at_a_time_and_is_deterministic(
        self, name: str, measure: Callable[[FloatArray], FloatArray], x: FloatArray
    ) -> None:
        """Scoring a batch equals scoring each item alone; twice gives the same."""
        single = np.array([measure(x[i : i + 1])[0] for i in range(len(x))])
        np.testing.assert_allclose(measure(x), single, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(measure(x), measure(x))

    def test_zero_when_all_agree(self, name: str, measure: Callable[[FloatArray], FloatArray]) -> None:
        """Identical samples/members carry no disagreement (except through vote ties, absent here)."""
        x = np.tile(np.array([0.6, 0.3, 0.1]), (1, 5, 1))
        if name == "predictive_entropy":
            assert measure(x)[0] == pytest.approx(
                -(0.6 * math.log(0.6) + 0.3 * math.log(0.3) + 0.1 * math.log(0.1)) / math.log(3)
            )
        else:
            assert measure(x)[0] == pytest.approx(0.0, abs=1e-12)


class TestClosedForms:
    def test_bald_and_variance_are_one_for_one_hot_samples_over_every_class(self) -> None:
        """T = C one-hot samples, one per class: maximal mutual information and variance."""
        x = np.eye(4)[None, :, :]
        assert bayesian.bald(x)[0] == pytest.approx(1.0)
        assert bayesian.predictive_variance(x)[0] == pytest.approx(1.0)
        assert bayesian.predictive_entropy(x)[0] == pytest.approx(1.0)

    def test_bald_is_entropy_of_mean_minus_mean_entropy(self) -> None:
        """Against a direct computation on random samples."""
        rng = np.random.default_rng(0)
        x = rng.dirichlet([0.5] * 5, size=(7, 6))

        def h(p: FloatArray) -> FloatArray:
            return -(p * np.log(p)).sum(axis=-1)

        expected = (h(x.mean(axis=1)) - h(x).mean(axis=1)) / math.log(5)
        np.testing.assert_allclose(bayesian.bald(x), expected, rtol=1e-12)
        np.testing.assert_allclose(
            bayesian.predictive_variance(x), x.var(axis=1).sum(axis=1) / (1 - 1 / 5), rtol=1e-12
        )

    def test_vote_entropy_even_split_unanimity_and_ties(self) -> None:
        """An even 2:2 split over two classes is 1, unanimity 0; a member tied between two classes splits its
        vote; with K < C the normalizer is log K."""
        a, b = [0.9, 0.1], [0.2, 0.8]
        assert committee.vote_entropy(np.array([[a, a, b, b]]))[0] == pytest.approx(1.0)
        assert committee.vote_entropy(np.array([[a, a, a, a]]))[0] == 0.0
        three = np.eye(3)[None, [0, 1, 2, 0, 1, 2], :]
        assert committee.vote_entropy(three)[0] == pytest.approx(1.0)
        tied = [0.5, 0.5, 0.0]
        np.testing.assert_allclose(committee.votes(np.array([[tied, [0.9, 0.1, 0.0]]])), [[0.75, 0.25, 0.0]])
        two_of_ten = np.zeros((1, 2, 10))
        two_of_ten[0, 0, 0] = two_of_ten[0, 1, 1] = 1.0
        assert committee.vote_entropy(two_of_ten)[0] == pytest.approx(1.0)
        assert committee.vote_entropy(np.array([[a]]))[0] == 0.0

    def test_kl_consensus_matches_the_definition(self) -> None:
        """mean_k KL(p_k || mean) / log C on random members."""
        rng = np.random.default_rng(1)
        x = rng.dirichlet([0.7] * 4, size=(5, 3))
        m = x.mean(axis=1, keepdims=True)
        expected = (x * np.log(x / m)).sum(axis=-1).mean(axis=1) / math.log(4)
        np.testing.assert_allclose(committee.kl_consensus(x), expected, rtol=1e-12)

    def test_agreement_is_the_vote_share_of_the_predicted_class(self) -> None:
        """3 of 4 members for class 0: agreement 0.75 with class 0, 0.25 with class 1."""
        a, b = [0.9, 0.1], [0.2, 0.8]
        x = np.array([[a, a, a, b], [a, a, a, b]])
        assert committee.agreement(x, np.array([0, 1])).tolist() == [0.75, 0.25]

    def test_egl_is_zero_for_one_hot_and_matches_brute_force(self) -> None:
        """EGL = sum_c p_c ||(p - e_c) outer h||; 0 for a one-hot p; linear in ||h||."""
        rng = np.random.default_rng(2)
        p = rng.dirichlet([0.5] * 6, size=9)
        h = rng.standard_normal((9, 5))
        brute = np.array(
            [
                sum(p[i, c] * np.linalg.norm(np.outer(p[i] - np.eye(6)[c], h[i])) for c in range(6))
                for i in range(9)
            ]
        )
        np.testing.assert_allclose(gradient.egl(p, h), brute, rtol=1e-10)
        np.testing.assert_allclose(gradient.egl(p, 3 * h), 3 * brute, rtol=1e-10)
        assert gradient.egl(np.eye(6)[:2], h[:2]).tolist() == [0.0, 0.0]
        perm = rng.permutation(6)
        np.testing.assert_allclose(gradient.egl(p[:, perm], h), gradient.egl(p, h), rtol=1e-12)

    def test_gradient_embedding_is_the_outer_product(self) -> None:
        """(p - e_yhat) outer h, flattened."""
        rng = np.random.default_rng(3)
        p = rng.dirichlet([0.5] * 3, size=4)
        h = rng.standard_normal((4, 2))
        g = gradient.gradient_embedding(p, h)
        for i in range(4):
            np.testing.assert_allclose(g[i], np.outer(p[i] - np.eye(3)[p[i].argmax()], h[i]).ravel())

    def test_density_self_orthogonal_and_empty(self) -> None:
        """Against copies of itself a point has density 1, against orthogonal points 0; nothing known: 1."""
        x = np.array([[1.0, 0.0, 0.0]])
        assert embedding.density(x, np.tile(x, (5, 1)))[0] == pytest.approx(1.0)
        assert embedding.density(x, np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 2.0]]))[0] == 0.0
        assert embedding.density(x, np.zeros((0, 3))).tolist() == [1.0]
        assert embedding.density(np.zeros((1, 3)), np.tile(x, (2, 1))).tolist() == [0.0]

    def test_nearest_distance_matches_brute_force(self) -> None:
        """Euclidean distance to the nearest point; +inf without points."""
        rng = np.random.default_rng(4)
        x, pts = rng.standard_normal((20, 7)), rng.standard_normal((13, 7)).astype(np.float32)
        brute = np.array([min(np.linalg.norm(a - b) for b in pts.astype(np.float64)) for a in x])
        np.testing.assert_allclose(embedding.nearest_distance(x, pts), brute, rtol=1e-6, atol=1e-6)
        assert embedding.nearest_distance(x[:2], np.zeros((0, 7))).tolist() == [math.inf, math.inf]


class TestCoreSet:
    def test_bounded_and_round_trip_exact(self) -> None:
        """Never more than capacity points; a snapshot round trip is exact, also empty."""
        rng = np.random.default_rng(5)
        core = CoreSet.empty(10, 4)
        assert CoreSet.from_dict(core.to_dict(), 10).points.shape == (0, 4)
        for _ in range(20):
            core = core.with_points(rng.standard_normal((3, 4)))
            assert len(core.points) <= 10
        back = CoreSet.from_dict(core.to_dict(), 10)
        np.testing.assert_array_equal(back.points, core.points)
        assert CoreSet.from_dict(core.to_dict(), 4).points.shape == (4, 4)

    def test_a_covered_point_is_not_added_and_the_input_is_not_mutated(self) -> None:
        """When full, a duplicate of a member changes nothing; the original object is unchanged."""
        rng = np.random.default_rng(6)
        core = CoreSet.empty(5, 3).with_points(rng.standard_normal((5, 3)) * 10)
        before = core.points.copy()
        same = core.with_points(core.points[:1].astype(np.float64))
        np.testing.assert_array_equal(same.points, before)
        moved = core.with_points(np.full((1, 3), 100.0))
        np.testing.assert_array_equal(core.points, before)
        assert any(np.allclose(p, 100.0) for p in moved.points)

    def test_keeps_a_cover_of_separated_clusters(self) -> None:
        """Streaming many points of 20 far-apart clusters through a capacity-20 set keeps >= 18 clusters."""
        rng = np.random.default_rng(7)
        centers = rng.standard_normal((20, 8)) * 100
        labels = rng.integers(0, 20, 2000)
        core = CoreSet.empty(20, 8)
        pts = centers[labels] + rng.standard_normal((2000, 8))
        for start in range(0, 2000, 7):
            core = core.with_points(pts[start : start + 7])
        nearest = np.linalg.norm(core.points[:, None, :] - centers[None, :, :], axis=2).argmin(axis=1)
        assert len(set(nearest.tolist())) >= 18


class TestDiversityPrimitives:
    def blobs(self, k: int = 5, per: int = 10, seed: int = 8) -> tuple[FloatArray, np.ndarray]:
        rng = np.random.default_rng(seed)
        centers = rng.standard_normal((k, 3)) * 50
        labels = np.repeat(np.arange(k), per)
        return centers[labels] + rng.standard_normal((k * per, 3)) * 0.1, labels

    def test_kcenter_picks_one_per_separated_cluster(self) -> None:
        """k = number of clusters: distinct centers, the first as given, one per cluster."""
        x, labels = self.blobs()
        c = kcenter(x, 5, first=7)
        assert c[0] == 7 and len(set(c.tolist())) == 5
        assert sorted(labels[c].tolist()) == [0, 1, 2, 3, 4]
        assert sorted(kcenter(x[:3], 10, first=0).tolist()) == [0, 1, 2]  # k > m: every row once

    def test_kmeanspp_is_distinct_deterministic_and_covers_clusters(self) -> None:
        """Fixed uniforms give fixed centers, never repeated; far clusters are all seeded."""
        x, labels = self.blobs()
        u = np.random.default_rng(9).random(len(x))
        a, b = kmeanspp(x, 5, u), kmeanspp(x, 5, u)
        assert a.tolist() == b.tolist() and len(set(a.tolist())) == 5
        assert sorted(labels[a].tolist()) == [0, 1, 2, 3, 4]
        dup = np.zeros((4, 2))
        assert sorted(kmeanspp(dup, 3, np.array([0.5, 0.1, 0.9])).tolist()) == [0, 1, 2]

    def test_assign_matches_brute_force(self) -> None:
        """Each row goes to its nearest center."""
        rng = np.random.default_rng(10)
        x = rng.standard_normal((30, 4))
        centers = np.array([0, 5, 9])
        brute = [int(np.argmin([np.linalg.norm(r - x[c]) for c in centers])) for r in x]
        assert assign(x, centers).tolist() == brute

    def test_one_per_cluster_picks_the_smallest_draw(self) -> None:
        """Exactly one member per cluster, the one with the smallest draw."""
        labels = np.array([2, 0, 2, 1, 0, 2])
        u = np.array([0.5, 0.9, 0.1, 0.3, 0.2, 0.7])
        assert one_per_cluster(labels, u).tolist() == [False, False, True, True, True, False]

    def test_one_per_cluster_is_uniform_within_a_cluster(self) -> None:
        """Over 20,000 seeded draws, each member of a cluster of size s is chosen about 1/s of the time."""
        labels = np.array([0, 0, 0, 0, 1, 1, 2])
        rng = np.random.default_rng(11)
        runs = 20_000
        counts = np.zeros(len(labels))
        for _ in range(runs):
            counts += one_per_cluster(labels, rng.random(len(labels)))
        sizes = np.bincount(labels)[labels]
        expected = runs / sizes
        sigma = np.sqrt(runs * (1 / sizes) * (1 - 1 / sizes))
        assert (np.abs(counts - expected) <= 5 * np.maximum(sigma, 1)).all()
