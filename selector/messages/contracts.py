"""Message contracts of DESIGN.md as pydantic models; ``schemas/*.schema.json`` are generated from them.

The hot path does not validate through these models (that would cost a Python object per item); the decoder in
:mod:`selector.messages.prediction` enforces the same rules over whole batches. These models are the
documentation, the
schema source, and what tests use to check produced records.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from selector.messages.fields import FLOAT32_MAX, FLOAT32_TINY

DLQ_HEADERS = (
    "x-dlq-original-topic",
    "x-dlq-original-partition",
    "x-dlq-original-offset",
    "x-dlq-stage",
    "x-dlq-reason",
    "x-dlq-exception-message",
    "x-dlq-failed-at",
    "x-dlq-app-version",
)
"""String headers every dead-letter record carries, in this order."""

DLQ_TRUNCATION_HEADERS = (
    "x-dlq-original-size",
    "x-dlq-original-sha256",
    "x-dlq-original-key-size",
    "x-dlq-original-key-sha256",
)
"""Headers a dead letter adds when its original value (or a key over 1 KiB) was truncated to fit."""
DLQ_DROPPED_HEADERS = "x-dlq-dropped-headers"
"""The header a dead letter adds when the input's own headers did not fit: how many were cut."""


class Prediction(BaseModel):
    """A model's output for one item (input topic ``predictions``); exactly one of ``probs`` or ``logits``."""

    model_config = ConfigDict(extra="allow", title="prediction", allow_inf_nan=False, strict=True)

    id: str = Field(min_length=1, description="unique per item; outputs are keyed by it")
    probs: list[float] | None = Field(None, description="one probability per configured class, summing to 1")
    logits: list[float] | None = Field(
        None, description="one logit per configured class (softmax is applied)"
    )
    ts: str | float | None = Field(
        None,
        description="RFC 3339 string (with a UTC offset) or epoch milliseconds >= 0; else the Kafka "
        "timestamp",
    )
    model: str | None = Field(None, description="model version")
    samples: list[list[float]] | None = Field(None, description="T x C MC-dropout probabilities")
    committee: list[list[float]] | None = Field(None, description="K x C committee member probabilities")
    embedding: list[Annotated[float, Field(ge=-FLOAT32_MAX, le=FLOAT32_MAX)]] | None = Field(
        None,
        min_length=1,
        description="the model's penultimate-layer embedding, 'input.embedding_dim' numbers; its Euclidean "
        f"norm at most {FLOAT32_MAX:.9g} (float32 range)",
    )
    predicted_loss: float | None = Field(
        None, ge=0, le=FLOAT32_MAX, description="output of a loss-prediction module"
    )
    detections: list[list[float] | dict[str, Any]] | None = Field(
        None,
        description="per-box class probabilities: each box a list of C probabilities, or an object with "
        "'probs' (other keys such as 'box' are ignored)",
    )
    cost: float | None = Field(None, ge=FLOAT32_TINY, le=FLOAT32_MAX, description="relative labeling cost")
    segment: str | None = Field(None, description="line or camera id, for per-segment budgets")
    payload: Any = Field(None, description="opaque, passed through (image URI etc.)")
    meta: Any = Field(None, description="opaque, passed through")

    @field_validator("embedding")
    @classmethod
    def _norm_in_float32_range(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and math.hypot(*v) > FLOAT32_MAX:
            raise ValueError(f"norm must be at most {FLOAT32_MAX:.9g} (float32 range): {math.hypot(*v):.6g}")
        return v

    @model_validator(mode="after")
    def _fits_the_configuration(self, info: ValidationInfo) -> Self:
        """Numbers are JSON numbers (no ``"0.5"``, no ``true``: strict mode). What depends on the
        configuration is read from the validation context: ``n_classes`` (each row of ``probs``, ``logits``,
        ``samples``, ``committee``, ``detections``), ``prob_tolerance`` (default 1e-3, as the decoder's) and
        ``embedding_dim``, e.g. ``Prediction.model_validate_json(raw, context={"n_classes": 4})``; without
        one the lengths are not checked. Written apart from :func:`selector.messages.prediction.decode_batch`;
        a property test holds the two to the same answers."""
        context = info.context or {}
        n: int | None = context.get("n_classes")
        tol = float(context.get("prob_tolerance", 1e-3))
        dim: int | None = context.get("embedding_dim")
        if (self.probs is None) == (self.logits is None):
            raise ValueError("exactly one of 'probs' or 'logits' is required")
        if self.probs is not None:
            _check_probability_rows("probs", [self.probs], n, tol)
        if self.logits is not None and n is not None and len(self.logits) != n:
            raise ValueError(f"'logits' must hold {n} numbers (one per class), got {len(self.logits)}")
        for name in ("samples", "committee"):
            rows = getattr(self, name)
            if rows is not None:
                if not rows:
                    raise ValueError(f"'{name}' must hold at least one row")
                _check_probability_rows(name, rows, n, tol)
        if self.detections is not None:
            boxes = [b.get("probs") if isinstance(b, dict) else b for b in self.detections]
            if not all(isinstance(b, list) and all(map(_is_finite_number, b)) for b in boxes):
                raise ValueError("each of 'detections' must be a list of numbers or an object with 'probs'")
            _check_probability_rows("detections", boxes, n, tol)
        if dim is not None and self.embedding is not None and len(self.embedding) != dim:
            raise ValueError(f"'embedding' must hold {dim} numbers, got {len(self.embedding)}")
        if isinstance(self.ts, str) and not _is_rfc3339(self.ts):
            raise ValueError(f"'ts' must be RFC 3339 with a UTC offset: {self.ts!r}")
        if isinstance(self.ts, float) and not (math.isfinite(self.ts) and self.ts >= 0):
            raise ValueError(f"'ts' epoch milliseconds must be >= 0: {self.ts!r}")
        return self


_DATE_TIME = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.\d+)?(?:[Zz]|([+-])(\d\d):(\d\d))", re.ASCII
)


def _is_rfc3339(text: str) -> bool:
    """RFC 3339 section 5.6 date-time (a space for the T allowed), fields in range; no leap second."""
    m = _DATE_TIME.fullmatch(text)
    if m is None:
        return False
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    try:
        datetime(year, month, day, hour, minute, second)  # noqa: DTZ001 -- only the fields' ranges
    except ValueError:
        return False
    return m[7] is None or (int(m[8]) < 24 and int(m[9]) < 60)


def _is_finite_number(x: Any) -> bool:
    """A JSON number that is finite as a float64 (a boolean is not a number; 10**400 is not finite)."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return False
    try:
        return math.isfinite(float(x))
    except OverflowError:
        return False


def _check_probability_rows(name: str, rows: list[Any], n: int | None, tol: float) -> None:
    """Each row: ``n`` probabilities in [0, 1] whose sum is within ``tol`` of 1 and above 0."""
    for r, row in enumerate(rows):
        if n is not None and len(row) != n:
            raise ValueError(f"'{name}' row {r} must hold {n} probabilities, got {len(row)}")
        if not all(0.0 <= p <= 1.0 for p in row):
            raise ValueError(f"'{name}' row {r} must lie in [0, 1]: {row!r}")
        total = math.fsum(row)
        if not (abs(total - 1.0) <= tol and total > 0.0):
            raise ValueError(f"'{name}' row {r} must sum to 1 within {tol}: sum is {total:.6g}")


class SelectorInfo(BaseModel):
    """Which selector made a decision."""

    version: str
    config_hash: str


class ToLabel(BaseModel):
    """An item sent to the labelers (output, topic ``to-label``, keyed by ``id``)."""

    model_config = ConfigDict(extra="forbid", title="to-label")

    id: str
    route: Literal["query", "audit"]
    score: float = Field(ge=0, le=1, description="the informativeness that decided")
    scores: dict[str, float] = Field(description="every computed measure, each in [0, 1]")
    threshold: float | None = Field(
        description="the threshold in force for the pool that chose it, at its share then (the common "
        "pool's for an audit); null while the pool's window is young (cold_start)"
    )
    selected_by: str = Field(
        description="audit, cold_start, or the pool that chose it: uncertainty, exploration, class:<name>, "
        "segment:<name>"
    )
    query_probability: float = Field(gt=0, le=1, description="inclusion probability of this decision")
    priority: float = Field(ge=0, le=1, description="higher is more urgent for the labelers")
    predicted: str = Field(description="predicted class name")
    accept_eligible: bool = Field(
        description="met the auto-accept rule: an audit of such an item rates auto-accepted predictions"
    )
    probs: list[float]
    embedding: list[float] | None = Field(
        description="the prediction's embedding, passed through (retraining and the label join use it)"
    )
    segment: str | None
    payload: Any
    meta: Any
    model: str | None
    ts: str | None = Field(
        None,
        description="the prediction's time, RFC 3339 UTC: its 'ts', else the Kafka timestamp it was read "
        "with "
        "(absent from records written before the field existed)",
    )
    decided_at: str = Field(description="RFC 3339, UTC")
    selector: SelectorInfo


class Accepted(BaseModel):
    """An auto-accepted prediction, a pseudo-label (output, topic ``accepted``, keyed by ``id``)."""

    model_config = ConfigDict(extra="forbid", title="accepted")

    id: str
    label: str
    confidence: float = Field(ge=0, le=1)
    model: str | None
    payload: Any
    meta: Any
    decided_at: str
    embedding: list[float] | None = Field(
        None,
        description="on the pseudo-label sample (dataset.pseudo_label_share), when the prediction had one",
    )


_DLQ_PREFIX = re.compile(r"^[xX]-[dD][lL][qQ]-")


class DeadLetterHeaders(BaseModel):
    """Headers of a dead-letter record; key and value are the original bytes, unchanged unless too large to
    carry (then truncated, with the original size and SHA-256). The ``x-dlq-*`` headers are ours (any other
    is refused); after them come the input record's own headers (e.g. ``traceparent``), carried as they were.
    """

    model_config = ConfigDict(
        extra="allow",
        title="dead-letter headers",
        populate_by_name=True,
        json_schema_extra=lambda schema: schema.update(
            propertyNames={
                "anyOf": [
                    {"enum": sorted(p for p in schema["properties"] if _DLQ_PREFIX.match(p))},
                    {"not": {"pattern": _DLQ_PREFIX.pattern}},
                ]
            }
        ),
    )

    original_topic: str = Field(alias="x-dlq-original-topic")
    original_partition: str = Field(alias="x-dlq-original-partition")
    original_offset: str = Field(alias="x-dlq-original-offset")
    stage: str = Field(alias="x-dlq-stage", description="decode, score, encode, produce, labels, serve, ...")
    reason: str = Field(alias="x-dlq-reason", description="machine-readable reason code")
    exception_message: str = Field(
        alias="x-dlq-exception-message", description="human-readable; secrets redacted"
    )
    failed_at: str = Field(alias="x-dlq-failed-at", description="RFC 3339, UTC")
    app_version: str = Field(alias="x-dlq-app-version")
    original_size: str | None = Field(
        None,
        alias="x-dlq-original-size",
        description="only when the value was truncated to fit kafka.max_request_size: its size in bytes",
    )
    original_sha256: str | None = Field(
        None,
        alias="x-dlq-original-sha256",
        description="with x-dlq-original-size: SHA-256 of the whole value",
    )
    original_key_size: str | None = Field(
        None, alias="x-dlq-original-key-size", description="only when a key over 1 KiB was cut: its size"
    )
    original_key_sha256: str | None = Field(
        None,
        alias="x-dlq-original-key-sha256",
        description="with x-dlq-original-key-size: SHA-256 of the key",
    )
    dropped_headers: str | None = Field(
        None,
        alias=DLQ_DROPPED_HEADERS,
        description="only when the input's headers did not fit kafka.max_request_size: how many were cut",
    )

    @model_validator(mode="after")
    def _no_other_dlq_header(self) -> Self:
        unknown = sorted(k for k in self.model_extra or {} if _DLQ_PREFIX.match(k))
        if unknown:
            raise ValueError(f"unknown x-dlq-* headers: {unknown}")
        return self


class Label(BaseModel):
    """A human label (input, topic ``labels``): one annotator's vote on one item; ``label: null`` retracts it.
    Parsed by :func:`selector.quality.labels.parse_label`."""

    model_config = ConfigDict(extra="allow", title="label")

    id: str = Field(min_length=1, description="the id of the item sent for labeling")
    label: str | None = Field(description="a configured class name, or null to retract this annotator's vote")
    annotator: str = Field(
        "unknown", min_length=1, description="who labeled; one vote per annotator and item"
    )
    ts: str | int | None = Field(
        None, description="RFC 3339 string or epoch milliseconds; else the Kafka timestamp"
    )


class FeatureRecord(BaseModel):
    """Features for the inference connector (input of ``selector serve-model``, topic ``features``).
    Parsed by :func:`selector.messages.features.decode_features`."""

    model_config = ConfigDict(extra="allow", title="features", allow_inf_nan=False)

    id: str = Field(min_length=1)
    embedding: list[Annotated[float, Field(ge=-FLOAT32_MAX, le=FLOAT32_MAX)]] = Field(
        description="the features the model head scores: the model's embedding_dim numbers"
    )
    ts: str | int | None = None
    payload: Any = Field(None, description="opaque, passed through to the prediction")
    meta: Any = Field(None, description="opaque, passed through to the prediction")


class ModelEvent(BaseModel):
    """The outcome of a retrain (topic ``models``, keyed by version): ``promoted`` makes serve-model swap to
    the version (after checking its SHA-256); ``rejected`` changes nothing. Parsed by
    :func:`parse_model_event`."""

    model_config = ConfigDict(extra="allow", title="model event")

    type: Literal["promoted", "rejected"]
    version: str = Field(min_length=1, description="registry version, e.g. v3")
    parent: str | None = Field(None, description="the version it was trained to replace")
    sha256: str | None = Field(None, description="SHA-256 of the version's model.onnx")
    reason: str | None = Field(None, description="why it was promoted or rejected")
    metrics: dict[str, Any] = Field(default_factory=dict, description="the promotion gate's figures")
    at: str | None = Field(None, description="RFC 3339, UTC")


class RetrainRequest(BaseModel):
    """A retrain trigger fired by the label loop (topic ``topics.retrain``, default ``retrain-requests``,
    keyed by request number), for the built-in trainer or an external pipeline. Parsed by
    :func:`parse_retrain_request`."""

    model_config = ConfigDict(extra="allow", title="retrain request")

    type: Literal["retrain_request"]
    request: int = Field(ge=1, description="1, 2, ... per label loop")
    reasons: list[str] = Field(description="labels, schedule, audit_error, drift")
    labels: int = Field(ge=0, description="human labels stored since the previous request")
    at: str = Field(description="RFC 3339, UTC")


class StateSnapshot(BaseModel):
    """One input partition's controller and scoring state: the ``state`` of a record of the compacted topic
    ``selector-state`` (keyed by ``<group_id>/<topic>/<partition>``; the record also carries ``offset``,
    ``written_at`` and ``selector``), written after the outputs were delivered and before the offsets are
    committed, restored on assignment. Produced by :meth:`selector.routing.Router.snapshot`."""

    model_config = ConfigDict(extra="allow", title="state snapshot")

    budget: dict[str, Any] = Field(description="token balance, cap ledger, items and labels counted")
    windows: dict[str, Any] = Field(description="each pool's window of recent scores, exact values")
    pending: dict[str, Any] = Field(default_factory=dict, description="items sent and not labeled yet")
    chunk: dict[str, list[float]] = Field(default_factory=dict, description="scores since the last refresh")
    balances: dict[str, list[float]] = Field(default_factory=dict, description="reserved pools' balances")
    versions: list[str] = Field(default_factory=list, description="model versions seen, the current last")
    lost: float = 0.0
    pool_lost: dict[str, float] = Field(default_factory=dict)
    scoring: dict[str, Any] | None = Field(None, description="stateful measures' memory, when configured")


SCHEMAS: dict[str, type[BaseModel]] = {
    "prediction": Prediction,
    "to-label": ToLabel,
    "accepted": Accepted,
    "dead-letter-headers": DeadLetterHeaders,
    "label": Label,
    "features": FeatureRecord,
    "model-event": ModelEvent,
    "retrain-request": RetrainRequest,
    "state-snapshot": StateSnapshot,
}


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of every message contract, by name."""
    return {name: model.model_json_schema(by_alias=True) for name, model in SCHEMAS.items()}


def parse_model_event(raw: bytes | None) -> ModelEvent | None:
    """A models-topic event, or None when the record is not one (logged by the caller, never fatal)."""
    try:
        return ModelEvent.model_validate_json(raw or b"")
    except ValidationError:
        return None


def parse_retrain_request(raw: bytes | None) -> RetrainRequest | None:
    """A retrain-topic event, or None when the record is not one."""
    try:
        return RetrainRequest.model_validate_json(raw or b"")
    except ValidationError:
        return None


def parse_to_label(raw: bytes | None) -> ToLabel | None:
    """A to-label record as the labeling side reads it, or None when the record is not one."""
    try:
        return ToLabel.model_validate_json(raw or b"")
    except ValidationError:
        return None
