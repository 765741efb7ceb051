"""The learning-loop selection benchmark's harness (bench/selection.py) counts what it reports.

A tiny stream of Gaussian blobs (no river, no scikit-activeml): the accounting must match what the Router
routed, the ratios must follow their definitions, and the run must be deterministic.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench import selection
from bench.selection_policies import DEFAULT, OURS, RANDOM, ExactRandom, Policy, SelectorPolicy
from bench.selection_streams import Stream

N_ITEMS = 1_200
RATE = 0.05


def blobs(n: int = N_ITEMS, seed: int = 0) -> Stream:
    """Three classes in 4 dimensions, class 2 rare (3%), the second half shifted (a drift at n/2)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 2.0, (3, 4))

    def draw(m: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
        y = rng.choice(3, m, p=[0.57, 0.40, 0.03])
        return centers[y] + shift + rng.normal(0.0, 1.0, (m, 4)), y

    x1, y1 = draw(n // 2, 0.0)
    x2, y2 = draw(n - n // 2, 0.5)
    seed_y = np.repeat(np.arange(3), 2)
    test_x, test_y = draw(300, 0.5)
    return Stream(
        "blobs",
        np.concatenate([x1, x2]),
        np.concatenate([y1, y2]),
        np.arange(n, dtype=np.float64),
        centers[seed_y] + rng.normal(0.0, 1.0, (6, 4)),
        seed_y,
        test_x,
        test_y,
        3,
        2,
        n // 2,
    )


def capture(made: list[Policy], name: str = DEFAULT) -> selection.Factory:
    def factory(cell: selection.Cell) -> Policy:
        policy = OURS[name](cell) if name in OURS else ExactRandom(cell)
        made.append(policy)
        return policy

    return factory


@pytest.fixture(scope="module")
def default_run() -> tuple[selection.RunResult, SelectorPolicy]:
    """The shipped default through the loop on :func:`blobs`, with the policy it built."""
    made: list[Policy] = []
    result = selection.run(blobs(), capture(made), DEFAULT, RATE, 0)
    assert isinstance(made[0], SelectorPolicy)
    return result, made[0]


class TestSelectionHarness:
    def test_labels_are_the_items_routed_query_or_audit(
        self, default_run: tuple[selection.RunResult, SelectorPolicy]
    ) -> None:
        """Every item the Router sent for labeling (query or audit) is counted once, and nothing else."""
        result, policy = default_run
        routed = policy.router.stats.items
        assert sum(routed.values()) == N_ITEMS
        assert result.labels == routed["query"] + routed["audit"]
        assert result.labels > 0

    def test_ratios_follow_their_definitions(
        self, default_run: tuple[selection.RunResult, SelectorPolicy]
    ) -> None:
        """realized/rate is labels / (rate n); after the drift it counts the items from the drift point on."""
        result, _ = default_run
        assert result.items == N_ITEMS
        assert result.realized_ratio == pytest.approx(result.labels / (RATE * N_ITEMS))
        assert result.items_after == N_ITEMS // 2
        assert result.after_ratio == pytest.approx(result.labels_after / (RATE * (N_ITEMS // 2)))
        assert 0 <= result.labels_after <= result.labels
        assert result.window_low <= result.realized_ratio <= result.window_high
        assert 0.0 <= result.macro_f1 <= 1.0
        assert 0.0 <= result.rare_recall <= 1.0

    def test_enrichment_is_the_rare_share_of_labels_over_its_share_of_the_stream(
        self, default_run: tuple[selection.RunResult, SelectorPolicy]
    ) -> None:
        result, _ = default_run
        expected = (result.rare_labels / result.labels) / (result.rare_items / result.items)
        assert result.enrichment == pytest.approx(expected)
        assert result.rare_items == int((blobs().y == 2).sum())

    def test_a_run_is_deterministic(self, default_run: tuple[selection.RunResult, SelectorPolicy]) -> None:
        """Same stream, policy, rate and seed: the same labels, the same learner, the same figures."""
        again = selection.run(blobs(), capture([]), DEFAULT, RATE, 0)
        first, _ = default_run
        assert (again.labels, again.labels_after, again.rare_labels, again.macro_f1) == (
            first.labels,
            first.labels_after,
            first.rare_labels,
            first.macro_f1,
        )

    def test_exact_random_spends_the_budget_exactly_and_is_the_gain_baseline(self) -> None:
        stream = blobs()
        rnd = selection.run(stream, capture([], RANDOM), RANDOM, RATE, 0)
        assert rnd.labels == round(RATE * N_ITEMS)
        assert rnd.realized_ratio == pytest.approx(1.0, abs=1 / (RATE * N_ITEMS))
        gain = selection.gains([rnd])
        assert gain[(RANDOM, "blobs", 0, RATE)] == 0.0


class TestWindowRatios:
    def test_lowest_and_highest_window(self) -> None:
        """Labels at items 0..9 only: the first window holds 10, a window past item 9 holds none."""
        labeled = np.zeros(100, dtype=bool)
        labeled[:10] = True
        low, high = selection.window_ratios(labeled, 0.1, window=20)
        assert (low, high) == (0.0, 10 / (0.1 * 20))

    def test_a_stream_shorter_than_the_window_has_none(self) -> None:
        low, high = selection.window_ratios(np.ones(5, dtype=bool), 0.1, window=20)
        assert math.isnan(low) and math.isnan(high)
