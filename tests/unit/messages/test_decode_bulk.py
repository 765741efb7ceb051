"""The bulk checks of :mod:`selector.messages.screen` change no verdict: differential against the per-record
chain, which every record takes when the bulk tests vouch for none."""

from __future__ import annotations

import json
from typing import Any
from unittest.mock import patch

import numpy as np
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selector.messages import screen
from selector.messages.prediction import Batch, decode_batch

from .test_decode import C, invalid_records, prob_rows, valid_records

DIM = 4
_ODD = st.sampled_from(
    [None, True, "0.5", [], [0.5], {"probs": [1, 0, 0]}, -1.0, 1e300, 10**400, float("nan")]
)


@st.composite
def rich_records(draw: st.DrawFn) -> bytes | None:
    """Records with optional columns, mostly valid, sometimes with one value broken."""
    if draw(st.integers(0, 5)) == 0:
        return draw(invalid_records())
    rec = draw(valid_records())
    if draw(st.booleans()):
        rec["embedding"] = draw(st.lists(st.floats(-1e3, 1e3), min_size=DIM, max_size=DIM))
    for key in ("samples", "committee"):
        if draw(st.booleans()):
            rec[key] = draw(st.lists(prob_rows(), min_size=2, max_size=2))
    if draw(st.integers(0, 3)) == 0:
        rec[draw(st.sampled_from(["cost", "predicted_loss", "detections"]))] = draw(st.floats(0.5, 2) | _ODD)
    if draw(st.integers(0, 3)) == 0:
        key = draw(st.sampled_from(["embedding", "samples", "committee", "id", "model", "probs"]))
        rec[key] = draw(_ODD | st.lists(_ODD, min_size=1, max_size=DIM))
    try:  # orjson where it can (the one-pass parse), else as Python writes NaN
        return orjson.dumps(rec)
    except orjson.JSONEncodeError:
        return json.dumps(rec).encode()


def _same(a: Batch, b: Batch) -> None:
    assert [(r.position, r.reason, r.message) for r in a.rejects] == [
        (r.position, r.reason, r.message) for r in b.rejects
    ]
    assert a.ids == b.ids and a.model == b.model and a.segment == b.segment
    assert a.payload == b.payload and a.meta == b.meta and a.embedding == b.embedding
    for name in ("position", "probs", "ts_s", "hashes", "predicted_loss", "cost", "vectors"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    for name in ("samples", "committee", "detections"):
        for x, y in zip(getattr(a, name), getattr(b, name), strict=True):
            assert (x is None) == (y is None)
            if x is not None:
                np.testing.assert_array_equal(x, y)


class TestBulkAgreesWithPerRecordChain:
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(rich_records(), max_size=12), st.sampled_from([None, DIM]))
    def test_same_rows_and_same_rejects(self, values: list[bytes | None], dim: int | None) -> None:
        """Every record is accepted with the same values, or rejected with the same reason and message, as
        when no record is vouched for in bulk (every one takes the per-record chain)."""
        kw: dict[str, Any] = {"n_classes": C, "embedding_dim": dim, "required": {"model": "a test"}}
        ts = list(range(len(values)))
        bulk = decode_batch(values, ts, **kw)
        with patch.object(screen, "suspects", lambda objs, *_a, **_k: set(range(len(objs)))):
            chain = decode_batch(values, ts, **kw)
        _same(bulk, chain)

    def test_an_embedding_near_the_float32_limit_is_checked_exactly(self) -> None:
        """A norm a hair under the float32 maximum passes, one over it is rejected, even when the bulk test
        (largest value times sqrt(dim)) cannot tell."""
        big = float(np.finfo(np.float32).max) / 2.0
        rows = [[big, big, 0.0, 0.0], [big * 1.5, big * 1.5, 0.0, 0.0]]
        values = [
            orjson.dumps({"id": str(k), "probs": [1, 0, 0], "embedding": e}) for k, e in enumerate(rows)
        ]
        b = decode_batch(values, [0, 0], n_classes=C, embedding_dim=DIM)
        assert b.ids == ["0"]
        assert [r.reason for r in b.rejects] == ["embedding_out_of_range"]
