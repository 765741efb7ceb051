"""Specification: no input can poison a partition's scoring memory.

Whatever sequence of records the decoder accepts (embeddings up to the float32 limit, zero and denormal
embeddings, duplicates, extreme predicted losses and costs), every score of every stateful measure (density,
novelty, expected gradient length, predicted loss, the combination, cost-aware ranking, cold start) stays
finite in [0, 1], and the memory survives a snapshot round trip exactly. Records the decoder refuses never
reach the memory; a refused out-of-range embedding leaves later decisions unharmed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selector.config import Config, parse_config
from selector.messages.fields import FLOAT32_MAX, FLOAT32_TINY
from selector.messages.prediction import Batch, decode_batch
from selector.scores.pipeline import Inputs, Scorer, ScoringState

CLASSES = ["ok", "scratch", "dent"]
DIM = 3

SCORING: dict[str, dict[str, Any]] = {
    "density": {"measure": "density"},
    "novelty": {"measure": "novelty"},
    "egl": {"measure": "egl"},
    "predicted_loss": {"measure": "predicted_loss"},
    "density-weighted cold start": {"measure": "margin", "density_beta": 1.0, "cold_start_labels": 3},
    "cost-aware combination": {
        "measure": "combination",
        "weights": {"margin": 1.0, "egl": 1.0, "predicted_loss": 0.5, "novelty": 1.0, "density": 0.5},
        "density_beta": 0.5,
        "cost_aware": True,
        "cold_start_labels": 2,
    },
}
"""Every stateful measure, alone and combined, with memories small enough to fill within a test."""


def config(name: str) -> Config:
    small = {"normalize_items": 64, "reservoir_items": 4, "coreset_items": 5}
    return parse_config(
        {
            "classes": CLASSES,
            "input": {"embedding_dim": DIM},
            "scoring": {**SCORING[name], **small},
            "budget": {"rate": 0.5, "caps": {}},
        }
    )


EXTREME = st.sampled_from(
    [0.0, -0.0, 5e-324, -5e-324, 1e-300, FLOAT32_TINY, 1e-20, 1.0, -1.0, 1e19, 1e30, 2e38, -2e38, FLOAT32_MAX]
)
NUMBER = st.one_of(EXTREME, st.floats(-1e6, 1e6), st.floats(allow_nan=False, allow_infinity=False))
PROBS = st.one_of(
    st.sampled_from([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0]]),
    st.lists(st.floats(1e-6, 1.0), min_size=3, max_size=3).map(lambda w: [x / sum(w) for x in w]),
)
RECORD = st.fixed_dictionaries(
    {
        "probs": PROBS,
        "embedding": st.lists(NUMBER, min_size=DIM, max_size=DIM),
        "predicted_loss": st.one_of(EXTREME.map(abs), st.floats(0, 10), st.floats(0, 1e39)),
        "cost": st.one_of(EXTREME.map(abs), st.floats(0.1, 10), st.floats(5e-324, 1e39)),
    }
)


def decoded(records: list[dict[str, Any]], start: int) -> Batch:
    values = [orjson.dumps({"id": f"i{start + k}", **r}) for k, r in enumerate(records)]
    return decode_batch(values, [0] * len(values), **config("density").decode_options())


def inputs(b: Batch) -> Inputs:
    return Inputs(b.probs, b.samples, b.committee, b.detections, b.predicted_loss, b.cost, b.vectors)


def round_trip(scorer: Scorer, state: ScoringState) -> ScoringState:
    return scorer.restore(orjson.loads(orjson.dumps(state.to_dict())))


def assert_unit_interval(values: np.ndarray, what: str) -> None:
    assert np.isfinite(values).all() and ((values >= 0.0) & (values <= 1.0)).all(), (what, values)


class TestNoInputPoisonsTheScoringMemory:
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        name=st.sampled_from(sorted(SCORING)),
        batches=st.lists(
            st.tuples(st.lists(st.tuples(RECORD, st.booleans()), min_size=1, max_size=8), st.booleans()),
            min_size=1,
            max_size=6,
        ),
    )
    def test_every_score_stays_finite_in_the_unit_interval_and_the_memory_round_trips(
        self, name: str, batches: list[tuple[list[tuple[dict[str, Any], bool]], bool]]
    ) -> None:
        """After any sequence of accepted records (some sent for labeling, chunks closing at random), every
        measure and the deciding score are finite in [0, 1], and a snapshot restores a memory that
        snapshots identically and scores the next batch identically."""
        scorer = Scorer(config(name))
        state = scorer.initial()
        seen = 0
        for records, boundary in batches:
            b = decoded([r for r, _ in records], seen)
            seen += len(records)
            sent = np.asarray([records[p][1] for p in b.position.tolist()], dtype=bool)
            x = inputs(b)
            scored = scorer.score(state, x)
            restored = round_trip(scorer, state)
            assert orjson.dumps(restored.to_dict()) == orjson.dumps(state.to_dict())
            again = scorer.score(restored, x)
            np.testing.assert_array_equal(again.score, scored.score)
            assert_unit_interval(scored.score, "score")
            for measure, values in scored.scores.items():
                assert_unit_interval(values, measure)
            state = scorer.advance(state, x, scored, sent, b.hashes, boundary)
        memory = state.reservoir.values() if state.reservoir is not None else np.zeros((0, DIM))
        points = state.coreset.points if state.coreset is not None else np.zeros((0, DIM))
        assert np.isfinite(memory).all() and np.isfinite(points).all()

    def test_a_refused_embedding_leaves_later_density_and_novelty_finite(self) -> None:
        """The reported poison: one embedding [1e39, 0, 0] among ordinary ones is dead-lettered
        (embedding_out_of_range) and every item after it still gets finite density and novelty."""
        scorer = Scorer(config("cost-aware combination"))
        rng = np.random.default_rng(11)
        state = scorer.initial()
        for k in range(4):
            records = [
                {"probs": [0.5, 0.3, 0.2], "embedding": rng.standard_normal(DIM).tolist()} for _ in range(40)
            ]
            records[0]["embedding"] = [1e39, 0.0, 0.0]
            b = decoded(records, 40 * k)
            assert [(r.position, r.reason) for r in b.rejects] == [(0, "embedding_out_of_range")]
            x = inputs(b)
            scored = scorer.score(state, x)
            assert_unit_interval(scored.scores["density"], "density")
            assert_unit_interval(scored.scores["novelty"], "novelty")
            state = scorer.advance(state, x, scored, np.ones(len(b), dtype=bool), b.hashes, True)
        assert state.reservoir is not None and len(state.reservoir.values()) > 0
        assert state.coreset is not None and len(state.coreset.points) == 5


NESTED_ROW = st.lists(
    st.one_of(st.floats(0, 1), st.sampled_from([0.0, 5e-324, 1e-300, 1.0])), min_size=3, max_size=3
)
NESTED_RECORD = st.fixed_dictionaries(
    {
        "logits": st.lists(st.one_of(NUMBER, st.sampled_from([1e308, -1e308])), min_size=3, max_size=3),
        "samples": st.lists(NESTED_ROW, min_size=1, max_size=4),
        "committee": st.lists(NESTED_ROW, min_size=1, max_size=4),
        "detections": st.lists(NESTED_ROW, max_size=3),
    }
)
NESTED_MEASURES = ["bald", "predictive_entropy", "predictive_variance", "vote_entropy", "kl_consensus"]


class TestNoInputBreaksTheProbabilityMeasures:
    @settings(max_examples=60, deadline=None)
    @given(records=st.lists(NESTED_RECORD, min_size=1, max_size=5), measure=st.sampled_from(NESTED_MEASURES))
    def test_logits_samples_committee_and_boxes_give_scores_in_the_unit_interval(
        self, records: list[dict[str, Any]], measure: str
    ) -> None:
        """Whatever logits (any finite magnitude), MC samples, committee rows and boxes the decoder accepts,
        even under a tolerance wide enough to let rows far from summing to 1 in, every score is finite in
        [0, 1]."""
        c = parse_config(
            {"classes": CLASSES, "scoring": {"measure": measure}, "input": {"prob_tolerance": 1.0}}
        )
        values = [orjson.dumps({"id": f"n{k}", **r}) for k, r in enumerate(records)]
        b = decode_batch(values, [0] * len(values), **c.decode_options())
        scorer = Scorer(c)
        scored = scorer.score(scorer.initial(), inputs(b))
        assert_unit_interval(scored.score, "score")
        for name, values_of in scored.scores.items():
            assert_unit_interval(values_of, name)
