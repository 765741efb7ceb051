"""Reading to-label records on the labeling side: the one function every consumer of the topic parses
them with.

The monitor writes the whole :class:`selector.messages.contracts.ToLabel` contract; each consumer needs a few
of its fields (the label loop what the dataset store keeps and the audits' confidences, the Label Studio
bridge the id and the record to build a task from, the demo's annotators the id) and must survive a record
that is not one of ours. :func:`read_to_label` never raises: it returns a :class:`NotToLabel` with a reason
code (``malformed_json``, ``missing_id``) and the consumer skips or dead-letters it, as it documents.

Example:
    >>> rec = read_to_label(b'{"id": "a", "route": "audit", "probs": [0.8, 0.2]}')
    >>> rec.id, rec.audit_confidence(), rec.decision() is None
    ('a', 0.8, True)
    >>> read_to_label(b'[1]').reason
    'missing_id'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypeGuard

import orjson

from selector.messages.timestamps import parse_ts


@dataclass(frozen=True, slots=True)
class NotToLabel:
    """A record of the to-label topic that is not a to-label record: a reason code and a message."""

    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Decision:
    """The fields of a to-label record the dataset store keeps."""

    id: str
    route: str
    predicted: str
    probs: list[float]
    embedding: list[float] | None
    query_probability: float
    model: str | None
    decided_at: str
    accept_eligible: bool | None
    """None on a record written before the field existed"""
    segment: str | None = None
    """the prediction's line or camera id (None: none given, or a record written before the field)"""
    payload: Any = None
    """what the annotator looks at (opaque, as the prediction carried it), kept to ask for another vote"""
    meta: Any = None
    """the prediction's ``meta``, passed through likewise"""


@dataclass(frozen=True, slots=True)
class ToLabelRecord:
    """A JSON object with a non-empty string ``id``; ``value`` is the whole record, as read."""

    id: str
    value: dict[str, Any]

    def audit_confidence(self) -> float | None:
        """The largest probability of an audited decision, else None (not an audit, or no usable probs)."""
        probs = self.value.get("probs")
        if self.value.get("route") != "audit" or not _numbers(probs) or not probs:
            return None
        return float(max(probs))

    def decision(self) -> Decision | None:
        """What the dataset store keeps of it, or None when a field it needs is missing or of a wrong type
        (``route``, ``predicted``, ``decided_at`` strings, the last RFC 3339; ``probs`` numbers;
        ``query_probability`` a number in (0, 1]; ``embedding`` numbers, ``model`` a string,
        ``accept_eligible`` a boolean, each or null)."""
        v = self.value
        route, predicted, at = v.get("route"), v.get("predicted"), v.get("decided_at")
        probs, embedding, pi = v.get("probs"), v.get("embedding"), v.get("query_probability")
        model, eligible, segment = v.get("model"), v.get("accept_eligible"), v.get("segment")
        if not (isinstance(route, str) and isinstance(predicted, str) and isinstance(at, str)):
            return None
        if not _numbers(probs) or (embedding is not None and not _numbers(embedding)):
            return None
        if isinstance(pi, bool) or not isinstance(pi, int | float) or not 0 < pi <= 1:
            return None
        if (model is not None and not isinstance(model, str)) or (
            eligible is not None and not isinstance(eligible, bool)
        ):
            return None
        if segment is not None and not isinstance(segment, str):
            segment = None  # an odd segment does not cost the label: the item counts in no segment
        try:
            parse_ts(at)  # the store measures label latencies from it
        except ValueError:
            return None
        return Decision(
            self.id, route, predicted, probs, embedding, float(pi), model, at, eligible, segment,
            v.get("payload"), v.get("meta"),
        )  # fmt: skip


def to_label_of(obj: Any) -> ToLabelRecord | NotToLabel:
    """:func:`read_to_label` of an already parsed JSON value."""
    rid = obj.get("id") if isinstance(obj, dict) else None
    if not isinstance(rid, str) or not rid:
        return NotToLabel("missing_id", "a to-label record needs a non-empty string 'id'")
    return ToLabelRecord(rid, obj)


def read_to_label(raw: bytes | None) -> ToLabelRecord | NotToLabel:
    """A to-label record as the labeling side reads it, or why the record is not one."""
    try:
        obj = orjson.loads(raw or b"")
    except orjson.JSONDecodeError as exc:
        return NotToLabel("malformed_json", f"not valid JSON: {exc}")
    return to_label_of(obj)


def _numbers(value: Any) -> TypeGuard[list[float]]:
    """A list of finite JSON numbers (booleans are not numbers)."""
    return isinstance(value, list) and all(
        not isinstance(x, bool) and isinstance(x, int | float) and math.isfinite(x) for x in value
    )
