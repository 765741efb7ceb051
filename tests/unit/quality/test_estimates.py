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
from selector.quality.estimates import Z_95, confusion, model_estimates, weighted_mean, wilson
from selector.quality.intervals import bounds, t_quantile
from selector.routing import AUDIT, QUERY, Router

CLASSES = ["ok", "scratch", "dent", "crack"]
DEFECTS = np.array([False, True, True, True])


def exact_coverage(p: float, n: int) -> float:
    """Exact binomial coverage of the bounds at ``n`` items (no degrees of freedom lost) at proportion p."""
    x = np.arange(n + 1)
    low, high = bounds(x / n, np.full(n + 1, float(n)), np.full(n + 1, np.inf))
    pmf = np.array([math.comb(n, int(k)) * p**k * (1 - p) ** (n - k) for k in x])
    return float(pmf[(low <= p) & (p <= high)].sum())


class TestBounds:
    def test_known_values_and_edges(self) -> None:
        """8 of 10: the continuity-corrected Wilson interval [0.442, 0.965] (Newcombe 1998 gives 0.4422,
        0.9646); 0 of 20 keeps a positive upper bound; nothing labeled: no estimate."""
        i = wilson(8, 10)
        assert (round(i.low, 3), round(i.high, 3), i.estimate, i.n) == (0.442, 0.965, 0.8, 10)
        zero = wilson(0, 20)
        assert zero.low == 0.0 and 0.15 < zero.high < 0.21
        assert math.isnan(wilson(0, 0).estimate) and (wilson(0, 0).low, wilson(0, 0).high) == (0.0, 1.0)
        with pytest.raises(SelectorError, match="0 <= successes <= n"):
            wilson(3, 2)

    @pytest.mark.parametrize("p", [0.001, 0.01, 0.05, 0.2, 0.5, 0.99])
    def test_exact_coverage_at_every_n_up_to_200(self, p: float) -> None:
        """For a simple random sample the exact binomial coverage of the 95% bounds is >= 94.5% at every n
        from 1 to 200 (plain Wilson dips to 80% near 0 and 1)."""
        assert min(exact_coverage(p, n) for n in range(1, 201)) >= 0.945

    def test_t_quantiles(self) -> None:
        """Student t at 97.5%: 12.706 (1 df), 4.303 (2), 2.228 (10), 2.009 (50), 1.984 (100); none below 1."""
        t = t_quantile(np.array([1.0, 2.0, 10.0, 50.0, 100.0, 0.5]), Z_95)
        assert np.round(t[:5], 3).tolist() == [12.706, 4.303, 2.228, 2.009, 1.984] and math.isinf(t[5])

    @settings(max_examples=200, deadline=None)
    @given(st.floats(0.0, 1.0), st.floats(0.0, 1e6), st.floats(-1.0, 1e6))
    def test_bounds_hold_the_estimate_and_never_collapse(self, p: float, n: float, df: float) -> None:
        """0 <= low <= p <= high <= 1 and low < high, at any effective size and degrees of freedom."""
        low, high = bounds(np.array([p]), np.array([n]), np.array([df]))
        assert 0.0 <= low[0] <= p <= high[0] <= 1.0 and low[0] < high[0]


class TestWeightedMean:
    @settings(max_examples=100, deadline=None)
    @given(st.lists(st.tuples(st.booleans(), st.floats(0.001, 1.0)), min_size=1, max_size=40))
    def test_in_unit_interval_and_never_a_point(self, rows: list[tuple[bool, float]]) -> None:
        """low <= estimate <= high, all within [0, 1], and low < high: even labels seen with certainty
        leave the stream's value uncertain."""
        y = np.array([float(a) for a, _ in rows])
        pi = np.array([b for _, b in rows])
        e = weighted_mean(y, pi)
        assert 0.0 <= e.low <= e.estimate <= e.high <= 1.0 and e.low < e.high and e.n == len(rows)

    def test_equal_probabilities_give_the_plain_mean_and_certainty_is_no_point(self) -> None:
        """With one pi for all the weights cancel; pi = 1 still leaves outcome uncertainty: the target is the
        model's accuracy on the stream, not on these four items (issue 14: '100.0% [100.0%, 100.0%] from 1
        labels')."""
        y = np.array([1.0, 0.0, 1.0, 1.0])
        assert weighted_mean(y, np.full(4, 0.3)).estimate == pytest.approx(0.75)
        census = weighted_mean(y, np.ones(4))
        assert census.low < 0.5 and census.high > 0.95
        one = weighted_mean(np.ones(1), np.ones(1))
        assert (one.estimate, one.low, one.high) == (1.0, 0.0, 1.0)

    def test_few_agreeing_or_dominated_labels_give_wide_intervals(self) -> None:
        """8 labels all wrong, or 19 labels where heavy audit weights dwarf the one error: the interval is
        no narrower than Kish's effective size allows, with the degrees of freedom it rests on."""
        wrong = weighted_mean(np.zeros(8), np.array([0.5, 0.2, 0.9, 0.1, 0.3, 0.6, 0.05, 0.4]))
        assert wrong.estimate == 0.0 and wrong.low == 0.0 and wrong.high > 0.5
        y = np.ones(19)
        y[0] = 0.0
        pi = np.full(19, 0.002)
        pi[0] = 0.8  # the one error is a likely query; the rest are rare audits (weight 500 each)
        few = weighted_mean(y, pi)
        assert few.estimate > 0.9998 and few.high == 1.0
        assert few.low < 0.84

    def test_invalid_probabilities_are_refused(self) -> None:
        """pi outside (0, 1] or mismatched lengths are errors; no labeled item gives no estimate."""
        with pytest.raises(SelectorError, match=r"\(0, 1\]"):
            weighted_mean(np.ones(2), np.array([0.5, 0.0]))
        with pytest.raises(SelectorError, match="differ in length"):
            weighted_mean(np.ones(2), np.ones(3))
        nothing = weighted_mean(np.zeros(0), np.zeros(0))
        assert math.isnan(nothing.estimate) and (nothing.low, nothing.high, nothing.n) == (0.0, 1.0, 0)


class TestModelEstimates:
    def test_precision_is_the_weighted_share_correct_among_items_predicted_as_the_class(self) -> None:
        """Precision of 'dent' = sum of 1/pi over correct items predicted dent / over items predicted dent."""
        label = np.array([2, 2, 0, 1, 0])
        predicted = np.array([2, 2, 2, 1, 0])
        pi = np.array([0.5, 0.25, 0.1, 1.0, 0.01])
        est = model_estimates(label, predicted, pi, CLASSES, DEFECTS)
        assert est.precision["dent"].estimate == pytest.approx((2 + 4) / (2 + 4 + 10))
        assert est.precision["dent"].n == 3 and est.recall["dent"].n == 2
        assert est.recall["dent"].estimate == 1.0 and est.recall["dent"].low < 0.5
        assert math.isnan(est.precision["crack"].estimate) and est.precision["crack"].n == 0

    def test_mismatched_lengths_and_unknown_classes_are_refused(self) -> None:
        with pytest.raises(SelectorError, match="differ in length"):
            model_estimates(np.zeros(2, dtype=int), np.zeros(3, dtype=int), np.ones(2), CLASSES, DEFECTS)
        with pytest.raises(SelectorError, match=r"predicted class indices must lie in \[0, 4\): -1..0"):
            model_estimates(np.zeros(2, dtype=int), np.array([0, -1]), np.ones(2), CLASSES, DEFECTS)


class TestConfusion:
    def test_ipw_shares_sum_to_one(self) -> None:
        """Each cell holds the summed 1/pi of its items over all of them; nothing labeled gives zeros."""
        c = confusion(np.array([0, 0, 1]), np.array([0, 1, 1]), np.array([0.5, 1.0, 0.25]), 2)
        assert c == pytest.approx(np.array([[2.0, 1.0], [0.0, 4.0]]) / 7.0)
        assert c.sum() == pytest.approx(1.0)
        assert (confusion(np.zeros(0, int), np.zeros(0, int), np.zeros(0), 3) == 0).all()
        with pytest.raises(SelectorError, match=r"\(0, 1\]"):
            confusion(np.array([0]), np.array([0]), np.array([1.5]), 2)


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
