"""What a whole batch of parsed prediction records proves at once, for :mod:`selector.messages.prediction`.

The checks of one record (:func:`selector.messages.prediction.check_record`) are a chain of Python tests; run
per record they cost more than parsing the JSON. Here the same rules are tested column by column over the
batch: a set of the types of every value of a column, the set of lengths of its lists, one numpy array per
embedding column. A record these tests vouch for would pass every per-record check; the others are
*suspects*, and the decoder runs the per-record checks on them, so a record's verdict and reason are those of
the per-record chain whatever its batch holds. The numeric values of ``probs``, ``samples`` and ``committee``
are checked over the batch anyway (:mod:`selector.messages.fields`), for every record alike.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np

from selector.arrays import FloatArray
from selector.messages import fields

_STR_OR_NONE = {str, type(None)}
_VOUCHED_NESTED = ("samples", "committee")
"""Nested columns checked here in bulk; ``detections`` (boxes may be objects) stays per record."""
_PER_RECORD_ONLY = ("predicted_loss", "cost", "detections")
"""Optional columns a record is a suspect for (rare, cheap per record)."""
_MANY_CANDIDATES = 16
"""Above one item in this many equal to 0 or 1, one set of all the types is cheaper than a look at each."""
_NORM_MARGIN = 0.999
"""An embedding whose largest value times sqrt(dim) stays below this share of the float32 maximum has a norm
within range with room to spare for rounding; one nearer is checked exactly (``math.hypot``) per record."""


@dataclass
class Vouched:
    """The optional columns of the records vouched for, by index into the parsed records."""

    embedding: dict[int, list[float]] = field(default_factory=dict)
    vectors: tuple[list[int], FloatArray] | None = None
    """the vouched embeddings as one (rows, dim) array, with the record index of each row"""
    nested: dict[str, dict[int, list[list[float]]]] = field(default_factory=dict)
    stacked: dict[str, FloatArray] = field(default_factory=dict)
    """a nested column as one (records, T, C) array, in the order of ``nested[key]``, when every record
    carries T rows"""


def suspects(
    objs: Sequence[dict[str, Any]],
    ids: list[Any],
    probs: list[Any],
    logits: list[Any],
    model: list[Any],
    segment: list[Any],
    n_classes: int,
    needed: Sequence[str],
) -> set[int]:
    """Indexes of the records the batch-wide tests cannot vouch for, from ``id`` to ``model``/``segment``
    (the per-record chain up to the optional columns)."""
    out: set[int] = set()
    if set(map(type, ids)) != {str} or "" in ids:
        out.update(k for k, rid in enumerate(ids) if type(rid) is not str or not rid)
    if (
        logits.count(None) != len(logits)
        or set(map(type, probs)) != {list}
        or set(map(len, probs)) != {n_classes}
    ):
        out.update(
            k
            for k, (p, lg) in enumerate(zip(probs, logits, strict=True))
            if (p is None) == (lg is None)
            or type(row := p if lg is None else lg) is not list
            or len(row) != n_classes
        )
    for name in needed:
        out.update(k for k, o in enumerate(objs) if o.get(name) is None)
    for col in (model, segment):
        if not set(map(type, col)) <= _STR_OR_NONE:
            out.update(k for k, v in enumerate(col) if v is not None and type(v) is not str)
    return out


def optional_columns(
    objs: Sequence[dict[str, Any]], rows: list[int], n_classes: int, embedding_dim: int | None
) -> tuple[Vouched, set[int]]:
    """The ``embedding``, ``samples`` and ``committee`` of records ``rows`` (those carrying any optional
    key), vouched for in bulk, and the records that are suspects (any other optional column, or a column of
    the batch that fails a bulk test: all its records are suspects)."""
    found = Vouched()
    out = {k for k in rows for key in _PER_RECORD_ONLY if objs[k].get(key) is not None}
    emb = [(k, v) for k in rows if (v := objs[k].get("embedding")) is not None]
    if emb:
        vouched = _embeddings([v for _, v in emb], embedding_dim)
        if vouched is None:
            out.update(k for k, _ in emb)
        else:
            ok, matrix = vouched
            out.update(k for (k, _), good in zip(emb, ok.tolist(), strict=True) if not good)
            found.embedding = dict(emb)
            found.vectors = ([k for k, _ in emb], matrix)
    for key in _VOUCHED_NESTED:
        values = [(k, v) for k in rows if (v := objs[k].get(key)) is not None]
        stacked = _stacked([v for _, v in values], n_classes) if values else None
        if stacked is not None or (values and _nested_shapes([v for _, v in values], n_classes)):
            found.nested[key] = dict(values)
            if stacked is not None:
                found.stacked[key] = stacked
        else:
            out.update(k for k, _ in values)
    return found, out


def _embeddings(values: list[Any], dim: int | None) -> tuple[np.ndarray[Any, Any], FloatArray] | None:
    """(which rows pass, the rows as an array) when every value is a list of numbers of one length (``dim``
    if configured), else None."""
    if set(map(type, values)) != {list}:
        return None
    lengths = set(map(len, values))
    if len(lengths) != 1 or 0 in lengths or (dim is not None and lengths != {dim}):
        return None
    matrix = numbers(values, (len(values), len(values[0])))
    if matrix is None:
        return None
    with np.errstate(invalid="ignore", over="ignore"):  # an infinite bound fails the test, as it should
        biggest = np.abs(matrix).max(axis=1)
        ok = np.isfinite(biggest) & (biggest * math.sqrt(matrix.shape[1]) < fields.FLOAT32_MAX * _NORM_MARGIN)
    return ok, matrix


def _stacked(values: list[Any], n_classes: int) -> FloatArray | None:
    """Nested values, each a list of T lists of ``n_classes`` numbers (one T for all), as a (n, T, C) array;
    else None (:func:`_nested_shapes` decides)."""
    if set(map(type, values)) != {list} or len(set(map(len, values))) != 1 or not values[0]:
        return None
    rows = list(chain.from_iterable(values))
    if set(map(type, rows)) != {list} or set(map(len, rows)) != {n_classes}:
        return None
    return numbers(values, (len(values), len(values[0]), n_classes))


def numbers(values: list[Any], shape: tuple[int, ...]) -> FloatArray | None:
    """Nested lists of ``shape`` (every list at each level of the length there, checked by the caller) as a
    float array when every item is a JSON number, else None.

    ``struct`` packs the items straight into the array (half the time of ``numpy.array``, which first walks
    them all to find a common type): it takes ints and floats and refuses a string, null, object or list. Only
    booleans pass, as 1.0 and 0.0, so the items equal to 0 or 1 have their type looked at; when there are many
    (a ReLU embedding's zeros), every item's type is, as one set."""
    items: Any = values
    for _ in range(len(shape) - 1):
        items = chain.from_iterable(items)
    matrix = np.empty(shape, dtype=np.float64)
    try:
        struct.pack_into(f"{matrix.size}d", matrix.data, 0, *items)
    except (struct.error, TypeError, OverflowError):
        return None
    candidates = (matrix == 0) | (matrix == 1)
    if np.count_nonzero(candidates) > matrix.size // _MANY_CANDIDATES:
        items = values
        for _ in range(matrix.ndim - 1):
            items = chain.from_iterable(items)
        if not set(map(type, items)) <= fields.NUMBER_TYPES:
            return None
    else:
        for where in np.argwhere(candidates).tolist():
            item: Any = values
            for i in where:
                item = item[i]
            if type(item) is bool:
                return None
    return matrix


def _nested_shapes(values: list[Any], n_classes: int) -> bool:
    """Every value is a non-empty list of lists of ``n_classes`` numbers."""
    if set(map(type, values)) != {list} or not all(values):
        return False
    rows = list(chain.from_iterable(values))
    return (
        set(map(type, rows)) == {list}
        and set(map(len, rows)) == {n_classes}
        and set(map(type, chain.from_iterable(rows))) <= fields.NUMBER_TYPES
    )
