"""Decoding and validation of a polled batch of raw prediction records into columnar arrays.

Parsing JSON is necessarily one call per record; everything numeric (shape, finiteness, range, normalization,
softmax of logits) is checked over the whole batch at once. A record that breaks a rule is returned as a
:class:`Reject` with a reason code and a message; the valid records of the same batch are unaffected.

The optional columns (``samples``, ``committee``, ``detections``, ``predicted_loss``, ``cost``, ``embedding``)
are looked at only in the records that carry one of them: a record without any costs one set test. Their
type and shape are checked per record; the values of the nested rows of probabilities (finite, in [0, 1],
summing to 1) are checked and renormalized over the whole batch at once, like ``probs``.

Reason codes: ``empty``, ``oversize``, ``malformed_json``, ``not_an_object``, ``missing_id``, ``bad_id``,
``missing_probs``, ``wrong_class_count``, ``missing_field`` (a field the configuration requires),
``bad_field``, ``embedding_out_of_range``, ``predicted_loss_out_of_range``, ``cost_out_of_range`` (beyond
float32 range, which the scoring memory keeps), ``wrong_embedding_dim``, ``bad_samples``, ``bad_committee``,
``bad_detections``, ``bad_ts``, ``not_numeric``, ``non_finite``, ``prob_out_of_range``, ``not_normalized``.

Example:
    >>> b = decode_batch([b'{"id": "a", "probs": [0.9, 0.1]}', b'{"probs": [1, 0]}'], [0, 0], n_classes=2)
    >>> b.ids, [r.reason for r in b.rejects]
    (['a'], ['missing_id'])
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, cast
from zlib import crc32

import numpy as np

from selector.arrays import FloatArray, IntArray, UIntArray
from selector.messages import fields, screen
from selector.messages.parsing import collector_paused, may_nest_too_deep, parse_batch
from selector.messages.timestamps import parse_ts


@dataclass(frozen=True)
class Reject:
    """A record that failed decoding: its position in the polled batch, a reason code and a message."""

    position: int
    reason: str
    message: str


@dataclass(frozen=True)
class Batch:
    """Valid predictions of one polled batch, as columns. Row ``i`` came from raw record ``position[i]``."""

    position: IntArray
    ids: list[str]
    probs: FloatArray
    ts_s: FloatArray
    model: list[str | None]
    segment: list[str | None]
    payload: list[Any]
    meta: list[Any]
    embedding: list[list[float] | None] = field(default_factory=list)
    hashes: UIntArray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))
    """CRC-32 of each id's UTF-8 bytes (computed here, in the loop that already visits every record)"""
    rejects: list[Reject] = field(default_factory=list)
    samples: list[FloatArray | None] = field(default_factory=list)
    """per item, (T, C) MC-dropout probabilities or None"""
    committee: list[FloatArray | None] = field(default_factory=list)
    """per item, (K, C) committee member probabilities or None"""
    detections: list[FloatArray | None] = field(default_factory=list)
    """per item, (B, C) per-box class probabilities (B may be 0), or None without a 'detections' field"""
    predicted_loss: FloatArray = field(default_factory=lambda: np.zeros(0))
    """per item, NaN where absent"""
    cost: FloatArray = field(default_factory=lambda: np.zeros(0))
    """per item, 1.0 where absent"""
    vectors: FloatArray | None = None
    """(n, d) embeddings when an embedding length is configured (NaN rows where absent), else None"""

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, keep: Sequence[int] | IntArray) -> Batch:
        """The batch of rows ``keep`` only (in that order), without rejects; a column that is absent (empty or
        None) stays so."""
        rows = np.asarray(keep, dtype=np.int64)
        n = len(self)
        taken: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            col = getattr(self, f.name)
            if f.name == "rejects":
                taken[f.name] = []
            elif isinstance(col, np.ndarray) and len(col) == n:
                taken[f.name] = col[rows]
            elif isinstance(col, list) and len(col) == n:
                taken[f.name] = [col[k] for k in rows.tolist()]
            else:
                taken[f.name] = col
        return Batch(**taken)


_OPTIONAL_STR = ("model", "segment")
_OPTIONAL_COLUMNS = frozenset({*fields.NESTED, "predicted_loss", "cost", "embedding"})
"""A record with none of these keys (and nothing required) skips every check of optional columns."""


def decode_batch(
    values: Sequence[bytes | None],
    kafka_ts_ms: Sequence[int] | IntArray,
    *,
    n_classes: int,
    max_record_bytes: int = 1 << 20,
    prob_tolerance: float = 1e-3,
    embedding_dim: int | None = None,
    required: Mapping[str, str] | None = None,
) -> Batch:
    """Decode and validate raw JSON prediction records.

    Three passes: parse every record; check each rule over the whole batch at once
    (:mod:`selector.messages.screen`), running the per-record chain (:func:`check_record`) only on the records
    the bulk tests cannot vouch for; then check the numbers of every row over the batch (finite, in range,
    normalized) and softmax the logits.

    Args:
        values: raw record values, in poll order.
        kafka_ts_ms: the broker timestamp of each record, used when the record has no ``ts``.
        n_classes: the configured number of classes; ``probs``/``logits`` must have exactly this length.
        max_record_bytes: larger records are rejected unparsed (reason ``oversize``).
        prob_tolerance: ``|sum(probs) - 1|`` must not exceed this (also for samples, members and boxes).
        embedding_dim: when given, every ``embedding`` must have this length; ``Batch.vectors`` holds them.
        required: optional fields every record must carry (absent or null: ``missing_field``), each with who
            needs it, for the message; ``probs``/``logits`` keep their own rule (``missing_probs``).

    Returns:
        The valid rows as columns plus one :class:`Reject` per invalid record.
    """
    args = (values, kafka_ts_ms, n_classes, max_record_bytes, prob_tolerance, embedding_dim, required)
    with collector_paused():
        batch = _decode(*args, record_by_record=False)
        return batch if batch is not None else cast(Batch, _decode(*args, record_by_record=True))


def _decode(
    values: Sequence[bytes | None],
    kafka_ts_ms: Sequence[int] | IntArray,
    n_classes: int,
    max_record_bytes: int,
    prob_tolerance: float,
    embedding_dim: int | None,
    required: Mapping[str, str] | None,
    *,
    record_by_record: bool,
) -> Batch | None:
    """:func:`decode_batch`, with the collector paused; None when a record of the batch parsed in one pass may
    nest too deep (then parse it ``record_by_record``, where such a record is checked exactly)."""
    # 'probs'/'logits' keep their own rule (exactly one of them), reported as missing_probs
    needed = tuple((f, who) for f, who in (required or {}).items() if f not in ("probs", "logits"))
    at, objs, failures, long = parse_batch(values, max_record_bytes, record_by_record=record_by_record)
    rejects = [Reject(*failure) for failure in failures]
    ids, probs, logits, model, segment, ts_given = (
        _column(objs, key) for key in ("id", "probs", "logits", "model", "segment", "ts")
    )
    suspect = screen.suspects(objs, ids, probs, logits, model, segment, n_classes, [f for f, _ in needed])
    plain = list(map(_OPTIONAL_COLUMNS.isdisjoint, objs))
    with_optional = [k for k, none in enumerate(plain) if not none] if False in plain else []
    found, more = screen.optional_columns(objs, with_optional, n_classes, embedding_dim)
    if long and may_nest_too_deep(objs, long, {"embedding": found.embedding, **found.nested}):
        return None
    suspect |= more
    dropped: set[int] = set()
    checked: dict[int, fields.Columns] = {}
    for k in sorted(suspect):
        verdict = check_record(objs[k], n_classes, embedding_dim, needed)
        if isinstance(verdict, tuple):
            rejects.append(Reject(at[k], *verdict))
            dropped.add(k)
        elif verdict is not None:
            checked[k] = verdict
    ts = np.asarray(kafka_ts_ms, dtype=np.float64)[at] / 1000.0 if at else np.zeros(0)
    for k in [] if ts_given.count(None) == len(ts_given) else range(len(objs)):
        if ts_given[k] is not None and k not in dropped:
            try:
                ts[k] = parse_ts(ts_given[k])
            except ValueError as exc:
                rejects.append(Reject(at[k], "bad_ts", str(exc)))
                dropped.add(k)
    kept = [k for k in range(len(objs)) if k not in dropped] if dropped else list(range(len(objs)))
    cols = _optional_of_rows(kept, found, checked, suspect, embedding_dim)

    no_logits = logits.count(None) == len(logits)
    rows = (
        probs if no_logits and not dropped else [probs[k] if logits[k] is None else logits[k] for k in kept]
    )
    matrix, row_rejects = _to_matrix(rows, n_classes)
    arrays: dict[str, dict[int, FloatArray]] = {}
    for key in fields.NESTED:
        stacked = cols.stacked.get(key)
        arrays[key], errors = fields.stack_nested(cols.nested[key], key, n_classes, prob_tolerance, stacked)
        for r, message in errors.items():
            row_rejects.setdefault(r, (f"bad_{key}", message))
    logit_mask = np.zeros(len(kept), dtype=bool)
    if not no_logits:
        logit_mask[:] = [logits[k] is not None for k in kept]
    ok = np.ones(len(rows), dtype=bool)
    ok[list(row_rejects)] = False
    probs_arr = _normalize(matrix, logit_mask, ok, row_rejects, prob_tolerance)
    pos = np.asarray(at, dtype=np.int64)[kept] if at else np.zeros(0, dtype=np.int64)
    for r, (reason, message) in sorted(row_rejects.items()):
        rejects.append(Reject(int(pos[r]), reason, message))
    keep = np.flatnonzero(ok)
    rows_kept = np.asarray(kept, dtype=np.int64)[keep]
    ids_kept = _take(ids, rows_kept)
    rejects.sort(key=lambda rj: rj.position)
    return Batch(
        position=pos[keep],
        ids=ids_kept,
        probs=probs_arr[keep],
        ts_s=ts[rows_kept],
        model=_take(model, rows_kept),
        segment=_take(segment, rows_kept),
        payload=_take(_column(objs, "payload"), rows_kept),
        meta=_take(_column(objs, "meta"), rows_kept),
        embedding=_take(cols.embedding, keep),
        hashes=np.fromiter(map(crc32, map(str.encode, ids_kept)), dtype=np.uint64, count=len(ids_kept)),
        rejects=rejects,
        samples=fields.sparse(arrays["samples"], keep),
        committee=fields.sparse(arrays["committee"], keep),
        detections=fields.sparse(arrays["detections"], keep),
        predicted_loss=fields.filled(cols.loss, keep, math.nan),
        cost=fields.filled(cols.cost, keep, 1.0),
        vectors=None if cols.vectors is None else cols.vectors[keep],
    )


def check_record(
    obj: dict[str, Any], n_classes: int, embedding_dim: int | None, needed: Sequence[tuple[str, str]]
) -> tuple[str, str] | fields.Columns | None:
    """The per-record chain of rules, from ``id`` to the optional columns (not ``ts``): the (reason,
    message) of the first broken, else the record's optional columns (None when it carries none)."""
    rid = obj.get("id")
    if rid is None:
        return "missing_id", "required field 'id' is missing"
    if not isinstance(rid, str) or not rid:
        return "bad_id", f"'id' must be a non-empty string: {rid!r}"
    probs = obj.get("probs")
    logits = obj.get("logits")
    if (probs is None) == (logits is None):
        what = "both" if probs is not None else "neither"
        return "missing_probs", f"exactly one of 'probs' or 'logits' is required, got {what}"
    row = probs if probs is not None else logits
    name = "probs" if probs is not None else "logits"
    if not isinstance(row, list) or len(row) != n_classes:
        got = len(row) if isinstance(row, list) else type(row).__name__
        return (
            "wrong_class_count",
            f"'{name}' must be a list of {n_classes} numbers (one per class), got {got}",
        )
    missing = next(((f, who) for f, who in needed if obj.get(f) is None), None)
    if missing is not None:
        return "missing_field", f"'{missing[0]}' is required by {missing[1]}"
    bad = _check_optional(obj)
    if bad is not None:
        return "bad_field", bad
    if _OPTIONAL_COLUMNS.isdisjoint(obj):
        return None
    return fields.read_columns(obj, n_classes, embedding_dim)


@dataclass(frozen=True)
class _RowColumns:
    """The optional columns of the kept records, by row."""

    embedding: list[list[float] | None]
    nested: dict[str, dict[int, list[list[float]]]]
    loss: dict[int, float]
    cost: dict[int, float]
    vectors: FloatArray | None
    stacked: dict[str, FloatArray]
    """nested columns the bulk tests vouched for in every record that carries them, as (rows, T, C)"""


def _optional_of_rows(
    kept: list[int],
    found: screen.Vouched,
    checked: dict[int, fields.Columns],
    suspect: set[int],
    embedding_dim: int | None,
) -> _RowColumns:
    """The optional columns of the kept records, row by row: those the bulk tests vouched for, and those
    :func:`check_record` read from the suspects."""
    embedding: list[list[float] | None] = [None] * len(kept)
    nested: dict[str, dict[int, list[list[float]]]] = {key: {} for key in fields.NESTED}
    if not (found.embedding or found.nested or checked):
        vectors = None if embedding_dim is None else np.full((len(kept), embedding_dim), np.nan)
        return _RowColumns(embedding, nested, {}, {}, vectors, {})
    row_of = {k: r for r, k in enumerate(kept)}
    for k, emb in found.embedding.items():
        if k in row_of and k not in suspect:
            embedding[row_of[k]] = emb
    for key, values in found.nested.items():
        nested[key] = {row_of[k]: v for k, v in values.items() if k in row_of and k not in suspect}
    loss: dict[int, float] = {}
    cost: dict[int, float] = {}
    for k, c in checked.items():
        if k not in row_of:
            continue  # rejected for its 'ts'
        r = row_of[k]
        embedding[r] = c.embedding
        for key, v in c.nested.items():
            nested[key][r] = v
        if c.predicted_loss is not None:
            loss[r] = c.predicted_loss
        if c.cost is not None:
            cost[r] = c.cost
    vectors = None
    if embedding_dim is not None:
        if found.vectors is not None and not checked and found.vectors[0] == kept:
            vectors = found.vectors[1]  # every record carries a vouched embedding: the array is the column
        else:
            vectors = fields.vectors(embedding, embedding_dim)
    stacked = {
        key: found.stacked[key]
        for key in found.stacked
        if len(nested[key]) == len(found.nested[key]) and not any(key in c.nested for c in checked.values())
    }
    return _RowColumns(embedding, nested, loss, cost, vectors, stacked)


def _column(objs: list[dict[str, Any]], key: str) -> list[Any]:
    """``obj.get(key)`` of every parsed record (``map`` with ``dict.get`` runs no bytecode per record)."""
    return list(map(dict.get, objs, repeat(key)))


def _take(col: list[Any], keep: IntArray) -> list[Any]:
    return col if len(keep) == len(col) else [col[k] for k in keep]


def _check_optional(obj: dict[str, Any]) -> str | None:
    """The message for a non-string ``model`` or ``segment``, else None."""
    for key in _OPTIONAL_STR:
        v = obj.get(key)
        if v is not None and not isinstance(v, str):
            return f"'{key}' must be a string: {v!r}"
    return None


def _to_matrix(rows: list[Any], n_classes: int) -> tuple[FloatArray, dict[int, tuple[str, str]]]:
    """Stack rows into an (n, C) float matrix; rows with non-numbers are reported and zero-filled."""
    rejects: dict[int, tuple[str, str]] = {}
    if not rows:
        return np.zeros((0, n_classes), dtype=np.float64), rejects
    matrix = screen.numbers(rows, (len(rows), n_classes))  # every row is a list of n_classes (screened)
    if matrix is not None:
        return matrix, rejects
    out = np.zeros((len(rows), n_classes), dtype=np.float64)
    for r, row in enumerate(rows):
        if any(isinstance(x, bool) or not isinstance(x, int | float) for x in row):
            rejects[r] = ("not_numeric", f"every class score must be a number: {row!r}")
        else:
            out[r] = row
    return out, rejects


def _normalize(
    m: FloatArray,
    logit_mask: np.ndarray[Any, np.dtype[np.bool_]],
    ok: np.ndarray[Any, np.dtype[np.bool_]],
    rejects: dict[int, tuple[str, str]],
    tol: float,
) -> FloatArray:
    """Validate probabilities, softmax logits, and mark failures in ``ok``/``rejects`` (vectorized)."""
    finite = np.isfinite(m).all(axis=1)
    for r in np.flatnonzero(~finite & ok):
        rejects[int(r)] = (
            "non_finite",
            f"class scores must be finite (no NaN or infinity): {m[r].tolist()!r}",
        )
    ok &= finite
    out = np.where(ok[:, None], m, 0.0)
    if logit_mask.any():
        z = out[logit_mask]
        with np.errstate(over="ignore"):  # logits of float64 magnitude: a difference beyond it is -inf, exp 0
            z = np.exp(z - z.max(axis=1, keepdims=True))
        out[logit_mask] = z / z.sum(axis=1, keepdims=True)
    pm = ~logit_mask & ok
    p = out[pm]
    in_range = ((p >= 0.0) & (p <= 1.0)).all(axis=1)
    with np.errstate(over="ignore"):  # finite values near float64's limit sum to inf: out of range anyway
        sums = p.sum(axis=1)
    normal = (np.abs(sums - 1.0) <= tol) & (sums > 0.0)  # a tolerance of 1 or more must not let 0 / 0 in
    rows = np.flatnonzero(pm)
    for r in rows[~in_range]:
        rejects[int(r)] = ("prob_out_of_range", f"probabilities must lie in [0, 1]: {m[r].tolist()!r}")
    for r in rows[in_range & ~normal]:
        rejects[int(r)] = (
            "not_normalized",
            f"probabilities must sum to 1 within 'input.prob_tolerance' {tol}: sum is {m[r].sum():.6g}",
        )
    ok[rows[~(in_range & normal)]] = False
    good = rows[in_range & normal]
    out[good] = p[in_range & normal] / sums[in_range & normal, None]
    return out
