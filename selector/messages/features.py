"""Decoding a polled batch of feature records, the input of the inference connector (serve-model).

A feature record is ``{id, embedding, payload?, meta?, ts?}``: the item's id, the feature vector the model
head scores (``embedding_dim`` numbers), and opaque fields passed through to the prediction. Parsing is one
call per record; the numbers are checked for the whole batch at once. A record that breaks a rule becomes a
:class:`~selector.messages.prediction.Reject` (reasons ``empty``, ``oversize``, ``malformed_json``,
``not_an_object``,
``missing_id``, ``bad_id``, ``missing_field``, ``wrong_embedding_dim``, ``not_numeric``, ``non_finite``); the
valid records of the batch are unaffected.

Example:
    >>> b = decode_features([b'{"id": "a", "embedding": [1, 2]}', b'{"id": "b", "embedding": [1]}'], dim=2)
    >>> b.ids, b.x.tolist(), [r.reason for r in b.rejects]
    (['a'], [[1.0, 2.0]], ['wrong_embedding_dim'])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from selector.arrays import BoolArray, IntArray
from selector.messages.prediction import Reject

Float32Array = np.ndarray[Any, np.dtype[np.float32]]


@dataclass(frozen=True)
class FeatureBatch:
    """Valid feature records as columns; row ``i`` came from raw record ``position[i]``."""

    position: IntArray
    ids: list[str]
    x: Float32Array
    payload: list[Any]
    meta: list[Any]
    ts: list[Any]
    rejects: list[Reject]

    def __len__(self) -> int:
        return len(self.ids)


def decode_features(
    values: Sequence[bytes | None], dim: int, max_record_bytes: int = 1 << 20
) -> FeatureBatch:
    """Decode and check raw feature records whose embeddings must have ``dim`` numbers."""
    rejects: list[Reject] = []
    kept: list[tuple[int, dict[str, Any]]] = []
    for pos, raw in enumerate(values):
        problem = _parse(raw, dim, max_record_bytes)
        if isinstance(problem, Reject):
            rejects.append(Reject(pos, problem.reason, problem.message))
        else:
            kept.append((pos, problem))
    rows: list[Any] = [r["embedding"] for _, r in kept]
    arr = np.array(rows) if rows else np.zeros((0, dim))
    if arr.dtype.kind in "iuf" and arr.shape == (len(rows), dim):
        numeric = np.ones(len(rows), dtype=bool)
    else:  # a string or null among the numbers (numpy would even parse "2"): find which records
        numeric = np.array([_all_numbers(r) for r in rows], dtype=bool)
        arr = np.zeros((len(rows), dim))
        if numeric.any():
            arr[numeric] = np.array([r for r, ok in zip(rows, numeric, strict=True) if ok], dtype=np.float64)
    with np.errstate(over="ignore"):
        x = arr.astype(np.float32)
    finite: BoolArray = np.asarray(np.isfinite(x).all(axis=1), dtype=bool)
    good = numeric & finite
    for (pos, _), ok_n, ok_f in zip(kept, numeric.tolist(), finite.tolist(), strict=True):
        if not ok_n:
            rejects.append(Reject(pos, "not_numeric", "'embedding' must hold only numbers"))
        elif not ok_f:
            rejects.append(
                Reject(pos, "non_finite", "'embedding' holds NaN, infinity or a number beyond float32")
            )
    valid = [r for (_, r), ok in zip(kept, good.tolist(), strict=True) if ok]
    rejects.sort(key=lambda r: r.position)
    return FeatureBatch(
        np.array([p for (p, _), ok in zip(kept, good.tolist(), strict=True) if ok], dtype=np.int64),
        [r["id"] for r in valid],
        np.ascontiguousarray(x[good]),
        [r.get("payload") for r in valid],
        [r.get("meta") for r in valid],
        [r.get("ts") for r in valid],
        rejects,
    )


def _all_numbers(row: list[Any]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in row)


def _parse(raw: bytes | None, dim: int, max_record_bytes: int) -> dict[str, Any] | Reject:
    if not raw:
        return Reject(0, "empty", "the record has no value")
    if len(raw) > max_record_bytes:
        return Reject(0, "oversize", f"the record has {len(raw)} bytes, over {max_record_bytes}")
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Reject(0, "malformed_json", f"not JSON: {exc}")
    if not isinstance(record, dict):
        return Reject(0, "not_an_object", f"a feature record is a JSON object, got {type(record).__name__}")
    rid = record.get("id")
    if rid is None:
        return Reject(0, "missing_id", "'id' is required")
    if not isinstance(rid, str) or not rid:
        return Reject(0, "bad_id", f"'id' must be a non-empty string: {rid!r}")
    emb = record.get("embedding")
    if emb is None:
        return Reject(0, "missing_field", "'embedding' is required (the features the model scores)")
    if not isinstance(emb, list) or len(emb) != dim:
        got = len(emb) if isinstance(emb, list) else type(emb).__name__
        return Reject(0, "wrong_embedding_dim", f"'embedding' must be a list of {dim} numbers, got {got}")
    if any(isinstance(v, bool) for v in emb):
        return Reject(0, "not_numeric", "'embedding' must hold only numbers")
    return record
