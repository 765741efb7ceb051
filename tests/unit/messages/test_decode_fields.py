"""Decoding of the optional fields measures read: samples, committee, detections, predicted_loss, cost,
embedding length, and fields the configuration requires."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from selector.messages.contracts import Prediction
from selector.messages.fields import FLOAT32_MAX, FLOAT32_TINY
from selector.messages.prediction import Batch, decode_batch

C = 3
OK = [0.5, 0.3, 0.2]


def dec(*records: Any, **kw: Any) -> Batch:
    values = [orjson.dumps(r) if not isinstance(r, bytes) else r for r in records]
    return decode_batch(values, [0] * len(values), n_classes=C, **kw)


def rejects(b: Batch) -> list[tuple[int, str, str]]:
    return [(r.position, r.reason, r.message) for r in b.rejects]


class TestNestedRows:
    def test_samples_committee_and_boxes_become_renormalized_arrays(self) -> None:
        """Valid rows come back as (rows, C) float arrays, renormalized to sum 1; absent fields are None."""
        b = dec(
            {"id": "a", "probs": OK, "samples": [[0.5, 0.25, 0.2505], [1, 0, 0]], "committee": [OK, OK, OK]},
            {"id": "b", "probs": OK, "detections": [OK, {"probs": [0, 1, 0], "box": [1, 2, 3, 4]}]},
            {"id": "c", "probs": OK, "detections": []},
        )
        assert rejects(b) == []
        assert b.samples[0] is not None and b.samples[0].shape == (2, 3)
        np.testing.assert_allclose(b.samples[0].sum(axis=1), [1.0, 1.0])
        assert b.samples[1] is None and b.committee[1] is None
        assert b.committee[0] is not None and b.committee[0].shape == (3, 3)
        assert b.detections[0] is None
        np.testing.assert_array_equal(b.detections[1], [OK, [0.0, 1.0, 0.0]])  # type: ignore[arg-type]
        assert b.detections[2] is not None and b.detections[2].shape == (0, 3)

    @pytest.mark.parametrize(
        ("field", "value", "message"),
        [
            ("samples", [], "'samples' must be a non-empty list of rows, each a list of 3 probabilities: []"),
            ("samples", [[0.5, 0.5]], "'samples' row 0 must be a list of 3 probabilities, got 2"),
            ("samples", [OK, [0.5, "x", 0.5]], "'samples' row 1 must hold numbers only: [0.5, 'x', 0.5]"),
            (
                "committee",
                [OK, [0.5, True, 0.5]],
                "'committee' row 1 must hold numbers only: [0.5, True, 0.5]",
            ),
            ("committee", [[1.5, -0.5, 0.0]], "'committee' row 0 must lie in [0, 1]: [1.5, -0.5, 0.0]"),
            (
                "committee",
                [OK, [0.5, 0.1, 0.1]],
                "'committee' row 1 must sum to 1 within 'input.prob_tolerance' 0.001: sum is 0.7",
            ),
            (
                "detections",
                {"probs": OK},
                "'detections' must be a list of boxes, each a list of 3 probabilities: "
                "{'probs': [0.5, 0.3, 0.2]}",
            ),
            (
                "detections",
                [{"box": [1, 2]}],
                "'detections' row 0 is an object without 'probs' (the box's 3 probabilities)",
            ),
        ],
    )
    def test_each_problem_is_a_reject_naming_field_and_row(
        self, field: str, value: Any, message: str
    ) -> None:
        """The record is rejected with reason bad_<field>; its valid neighbours are kept."""
        b = dec({"id": "x", "probs": OK}, {"id": "y", "probs": OK, field: value}, {"id": "z", "probs": OK})
        assert rejects(b) == [(1, f"bad_{field}", message)]
        assert b.ids == ["x", "z"] and len(b.samples) == len(b.detections) == 2

    def test_non_finite_rows_are_rejected(self) -> None:
        """NaN written by a Python producer is caught per row."""
        b = dec(b'{"id": "n", "probs": [0.5, 0.3, 0.2], "samples": [[0.5, 0.3, 0.2], [NaN, 0.5, 0.5]]}')
        assert rejects(b) == [(0, "bad_samples", "'samples' row 1 must be finite (no NaN or infinity)")]


class TestScalarsAndEmbeddings:
    def test_predicted_loss_and_cost_columns(self) -> None:
        """predicted_loss is NaN where absent, cost 1.0 where absent."""
        b = dec({"id": "a", "probs": OK, "predicted_loss": 2, "cost": 3.5}, {"id": "b", "probs": OK})
        assert b.predicted_loss[0] == 2.0 and np.isnan(b.predicted_loss[1])
        assert b.cost.tolist() == [3.5, 1.0]

    @pytest.mark.parametrize("loss", [-1, True, "high", float("inf")])
    def test_bad_predicted_loss(self, loss: Any) -> None:
        """predicted_loss must be a finite number >= 0."""
        raw = (
            b'{"id": "a", "probs": [0.5, 0.3, 0.2], "predicted_loss": '
            + (b"Infinity" if loss == float("inf") else orjson.dumps(loss))
            + b"}"
        )
        (r,) = dec(raw).rejects
        assert (r.reason, r.message) == (
            "bad_field",
            f"'predicted_loss' must be a finite number >= 0: {loss!r}",
        )

    def test_embedding_length_and_vectors(self) -> None:
        """With embedding_dim a wrong length is rejected; vectors stack the rest (NaN rows where absent)."""
        b = dec(
            {"id": "a", "probs": OK, "embedding": [1, 2]},
            {"id": "b", "probs": OK, "embedding": [1, 2, 3, 4]},
            {"id": "c", "probs": OK},
            embedding_dim=2,
        )
        assert rejects(b) == [
            (1, "wrong_embedding_dim", "'embedding' must have 'input.embedding_dim' = 2 numbers, got 4")
        ]
        assert b.vectors is not None and b.vectors.shape == (2, 2)
        assert b.vectors[0].tolist() == [1.0, 2.0] and np.isnan(b.vectors[1]).all()
        assert dec({"id": "a", "probs": OK, "embedding": [1, 2]}).vectors is None


class TestRequired:
    def test_missing_or_null_required_field_is_rejected_first(self) -> None:
        """A required field that is absent or null gives missing_field naming who needs it, before any other
        check of optional fields."""
        need = {"samples": "measure 'bald' (scoring)"}
        b = dec(
            {"id": "a", "probs": OK},
            {"id": "b", "probs": OK, "samples": None, "cost": -1},
            {"id": "c", "probs": OK, "samples": [OK]},
            required=need,
        )
        message = "'samples' is required by measure 'bald' (scoring)"
        assert rejects(b) == [(0, "missing_field", message), (1, "missing_field", message)]
        assert b.ids == ["c"]

    def test_required_probs_keeps_the_one_of_probs_or_logits_rule(self) -> None:
        """Requiring 'probs' accepts a record with 'logits' instead; one with neither is missing_probs."""
        b = dec({"id": "a", "logits": [1, 2, 3]}, {"id": "b"}, required={"probs": "somebody"})
        assert b.ids == ["a"]
        assert [(r.position, r.reason) for r in b.rejects] == [(1, "missing_probs")]

    def test_record_with_only_cost_takes_the_checked_path(self) -> None:
        """A record whose only optional column is 'cost' is still validated (reason bad_field) and stored."""
        b = dec(
            {"id": "a", "probs": OK, "cost": 0}, {"id": "b", "probs": OK, "cost": 2}, {"id": "c", "probs": OK}
        )
        assert rejects(b) == [(0, "bad_field", "'cost' must be a finite number > 0: 0")]
        assert b.cost.tolist() == [2.0, 1.0]


class TestFloat32Range:
    """The scoring memory keeps embeddings at float32 precision: a value beyond that range would be remembered
    as infinity and turn every later density and novelty score into NaN, so it is dead-lettered instead."""

    @pytest.mark.parametrize(
        ("field", "value", "reason", "message"),
        [
            (
                "embedding",
                [1e39, 0.0],
                "embedding_out_of_range",
                "'embedding' norm must be at most 3.40282347e+38 (float32 range): 1e+39",
            ),
            (
                "embedding",
                [3e38, 3e38],  # each value fits float32, the norm does not
                "embedding_out_of_range",
                "'embedding' norm must be at most 3.40282347e+38 (float32 range): 4.24264e+38",
            ),
            (
                "predicted_loss",
                1e39,
                "predicted_loss_out_of_range",
                "'predicted_loss' must be at most 3.40282347e+38 (float32 range): 1e+39",
            ),
            (
                "cost",
                1e-39,
                "cost_out_of_range",
                "'cost' must lie in [1.17549435e-38, 3.40282347e+38] (float32 range): 1e-39",
            ),
            (
                "cost",
                1e39,
                "cost_out_of_range",
                "'cost' must lie in [1.17549435e-38, 3.40282347e+38] (float32 range): 1e+39",
            ),
        ],
    )
    def test_value_beyond_float32_is_rejected_with_its_own_reason(
        self, field: str, value: Any, reason: str, message: str
    ) -> None:
        """The record is rejected with a reason naming the field; its neighbours are kept."""
        b = dec({"id": "x", "probs": OK}, {"id": "y", "probs": OK, field: value}, embedding_dim=2)
        assert rejects(b) == [(1, reason, message)]
        assert b.ids == ["x"]

    def test_the_float32_limits_themselves_are_accepted(self) -> None:
        """An embedding of norm exactly the float32 maximum, the largest loss and the extreme costs pass, and
        the embedding is remembered as a finite float32 row."""
        b = dec(
            {"id": "a", "probs": OK, "embedding": [FLOAT32_MAX, 0.0], "predicted_loss": FLOAT32_MAX},
            {"id": "b", "probs": OK, "cost": FLOAT32_TINY},
            {"id": "c", "probs": OK, "cost": FLOAT32_MAX},
            embedding_dim=2,
        )
        assert rejects(b) == []
        assert b.vectors is not None and np.isfinite(b.vectors[:1].astype(np.float32)).all()

    @settings(max_examples=150, deadline=None)
    @given(
        field=st.sampled_from(["embedding", "predicted_loss", "cost"]),
        number=st.one_of(
            st.floats(allow_nan=False, allow_infinity=False),
            st.sampled_from([FLOAT32_MAX, -FLOAT32_MAX, FLOAT32_TINY, 1e39, 2e38, 5e-324]),
        ),
        n=st.integers(1, 3),
    )
    def test_decoder_and_contract_agree(self, field: str, number: float, n: int) -> None:
        """A value of these fields passes the fast decoder exactly when the published contract accepts it."""
        value = [number] * n if field == "embedding" else number
        record = {"id": "x", "probs": OK, field: value}
        decoded = not dec(record).rejects
        try:
            Prediction.model_validate(record)
            validated = True
        except ValidationError:
            validated = False
        assert decoded == validated, (record, dec(record).rejects)


class TestZeroRowsUnderAWideTolerance:
    def test_a_row_summing_to_zero_is_never_normalized(self) -> None:
        """With 'input.prob_tolerance' 1 or more a row of zeros is within the tolerance of 1, but dividing by
        its sum would give NaN scores: it is rejected (not_normalized, bad_<field> naming the row)."""
        b = dec(
            {"id": "p", "probs": [0.0, 0.0, 0.0]},
            {"id": "s", "probs": OK, "samples": [OK, [0.0, 0.0, 0.0]]},
            {"id": "k", "probs": [0.2, 0.2, 0.1]},
            prob_tolerance=1.0,
        )
        assert rejects(b) == [
            (0, "not_normalized", "probabilities must sum to 1 within 'input.prob_tolerance' 1.0: sum is 0"),
            (1, "bad_samples", "'samples' row 1 must sum to 1 within 'input.prob_tolerance' 1.0: sum is 0"),
        ]
        np.testing.assert_allclose(b.probs, [[0.4, 0.4, 0.2]])

    def test_logits_of_any_finite_magnitude_give_a_probability_vector(self) -> None:
        """Logits at the ends of float64 (their differences overflow) still softmax to a one-hot row."""
        b = dec({"id": "l", "logits": [0.0, 1e308, -1.7e308]})
        assert rejects(b) == []
        np.testing.assert_array_equal(b.probs, [[0.0, 1.0, 0.0]])


ROWS = st.lists(st.floats(0.01, 1.0), min_size=C, max_size=C).map(lambda w: [x / sum(w) for x in w])
RECORD = st.fixed_dictionaries(
    {"probs": ROWS},
    optional={
        "samples": st.lists(ROWS, min_size=0, max_size=3),
        "committee": st.lists(ROWS, min_size=1, max_size=3),
        "detections": st.lists(st.one_of(ROWS, ROWS.map(lambda r: {"probs": r})), max_size=3),
        "predicted_loss": st.one_of(st.floats(0, 10), st.just(-1.0)),
        "embedding": st.lists(st.floats(-5, 5), min_size=1, max_size=3),
    },
)


@settings(max_examples=60, deadline=None)
@given(records=st.lists(RECORD, min_size=1, max_size=8))
def test_a_batch_decodes_as_its_records_alone(records: list[dict[str, Any]]) -> None:
    """Decoding records together equals decoding each alone: rejects, columns and arrays."""
    values = [orjson.dumps({"id": f"r{i}", **r}) for i, r in enumerate(records)]
    batch = decode_batch(values, [0] * len(values), n_classes=C, embedding_dim=2)
    kept = 0
    for i, v in enumerate(values):
        alone = decode_batch([v], [0], n_classes=C, embedding_dim=2)
        assert [(r.reason, r.message) for r in alone.rejects] == [
            (r.reason, r.message) for r in batch.rejects if r.position == i
        ]
        if not alone.rejects:
            for col in ("samples", "committee", "detections"):
                a, b = getattr(alone, col)[0], getattr(batch, col)[kept]
                assert (a is None and b is None) or np.array_equal(a, b)
            np.testing.assert_array_equal(alone.predicted_loss, batch.predicted_loss[kept : kept + 1])
            np.testing.assert_array_equal(alone.vectors, batch.vectors[kept : kept + 1])  # type: ignore[index]
            kept += 1
    assert kept == len(batch)
