"""The optional prediction fields the informativeness measures read, for :mod:`selector.messages.prediction`.

A record that carries any of ``samples``, ``committee``, ``detections``, ``predicted_loss``, ``cost`` or
``embedding`` has them checked for type and shape by :func:`read_columns`, one record at a time; the values of
the nested probability rows are then checked and renormalized over the whole batch by :func:`stack_nested`,
like ``probs``. The remaining helpers turn the sparse per-row values into batch columns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np

from selector.arrays import BoolArray, FloatArray, IntArray

NESTED = ("samples", "committee", "detections")
"""Optional fields holding rows of class probabilities (reason codes ``bad_<field>``)."""

NUMBER_TYPES = {int, float}
"""JSON numbers as Python parses them (``bool`` is not one)."""

FLOAT32_MAX = float(np.finfo(np.float32).max)
"""The largest embedding norm, predicted loss or cost accepted: the scoring memory keeps embeddings at float32
precision, so a larger value would be remembered as infinity and turn every later density and novelty
score into NaN."""

FLOAT32_TINY = float(np.finfo(np.float32).tiny)
"""The smallest cost accepted: informativeness per unit cost (at most ``1 / cost``) stays finite."""


@dataclass(frozen=True, slots=True)
class Columns:
    """The optional columns of one record that carries any, checked for type and shape."""

    embedding: list[float] | None
    nested: dict[str, list[list[float]]]
    predicted_loss: float | None
    cost: float | None


def read_columns(obj: dict[str, Any], n_classes: int, embedding_dim: int | None) -> Columns | tuple[str, str]:
    """The optional columns of a record, or the (reason, message) of the first that is invalid.

    Checks, in order: ``cost``, ``predicted_loss``, ``embedding`` (``bad_field``; then beyond the float32
    range: ``cost_out_of_range``, ``predicted_loss_out_of_range``, ``embedding_out_of_range`` for a Euclidean
    norm above :data:`FLOAT32_MAX`, which bounds every value too), the embedding's length
    (``wrong_embedding_dim``), then the shape and number types of ``samples``, ``committee`` and
    ``detections`` (``bad_<field>``); their values are checked by :func:`stack_nested` (in [0, 1], so
    always within float32 range).
    """
    cost = obj.get("cost")
    if cost is not None and (
        isinstance(cost, bool) or not isinstance(cost, int | float) or not math.isfinite(cost) or cost <= 0
    ):
        return "bad_field", f"'cost' must be a finite number > 0: {cost!r}"
    loss = obj.get("predicted_loss")
    if loss is not None and (
        isinstance(loss, bool) or not isinstance(loss, int | float) or not math.isfinite(loss) or loss < 0
    ):
        return "bad_field", f"'predicted_loss' must be a finite number >= 0: {loss!r}"
    emb = obj.get("embedding")
    if emb is not None and (
        not isinstance(emb, list)
        or not emb
        or not set(map(type, emb)) <= NUMBER_TYPES
        or not all(map(math.isfinite, emb))
    ):
        return "bad_field", f"'embedding' must be a non-empty list of finite numbers: {str(emb)[:200]}"
    out_of_range = _out_of_range(cost, loss, emb)
    if out_of_range is not None:
        return out_of_range
    if embedding_dim is not None and emb is not None and len(emb) != embedding_dim:
        return (
            "wrong_embedding_dim",
            f"'embedding' must have 'input.embedding_dim' = {embedding_dim} numbers, got {len(emb)}",
        )
    nested: dict[str, list[list[float]]] = {}
    for key in NESTED:
        value = obj.get(key)
        if value is not None:
            rows_of = nested_rows(value, key, n_classes)
            if isinstance(rows_of, str):
                return f"bad_{key}", rows_of
            nested[key] = rows_of
    return Columns(
        emb,
        nested,
        None if loss is None else float(loss),
        None if cost is None else float(cost),
    )


def _out_of_range(cost: float | None, loss: float | None, emb: list[float] | None) -> tuple[str, str] | None:
    """The (reason, message) for a cost, predicted loss or embedding norm beyond float32 range, else None."""
    if cost is not None and not FLOAT32_TINY <= cost <= FLOAT32_MAX:
        return (
            "cost_out_of_range",
            f"'cost' must lie in [{FLOAT32_TINY:.9g}, {FLOAT32_MAX:.9g}] (float32 range): {cost!r}",
        )
    if loss is not None and loss > FLOAT32_MAX:
        return (
            "predicted_loss_out_of_range",
            f"'predicted_loss' must be at most {FLOAT32_MAX:.9g} (float32 range): {loss!r}",
        )
    if emb is not None:
        norm = math.hypot(*emb)  # hypot scales: no overflow for any finite float64 values
        if norm > FLOAT32_MAX:
            return (
                "embedding_out_of_range",
                f"'embedding' norm must be at most {FLOAT32_MAX:.9g} (float32 range): {norm:.6g}",
            )
    return None


def sparse(values: dict[int, FloatArray], keep: IntArray) -> list[FloatArray | None]:
    """A column of the kept rows from a row -> value mapping, None where a row has no value."""
    return [values.get(k) for k in keep.tolist()] if values else [None] * len(keep)


def filled(values: dict[int, float], keep: IntArray, default: float) -> FloatArray:
    """A float column of the kept rows from a row -> value mapping, ``default`` elsewhere."""
    out = np.full(len(keep), default)
    if values:
        out[:] = [values.get(k, default) for k in keep.tolist()]
    return out


def vectors(rows: list[list[float] | None], dim: int) -> FloatArray:
    """Stack embeddings into (n, dim), NaN rows where an item has none."""
    if all(r is not None for r in rows):
        return np.asarray(rows, dtype=np.float64).reshape(len(rows), dim)
    out = np.full((len(rows), dim), np.nan)
    for k, r in enumerate(rows):
        if r is not None:
            out[k] = r
    return out


def nested_rows(value: Any, key: str, n_classes: int) -> list[list[float]] | str:
    """The rows of a list of probability rows (``detections`` boxes may also be objects with ``probs``),
    checked for shape and number types, or the message saying why it is invalid. Values are checked by
    :func:`stack_nested`, over the whole batch at once."""
    if not isinstance(value, list) or (not value and key != "detections"):
        what = "a list of boxes" if key == "detections" else "a non-empty list of rows"
        return f"'{key}' must be {what}, each a list of {n_classes} probabilities: {str(value)[:200]}"
    rows = value
    if key == "detections":
        rows = [b.get("probs") if isinstance(b, dict) else b for b in value]
    for r, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != n_classes:
            if row is None and key == "detections":
                return (
                    f"'detections' row {r} is an object without 'probs' (the box's {n_classes} probabilities)"
                )
            got = len(row) if isinstance(row, list) else type(row).__name__
            return f"'{key}' row {r} must be a list of {n_classes} probabilities, got {got}"
    if not set(map(type, chain.from_iterable(rows))) <= NUMBER_TYPES:
        r = next(r for r, row in enumerate(rows) if not set(map(type, row)) <= NUMBER_TYPES)
        return f"'{key}' row {r} must hold numbers only: {str(rows[r])[:200]}"
    return rows


def stack_nested(
    raw: dict[int, list[list[float]]], key: str, n_classes: int, tol: float, stacked: FloatArray | None = None
) -> tuple[dict[int, FloatArray], dict[int, str]]:
    """Every item's rows as a (rows, C) array renormalized to sum 1, checked (finite, in [0, 1], summing to
    1 within ``tol``) over the whole batch at once; and the message for each item that fails. ``stacked``:
    the same rows already as one (items, T, C) array."""
    if not raw:
        return {}, {}
    items = list(raw)
    if stacked is not None:
        counts = np.full(len(items), stacked.shape[1], dtype=np.int64)
        flat: FloatArray = stacked.reshape(-1, n_classes)
    else:
        counts = np.fromiter((len(raw[r]) for r in items), dtype=np.int64, count=len(items))
        flat = np.asarray(list(chain.from_iterable(raw[r] for r in items)), dtype=np.float64)
        flat = flat.reshape(len(flat), n_classes)
    finite: BoolArray = np.logical_and.reduce(np.isfinite(flat), axis=1)
    in_range: BoolArray = np.logical_and.reduce((flat >= 0.0) & (flat <= 1.0), axis=1)
    with np.errstate(over="ignore"):  # finite values near float64's limit sum to inf: out of range anyway
        sums: FloatArray = flat.sum(axis=1)
    normal: BoolArray = (np.abs(sums - 1.0) <= tol) & (sums > 0.0)  # a tolerance >= 1 must not let 0 / 0 in
    errors: dict[int, str] = {}
    good_row = finite & in_range & normal
    if not good_row.all():
        owner = np.repeat(np.arange(len(items)), counts)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        for k in np.unique(owner[~good_row]).tolist():
            span = slice(int(starts[k]), int(starts[k] + counts[k]))
            errors[items[k]] = _nested_error(key, flat[span], finite[span], in_range[span], sums[span], tol)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalized = flat / sums[:, None]
    if (counts == counts[0]).all():  # the usual case, T samples for every item: one reshape, no split
        parts = list(normalized.reshape(len(items), int(counts[0]), n_classes))
    else:
        parts = np.split(normalized, np.cumsum(counts)[:-1])
    return {r: part for r, part in zip(items, parts, strict=True) if r not in errors}, errors


def _nested_error(
    key: str, rows: FloatArray, finite: BoolArray, in_range: BoolArray, sums: FloatArray, tol: float
) -> str:
    """The message for one item's first failing check: finiteness, then range, then normalization."""
    if not finite.all():
        return f"'{key}' row {int(np.argmin(finite))} must be finite (no NaN or infinity)"
    if not in_range.all():
        r = int(np.argmin(in_range))
        return f"'{key}' row {r} must lie in [0, 1]: {rows[r].tolist()!r}"
    r = int(np.argmax((np.abs(sums - 1.0) > tol) | (sums <= 0.0)))
    return f"'{key}' row {r} must sum to 1 within 'input.prob_tolerance' {tol}: sum is {sums[r]:.6g}"
