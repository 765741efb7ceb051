"""The fast decoder and the published Prediction contract accept and reject the same records.

Records are drawn field by field from pools of valid and invalid values (wrong types, NaN-like strings,
booleans, nested lists, huge numbers, timestamps that are ISO 8601 but not RFC 3339); each is judged by
:func:`selector.messages.prediction.decode_batch` and by ``Prediction.model_validate_json`` with the same
configuration as its validation context.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from selector.messages.contracts import Prediction
from selector.messages.prediction import decode_batch

N = 3
TOL = 1e-3
DIM = 2
ABSENT = object()
"""The field is left out of the record."""

COMMON_BAD: list[Any] = [None, True, "0.5", "NaN", [], [[]], {}, 1e400, -1, 10**400]
ROW_OK = [[0.2, 0.3, 0.5], [1, 0, 0], [0.3334, 0.3333, 0.3333]]
ROW_BAD = [
    [0.5, 0.5],
    [0.5, 0.5, 0.5],
    [0.2, 0.3, "0.5"],
    [0.2, 0.3, True],
    [1.5, -0.5, 0],
    [0.2, 0.3, float("nan")],
    [0, 0, 0],
    [0.2, 0.3, [0.5]],
    [0.2, 0.3, 0.5004],
    [1e400, 0, 0],
    [0.2, 0.3, None],
]
TS = [
    "2023-11-14T22:13:20Z",
    "2023-11-14T22:13:20.123456789+01:00",
    "2023-11-14t22:13:20z",
    "2023-11-14 22:13:20-05:30",
    0,
    1_700_000_000_000,
    1.5,
    10**20,
    "2023-11-14T22:13:20",
    "20231114T221320Z",
    "2023-11-14T22:13Z",
    "2023-11-14T22:13:20+0100",
    "2023-W46-2T22:13:20Z",
    "2023-11-14T23:59:60Z",
    "2023-02-30T00:00:00Z",
    "2023-11-14T22:13:20,5Z",
    "1700000000000",
    -1,
    True,
    1e400,
    10**400,
    [],
    "",
]

GOOD: dict[str, list[Any]] = {
    "id": ["a", "é-1"],
    "probs": ROW_OK,
    "logits": [[1, 2, 3], [-1e300, 0, 1e300], [0, 0, 0]],
    "ts": [*TS[:8], ABSENT],
    "model": ["v1", "", None, ABSENT],
    "segment": ["line-1", None, ABSENT],
    "samples": [ROW_OK, [ROW_OK[0]], ABSENT],
    "committee": [ROW_OK, ABSENT],
    "detections": [[], ROW_OK, [{"probs": ROW_OK[0], "box": [1, 2, 3, 4]}], ABSENT],
    "embedding": [[0.5, -1], [3e38, 1], ABSENT],
    "predicted_loss": [0, 0.5, -0.0, 3e38, ABSENT],
    "cost": [1, 0.5, 1e-37, 3e38, ABSENT],
    "payload": [{"uri": "s3://x"}, [1, [2, [3]]], float("nan"), 10**400, None, ABSENT],
    "meta": [{"line": 1}, "x", ABSENT],
}
"""Values the decoder documents as valid (with the configuration below; ``embedding`` also for dim 2)."""

BAD: dict[str, list[Any]] = {
    "id": ["", 7, None, True, ["a"], ABSENT],
    "probs": [*ROW_BAD, *COMMON_BAD],
    "logits": [[0.5, 0.5], [1, 2, "3"], [1, 2, float("inf")], [1, 2, True], *COMMON_BAD],
    "ts": TS[8:],
    "model": [3, True, ["v1"], {}],
    "segment": [3, False, {}],
    "samples": [[ROW_OK[0], ROW_BAD[0]], [ROW_BAD[4]], [ROW_BAD[6]], [1, 0, 0], *COMMON_BAD],
    "committee": [[ROW_BAD[8]], [[ROW_OK[0]]], [ROW_BAD[1]], *COMMON_BAD],
    "detections": [
        [{"box": [1, 2]}],
        [{"probs": [0.2, 0.3, "0.5"]}],
        [{"probs": [0.2, 0.3, float("nan")]}],
        [{"probs": [10**400, 0, 0]}],
        [{"probs": ROW_BAD[0]}],
        [{"probs": ROW_BAD[8]}],
        [ROW_BAD[3]],
        [[ROW_OK[0]]],
        "boxes",
        *COMMON_BAD,
    ],
    "embedding": [[1, 2, 3], [3e38, 3e38], [1e39, 0], [0.5, "1"], [0.5, True], [0.5, [1]], *COMMON_BAD],
    "predicted_loss": [1e39, -1e-9, float("inf"), *COMMON_BAD],
    "cost": [1e-39, 1e39, 0, -2, *COMMON_BAD],
    "payload": ["\ud800"],
    "meta": [],
}
"""Values that break a documented rule (``embedding`` [1, 2, 3] only under dim 2)."""


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    """A record whose fields are valid but for zero, one or two drawn from the invalid pools; ``probs`` and
    ``logits`` are both present, or neither, once in a while."""
    broken = draw(st.sets(st.sampled_from([k for k, pool in BAD.items() if pool]), max_size=2))
    record = {k: draw(st.sampled_from(BAD[k] if k in broken else GOOD[k])) for k in GOOD}
    scores = draw(st.sampled_from(["probs", "logits", "probs", "logits", "both", "neither"]))
    if scores in ("probs", "logits") and not broken & {"probs", "logits"}:
        record.pop("logits" if scores == "probs" else "probs")
    elif scores == "neither":
        record.pop("probs"), record.pop("logits")
    return {k: v for k, v in record.items() if v is not ABSENT}


def decoder_accepts(raw: bytes, embedding_dim: int | None) -> bool:
    batch = decode_batch(
        [raw], np.zeros(1, dtype=np.int64), n_classes=N, prob_tolerance=TOL, embedding_dim=embedding_dim
    )
    return not batch.rejects


def contract_accepts(raw: bytes, embedding_dim: int | None) -> bool:
    context = {"n_classes": N, "prob_tolerance": TOL, "embedding_dim": embedding_dim}
    try:
        Prediction.model_validate_json(raw, context=context)
    except ValidationError:
        return False
    return True


class TestDecoderAndContract:
    @settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(record=records(), embedding_dim=st.sampled_from([None, DIM]))
    @example(record={"id": "a", "probs": ROW_OK[0]}, embedding_dim=None)
    def test_they_accept_and_reject_the_same_records(
        self, record: dict[str, Any], embedding_dim: int | None
    ) -> None:
        """Record by record, the decoder accepts exactly when the contract (with the same n_classes,
        prob_tolerance and embedding_dim as its context) accepts."""
        raw = json.dumps(record).encode()  # NaN and Infinity as Python producers write them
        assert decoder_accepts(raw, embedding_dim) == contract_accepts(raw, embedding_dim), record

    @pytest.mark.parametrize(
        "raw",
        [
            b'{"id": "a", "probs": [0.2, 0.3, 0.5]}',
            b'{"id": "a", "logits": [1, 2, 3], "ts": 5}',
            b"[]",
            b"{x",
        ],
    )
    def test_plain_records_agree(self, raw: bytes) -> None:
        """The examples a reader tries first agree too (outside hypothesis, for a readable failure)."""
        assert decoder_accepts(raw, None) == contract_accepts(raw, None)
