"""Diverse subset selection for the windowed batch mode: k-center, k-means++ seeding, nearest-center
assignment and one uniformly drawn member per cluster."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selector.arrays import FloatArray, IntArray
from selector.budget.diversity import assign, kcenter, kmeanspp, one_per_cluster

PROPERTY = settings(max_examples=60, deadline=None)


def _clusters(n_clusters: int = 8, per: int = 15, dim: int = 6, seed: int = 0) -> tuple[FloatArray, IntArray]:
    """Points around far-apart centers, shuffled, with their true cluster."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_clusters, dim)) * 100.0
    truth = rng.permutation(np.repeat(np.arange(n_clusters), per))
    return centers[truth] + rng.normal(size=(len(truth), dim)), truth


@st.composite
def point_sets(draw: st.DrawFn) -> FloatArray:
    """(m, d) points, m >= 1, with duplicates likely (values from a small set)."""
    d = draw(st.integers(1, 4))
    value = st.one_of(st.sampled_from([0.0, 1.0, -2.0]), st.floats(-50, 50))
    rows = draw(st.lists(st.lists(value, min_size=d, max_size=d), min_size=1, max_size=15))
    return np.asarray(rows, dtype=np.float64)


class TestKCenter:
    @PROPERTY
    @given(x=point_sets(), data=st.data())
    def test_distinct_indices_starting_at_first(self, x: FloatArray, data: st.DataObject) -> None:
        """min(k, m) distinct indices in range, the first one being ``first``, whatever the duplicates."""
        k = data.draw(st.integers(1, len(x) + 3))
        first = data.draw(st.integers(0, len(x) - 1))
        c = kcenter(x, k, first)
        assert c.dtype == np.int64
        assert len(c) == min(k, len(x))
        assert len(set(c.tolist())) == len(c)
        assert c[0] == first
        assert ((c >= 0) & (c < len(x))).all()
        np.testing.assert_array_equal(kcenter(x, k, first), c)

    def test_k_at_least_m_returns_every_index_in_traversal_order(self) -> None:
        """Asking for more centers than rows gives all rows, farthest first."""
        x = np.array([[0.0], [1.0], [10.0], [4.0]])
        assert kcenter(x, 10, first=0).tolist() == [0, 2, 3, 1]

    def test_one_center_per_separated_cluster(self) -> None:
        """With k equal to the number of far-apart clusters, every cluster gets exactly one center."""
        x, truth = _clusters()
        c = kcenter(x, 8, first=5)
        assert sorted(truth[c].tolist()) == list(range(8))

    def test_each_center_is_the_farthest_row(self) -> None:
        """Every next center maximizes the distance to the nearest center chosen before it."""
        x = np.random.default_rng(1).normal(size=(40, 3))
        c = kcenter(x, 10, first=7)
        for i in range(1, len(c)):
            gap = np.sqrt(((x[:, None, :] - x[None, c[:i], :]) ** 2).sum(-1)).min(axis=1)
            assert gap[c[i]] == pytest.approx(gap.max(), rel=1e-12)

    def test_ties_go_to_the_lowest_index(self) -> None:
        """Two rows equally far from the first center: the lower index is taken."""
        x = np.array([[0.0], [-1.0], [1.0]])
        assert kcenter(x, 2, first=0).tolist() == [0, 1]

    def test_k_zero_gives_nothing(self) -> None:
        """No centers asked, none returned."""
        assert kcenter(np.ones((3, 2)), 0, first=0).tolist() == []


class TestKMeansPP:
    @PROPERTY
    @given(x=point_sets(), data=st.data())
    def test_distinct_and_deterministic(self, x: FloatArray, data: st.DataObject) -> None:
        """min(k, m) distinct indices, the first at floor(u[0] m), the same for the same uniforms."""
        k = data.draw(st.integers(1, len(x) + 3))
        u = np.asarray(data.draw(st.lists(st.floats(0, 1, exclude_max=True), min_size=k, max_size=k)))
        c = kmeanspp(x, k, u)
        assert len(c) == min(k, len(x))
        assert len(set(c.tolist())) == len(c)
        assert c[0] == int(u[0] * len(x))
        np.testing.assert_array_equal(kmeanspp(x, k, u.copy()), c)

    def test_second_center_by_inverse_cdf_of_squared_distance(self) -> None:
        """From center 0 the weights are D^2 = [0, 1, 4, 9]; u = 0.3 lands in row 2 (cdf 1, 5, 14)."""
        x = np.array([[0.0], [1.0], [2.0], [3.0]])
        assert kmeanspp(x, 2, np.array([0.0, 0.3])).tolist() == [0, 2]
        assert kmeanspp(x, 2, np.array([0.0, 0.99])).tolist() == [0, 3]
        assert kmeanspp(x, 2, np.array([0.0, 0.0])).tolist() == [0, 1]

    def test_all_remaining_at_distance_zero_takes_lowest_unchosen(self) -> None:
        """When every row duplicates a chosen center, the lowest indices not chosen yet follow."""
        x = np.zeros((5, 2))
        assert kmeanspp(x, 4, np.array([0.5, 0.9, 0.9, 0.9])).tolist() == [2, 0, 1, 3]

    def test_u_close_to_one_never_repeats(self) -> None:
        """A uniform just below 1 picks the last row with positive weight, never a chosen one."""
        x = np.array([[0.0], [1.0], [2.0], [0.0]])
        u = np.array([0.0, np.nextafter(1.0, 0.0), np.nextafter(1.0, 0.0)])
        c = kmeanspp(x, 3, u)
        assert c.tolist()[:2] == [0, 2]
        assert len(set(c.tolist())) == 3

    def test_seeds_spread_over_separated_clusters(self) -> None:
        """On far-apart clusters D^2 sampling almost surely puts one seed in each."""
        x, truth = _clusters()
        u = np.random.default_rng(2).random(8)
        assert sorted(truth[kmeanspp(x, 8, u)].tolist()) == list(range(8))


class TestAssign:
    def test_matches_brute_force(self) -> None:
        """Each row goes to the center at the smallest Euclidean distance."""
        rng = np.random.default_rng(3)
        x = rng.normal(size=(200, 5))
        centers = np.array([3, 17, 50, 120, 199])
        brute = ((x[:, None, :] - x[None, centers, :]) ** 2).sum(-1).argmin(axis=1)
        np.testing.assert_array_equal(assign(x, centers), brute)

    def test_centers_assign_to_themselves_and_ties_go_low(self) -> None:
        """A center belongs to its own cluster; a row halfway between two centers goes to the first."""
        x = np.array([[0.0], [2.0], [1.0], [5.0]])
        assert assign(x, np.array([1, 0])).tolist() == [1, 0, 0, 0]

    def test_recovers_separated_clusters(self) -> None:
        """k-center followed by assignment reproduces the true partition of far-apart clusters."""
        x, truth = _clusters()
        labels = assign(x, kcenter(x, 8, first=0))
        for c in range(8):
            assert len(set(truth[labels == c].tolist())) == 1


class TestOnePerCluster:
    @PROPERTY
    @given(data=st.data())
    def test_exactly_one_member_per_cluster_with_the_smallest_draw(self, data: st.DataObject) -> None:
        """Every cluster present gets exactly one chosen member: the one with the smallest u, lowest index
        among equal draws."""
        n = data.draw(st.integers(0, 30))
        labels = np.asarray(data.draw(st.lists(st.integers(0, 5), min_size=n, max_size=n)), dtype=np.int64)
        u = np.asarray(
            data.draw(st.lists(st.sampled_from([0.0, 0.25, 0.5, 0.75]), min_size=n, max_size=n)), dtype=float
        )
        chosen = one_per_cluster(labels, u)
        assert chosen.dtype == np.bool_
        for c in set(labels.tolist()):
            members = np.flatnonzero(labels == c)
            assert chosen[members].sum() == 1
            best = members[np.argmin(u[members])]
            assert chosen[best]
        assert chosen.sum() == len(set(labels.tolist()))

    def test_each_member_chosen_with_probability_one_over_cluster_size(self) -> None:
        """Over 20000 iid uniform draws, every member of a cluster of size s is chosen about 1/s of the time
        (within 5 binomial standard deviations)."""
        labels = np.array([3, 0, 1, 1, 2, 2, 2, 0, 0, 0, 0, 4, 2, 2], dtype=np.int64)
        trials = 20000
        rng = np.random.default_rng(4)
        # all trials in one call: trial t relabels its clusters as label + 5 t
        big = (labels[None, :] + 5 * np.arange(trials)[:, None]).ravel()
        chosen = one_per_cluster(big, rng.random(big.shape)).reshape(trials, len(labels))
        counts = chosen.sum(axis=0)
        sizes = np.bincount(labels)[labels]
        p = 1.0 / sizes
        sigma = np.sqrt(trials * p * (1 - p))
        assert (np.abs(counts - trials * p) <= 5 * sigma).all()
        assert (chosen.sum(axis=1) == 5).all()
