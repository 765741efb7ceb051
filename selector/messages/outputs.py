"""Output records of one decided batch, as (key, value) bytes ready to produce.

Every output is keyed by the item ``id`` so consumers can deduplicate the duplicates at-least-once delivery
may create. Only accepted and labeled items produce records; skips are counted, not published.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import numpy as np
import orjson

from selector.draws import id_hashes, uniforms
from selector.messages.prediction import Batch
from selector.messages.timestamps import rfc3339
from selector.routing import ACCEPT, AUDIT, QUERY, Decisions

Record = tuple[bytes, bytes]


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


@dataclass(frozen=True)
class Outputs:
    """Records to produce for one batch, with the batch row each came from."""

    to_label: list[Record]
    accepted: list[Record]
    to_label_rows: list[int] = field(default_factory=list)
    accepted_rows: list[int] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    """rows whose record could not be encoded, each with the reason (the others are unaffected)"""


PSEUDO_LABEL_STREAM = 9
"""Draw stream of the pseudo-label sample (see :mod:`selector.draws`)."""


def encode_outputs(
    batch: Batch,
    decisions: Decisions,
    classes: list[str],
    decided_at: str,
    selector_info: dict[str, str],
    pseudo_labels: tuple[float, int] = (0.0, 0),
) -> Outputs:
    """Build the to-label and accepted records of a decided batch. ``pseudo_labels`` is (share, seed): that
    share of accepted items, drawn by id, carry their embedding for the label loop to train on."""
    route = decisions.route
    failed: list[tuple[int, str]] = []
    labeled = np.flatnonzero((route == QUERY) | (route == AUDIT)).tolist()
    values = []
    for i in labeled:
        score = float(decisions.score[i])
        values.append(
            {
                "id": batch.ids[i],
                "route": "query" if route[i] == QUERY else "audit",
                "score": score,
                "scores": {k: float(v[i]) for k, v in decisions.scores.items()},
                "threshold": _finite(float(decisions.threshold[i])),
                "selected_by": decisions.selected_by[i],
                "query_probability": float(decisions.inclusion[i]),
                "priority": score,
                "predicted": classes[decisions.predicted[i]],
                "accept_eligible": bool(decisions.eligible[i]),
                "probs": batch.probs[i].tolist(),
                "embedding": batch.embedding[i] if batch.embedding else None,
                "segment": batch.segment[i],
                "payload": batch.payload[i],
                "meta": batch.meta[i],
                "model": batch.model[i],
                "ts": rfc3339(float(batch.ts_s[i])),
                "decided_at": decided_at,
                "selector": selector_info,
            }
        )
    to_label, to_label_rows = _encode_all(values, labeled, failed)
    acc = np.flatnonzero(route == ACCEPT)
    labels = [classes[k] for k in decisions.predicted[acc].tolist()]
    conf = decisions.confidence[acc].tolist()
    share, seed = pseudo_labels
    sampled = np.zeros(len(acc), dtype=bool)
    if share > 0 and batch.embedding:
        hashes = (
            batch.hashes[acc] if len(batch.hashes) == len(batch) else id_hashes([batch.ids[j] for j in acc])
        )
        sampled = uniforms(hashes, seed, PSEUDO_LABEL_STREAM) < share
    ids, model, payload, meta = batch.ids, batch.model, batch.payload, batch.meta
    values = [
        {
            "id": ids[j],
            "label": label,
            "confidence": c,
            "model": model[j],
            "payload": payload[j],
            "meta": meta[j],
            "decided_at": decided_at,
        }
        for j, label, c in zip(acc.tolist(), labels, conf, strict=True)
    ]
    if sampled.any():
        for value, j, keep in zip(values, acc.tolist(), sampled.tolist(), strict=True):
            if keep and batch.embedding[j] is not None:
                value["embedding"] = batch.embedding[j]
    accepted, accepted_rows = _encode_all(values, acc.tolist(), failed)
    return Outputs(to_label, accepted, to_label_rows, accepted_rows, failed)


def _encode_all(
    values: list[dict[str, Any]], rows: list[int], failed: list[tuple[int, str]]
) -> tuple[list[Record], list[int]]:
    """The records of ``values`` (from batch ``rows``) keyed by id, in one pass; if any cannot be encoded,
    record by record so only those fail."""
    try:
        encoded = list(map(orjson.dumps, values))
    except orjson.JSONEncodeError:
        done = [(v, row) for v, row in zip(values, rows, strict=True) if _encode(v, row, failed) is not None]
        values, rows = [v for v, _ in done], [row for _, row in done]
        encoded = list(map(orjson.dumps, values))
    return list(zip(map(str.encode, map(itemgetter("id"), values)), encoded, strict=True)), rows


def _encode(value: dict[str, Any], row: int, failed: list[tuple[int, str]]) -> bytes | None:
    """``value`` as JSON, or None with ``(row, reason)`` added to ``failed``."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        failed.append((row, f"the output record cannot be encoded as JSON: {exc}"))
        return None
