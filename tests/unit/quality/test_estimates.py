"""Estimates with confidence intervals: Wilson for audits, inverse-probability weighting for everything
labeled. Coverage is measured by seeded simulation, including with the inclusion probabilities the Router
itself records."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selector.config import parse_config
from selector.errors import SelectorError
from selector.messages.prediction import Batch
from selector.quality.estimates import Z_95, _wilson_bounds, model_estimates, weighted_mean, wilson
from selector.routing import AUDIT, QUERY, Router

CLASSES = ["ok", "scratch", "dent", "crack"]
DEFECTS = np.array([False, True, True, True])


class TestWilson:
    def test_known_values_and_edges(self) -> None:
        """8 of 10: [0.490, 0.943]; 0 of 20 keeps a positive upper bound; nothing labeled: no estimate."""
        i = wilson(8, 10)
        assert (round(i.low, 3), round(i.high, 3), i.estimate, i.n) == (0.49, 0.943, 0.8, 10)
        zero = wilson(0, 20)
        assert zero.low == 0.0 and 0.1 < zero.high < 0.2
        assert math.isnan(wilson(0, 0).estimate) and (wilson(0, 0).low, wilson(0, 0).high) == (0.0, 1.0)
        with pytest.raises(SelectorError, match="0 <= successes <= n"):
            wilson(3, 2)

    @pytest.mark.parametrize("p", [0.03, 0.5, 0.97])
    def test_covers_the_true_proportion_in_at_least_93_percent_of_samples(self, p: float) -> None:
        """2,000 seeded binomial samples of 60: the 95% interval holds p in >= 93% of them."""
        rng = np.random.default_rng(1)
        hits = [wilson(int(k), 60).low <= p <= wilson(int(k), 60).high for k in rng.binomial(60, p, 2000)]
        assert np.mean(hits) >= 0.93


class TestWeightedMean:
    @settings(max_examples=50, deadline=None)
    @given(st.lists(st.tuples(st.booleans(), st.floats(0.01, 1.0)), min_size=1, max_size=40))
    def test_in_unit_interval_and_ordered(self, rows: list[tuple[bool, float]]) -> None:
        """low <= estimate <= high, all within [0, 1]."""
        y = np.array([float(a) for a, _ in rows])
        pi = np.array([b for _, b in rows])
        e = weighted_mean(y, pi)
        assert 0.0 <= e.low <= e.estimate <= e.high <= 1.0 and e.n == len(rows)

    def test_equal_probabilities_give_the_plain_mean_and_a_census_has_no_error(self) -> None:
        """With one pi for all the weights cancel; pi = 1 still leaves outcome uncertainty: the target is the
        model's accuracy on the stream, not on these four items, so the interval is no point."""
        y = np.array([1.0, 0.0, 1.0, 1.0])
        assert weighted_mean(y, np.full(4, 0.3)).estimate == pytest.approx(0.75)
        census = weighted_mean(y, np.ones(4))
        assert census.low < census.estimate == 0.75 < census.high

    def test_the_interval_never_collapses_on_few_agreeing_or_dominated_labels(self) -> None:
        """8 labels all wrong, or 19 labels where heavy audit weights dwarf the one error: the normal
        interval would be a point or a sliver; this one is a Wilson interval no narrower than a simple
        random sample of as many labels would give (all agreeing: of Kish's effective size)."""
        wrong = weighted_mean(np.zeros(8), np.array([0.5, 0.2, 0.9, 0.1, 0.3, 0.6, 0.05, 0.4]))
        w = 1.0 / np.array([0.5, 0.2, 0.9, 0.1, 0.3, 0.6, 0.05, 0.4])
        kish = w.sum() ** 2 / (w * w).sum()
        z2 = Z_95**2
        assert wrong.estimate == 0.0 and wrong.low == 0.0
        assert wrong.high == pytest.approx((z2 / kish) / (1 + z2 / kish))  # Wilson's upper bound at 0 of n
        y = np.ones(19)
        y[0] = 0.0
        pi = np.full(19, 0.002)
        pi[0] = 0.8  # the one error is a likely query; the rest are rare audits (weight 500 each)
        few = weighted_mean(y, pi)
        assert few.estimate > 0.9998
        assert few.low == pytest.approx(_wilson_bounds(few.estimate, 19.0, Z_95)[0])  # capped at n = 19
        assert few.low < 0.84

    def test_invalid_probabilities_are_refused(self) -> None:
        """pi outside (0, 1] or mismatched lengths are errors; no labeled item gives no estimate."""
        with pytest.raises(SelectorError, match=r"\(0, 1\]"):
            weighted_mean(np.ones(2), np.array([0.5, 0.0]))
        with pytest.raises(SelectorError, match="differ in length"):
            weighted_mean(np.ones(2), np.ones(3))
        nothing = weighted_mean(np.zeros(0), np.zeros(0))
        assert math.isnan(nothing.estimate) and (nothing.low, nothing.high, nothing.n) == (0.0, 1.0, 0)


def population(seed: int, n: int = 20_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A line: true labels (about 5% defects), the model's probabilities and its predictions; the model is
    right far more often when it is confident, so labeling uncertain items over-samples its mistakes."""
    rng = np.random.default_rng(seed)
    label = rng.choice(4, size=n, p=[0.95, 0.02, 0.02, 0.01])
    sharp = rng.uniform(0.5, 6.0, n)
    logits = rng.normal(0, 1, (n, 4))
    logits[np.arange(n), label] += sharp
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return label, probs, probs.argmax(axis=1)


class TestUnbiasedBySimulation:
    def test_weighted_accuracy_covers_the_truth_where_the_naive_one_does_not(self) -> None:
        """300 seeded Poisson samples with pi rising steeply with uncertainty: the IPW 95% interval covers
        the true accuracy in >= 90% of them; the unweighted accuracy of the labeled items almost never."""
        label, probs, predicted = population(0)
        truth = float(np.mean(label == predicted))
        uncertainty = 1.0 - probs.max(axis=1)
        pi = np.clip(0.01 + 0.6 * uncertainty**2, 0.0, 1.0)
        rng = np.random.default_rng(1)
        covered, naive_covered = [], []
        for _ in range(300):
            sampled = rng.random(len(pi)) < pi
            est = model_estimates(label[sampled], predicted[sampled], pi[sampled], CLASSES, DEFECTS)
            covered.append(est.accuracy.low <= truth <= est.accuracy.high)
            naive = wilson(int(np.sum(label[sampled] == predicted[sampled])), int(sampled.sum()))
            naive_covered.append(naive.low <= truth <= naive.high)
        assert np.mean(covered) >= 0.90
        assert np.mean(naive_covered) <= 0.05

    def test_recall_and_defect_rate_cover_the_truth(self) -> None:
        """The same for the recall of class 'ok' and the defect rate (>= 88% of 300 samples: fewer labeled
        defects make their intervals rougher)."""
        label, probs, predicted = population(2)
        pi = np.clip(0.02 + 0.6 * (1.0 - probs.max(axis=1)) ** 2, 0.0, 1.0)
        true_recall = float(np.mean(predicted[label == 0] == 0))
        true_defects = float(np.mean(DEFECTS[label]))
        rng = np.random.default_rng(3)
        recall_hits, defect_hits = [], []
        for _ in range(300):
            sampled = rng.random(len(pi)) < pi
            est = model_estimates(label[sampled], predicted[sampled], pi[sampled], CLASSES, DEFECTS)
            recall_hits.append(est.recall["ok"].low <= true_recall <= est.recall["ok"].high)
            defect_hits.append(est.defect_rate.low <= true_defects <= est.defect_rate.high)
        assert np.mean(recall_hits) >= 0.88
        assert np.mean(defect_hits) >= 0.88

    def test_the_routers_own_inclusion_probabilities_give_covering_intervals(self) -> None:
        """The real thing: the Router decides the population at a 5% budget with 1% audits, once per budget
        seed; the labeled items (queries and audits) with the inclusion probabilities it recorded give an
        accuracy interval that covers the population's accuracy in >= 90% of 60 seeds."""
        label, probs, predicted = population(4, n=10_000)
        truth = float(np.mean(label == predicted))
        n = len(label)
        hits = []
        for seed in range(60):
            cfg = parse_config(
                {
                    "classes": CLASSES,
                    "budget": {"rate": 0.05, "audit_rate": 0.01, "caps": {}, "seed": seed, "max_burst": 20.0},
                }
            )
            router = Router(cfg)
            batch = Batch(
                position=np.arange(n),
                ids=[f"p-{i}" for i in range(n)],
                probs=probs,
                ts_s=np.zeros(n),
                model=[None] * n,
                segment=[None] * n,
                payload=[None] * n,
                meta=[None] * n,
            )
            d = router.decide(0, batch, np.arange(n) * 0.01)
            labeled = (d.route == QUERY) | (d.route == AUDIT)
            est = model_estimates(
                label[labeled], d.predicted[labeled], d.inclusion[labeled], CLASSES, DEFECTS
            )
            hits.append(est.accuracy.low <= truth <= est.accuracy.high)
        assert np.mean(hits) >= 0.90
