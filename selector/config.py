"""The configuration: one frozen, validated object.

The shell reads ``config.yaml`` and the ``SELECTOR_...`` environment (see ``connectors.settings.configfile``)
into a
plain mapping; :func:`parse_config` turns that mapping into a :class:`Config` or raises
:class:`~selector.errors.ConfigError` whose lines name the key, the constraint and the value, e.g.
``'budget.rate' must be in (0, 1]: 1.3``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from selector.errors import ConfigError
from selector.scores.base import FIELD_OF

MEASURES = tuple(FIELD_OF)
"""Names of the informativeness measures a config may choose (``scoring.measure``, ``scoring.weights``)."""

COMBINATION = "combination"
"""``scoring.measure`` value that decides by the weighted combination in ``scoring.weights``."""

MAX_MEMORY_BYTES = 600_000
"""Bound on a partition's embedding memory (density reservoir plus core-set, float32), which travels in every
state snapshot: Kafka refuses records above about 1 MB by default."""

DEAD_LETTER_HEADROOM_BYTES = 16_384
"""Room a dead letter needs beside the original value (key, ``x-dlq-*`` headers, record overhead): a record of
``input.max_record_bytes`` is dead-lettered whole only if this much more fits ``kafka.max_request_size``."""

HORIZONS_S: dict[str, float] = {"minute": 60.0, "hour": 3600.0, "day": 86400.0}
"""Sliding-window lengths of the hard caps (``budget.caps``), in seconds."""


def _in_unit_open_closed(v: float) -> float:
    if not 0.0 < v <= 1.0:
        raise ValueError("must be in (0, 1]")
    return v


def _in_unit_closed(v: float) -> float:
    if not 0.0 <= v <= 1.0:
        raise ValueError("must be in [0, 1]")
    return v


def _in_unit_half_open(v: float) -> float:
    if not 0.0 <= v < 1.0:
        raise ValueError("must be in [0, 1)")
    return v


def _positive(v: float) -> float:
    if not v > 0:
        raise ValueError("must be > 0")
    return v


def _at_least_one(v: float) -> float:
    if not v >= 1.0:
        raise ValueError("must be >= 1 (a label costs one token)")
    return v


def _measure(v: str) -> str:
    if v not in FIELD_OF:
        raise ValueError(f"must be one of {', '.join(FIELD_OF)}")
    return v


def _port(v: int) -> int:
    if not 0 <= v <= 65535:
        raise ValueError("must be a TCP port in [0, 65535] (0 picks a free port)")
    return v


_HTTP_URL = re.compile(r"https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?(/[^\s?#]*)?")


def _http_url(v: str) -> str:
    match = _HTTP_URL.fullmatch(v)
    if not match or int((match.group(2) or ":0")[1:]) > 65535:
        raise ValueError(
            "must be an http(s) URL such as http://labels:9465 (a host, an optional port and path; "
            "no credentials, query or fragment)"
        )
    return v


RateOpenClosed = Annotated[float, AfterValidator(_in_unit_open_closed)]
Probability = Annotated[float, AfterValidator(_in_unit_closed)]
Share = Annotated[float, AfterValidator(_in_unit_half_open)]
PositiveFloat = Annotated[float, AfterValidator(_positive)]
PositiveInt = Annotated[int, AfterValidator(_positive)]
Port = Annotated[int, AfterValidator(_port)]
MeasureName = Annotated[str, AfterValidator(_measure)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class TopicsConfig(_Section):
    """Kafka topic names."""

    predictions: str = "predictions"
    to_label: str = "to-label"
    accepted: str = "accepted"
    dead_letter: str = "dead-letter"
    labels: str = "labels"
    state: str = "selector-state"
    features: str = "features"
    models: str = "models"
    retrain: str = "retrain-requests"


class KafkaConfig(_Section):
    """Connection, consumer-group and delivery settings (kafka-python parameter names where they exist)."""

    bootstrap_servers: str = "embedded"
    group_id: str = "selector"
    client_id: str = "selector"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: SecretStr | None = None
    create_topics: bool = True
    topic_partitions: PositiveInt = 4
    replication_factor: PositiveInt = 1
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    session_timeout_ms: PositiveInt = 10000
    heartbeat_interval_ms: PositiveInt = 3000
    max_poll_interval_ms: PositiveInt = 300000
    max_poll_records: PositiveInt = 2000
    poll_timeout_ms: PositiveInt = 200
    fetch_max_wait_ms: PositiveInt = 100
    commit_interval_s: PositiveFloat = 1.0
    connect_deadline_s: PositiveFloat = 60.0
    outage_deadline_s: PositiveFloat = 300.0
    linger_ms: Annotated[int, Field(ge=0)] = 5
    max_request_size: Annotated[int, Field(ge=2 * DEAD_LETTER_HEADROOM_BYTES)] = 1_048_576
    compression_type: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "none"
    batch_size: Annotated[int, Field(ge=0)] = 262_144
    client: Literal["kafka-python", "confluent-kafka"] = "kafka-python"
    fetch_min_bytes: PositiveInt = 1
    fetch_max_bytes: PositiveInt = 52_428_800
    max_partition_fetch_bytes: PositiveInt = 1_048_576

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaConfig:
        if self.security_protocol.startswith("SASL") and self.sasl_mechanism is None:
            raise ValueError(
                f"'kafka.sasl_mechanism' is required when security_protocol is {self.security_protocol}"
            )
        if self.sasl_mechanism is not None and (
            self.sasl_plain_username is None or self.sasl_plain_password is None
        ):
            raise ValueError(
                "'kafka.sasl_plain_username' and 'kafka.sasl_plain_password' are required with SASL"
            )
        if self.max_partition_fetch_bytes > self.fetch_max_bytes:
            raise ValueError(
                f"'kafka.max_partition_fetch_bytes' must not exceed 'kafka.fetch_max_bytes': "
                f"{self.max_partition_fetch_bytes} > {self.fetch_max_bytes}"
            )
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError(
                f"'kafka.heartbeat_interval_ms' must be below 'kafka.session_timeout_ms': "
                f"{self.heartbeat_interval_ms} >= {self.session_timeout_ms}"
            )
        return self


class InputConfig(_Section):
    """How raw prediction records are validated."""

    max_record_bytes: PositiveInt = 1_032_192
    prob_tolerance: Annotated[float, AfterValidator(_positive)] = 1e-3
    embedding_dim: PositiveInt | None = None


class ScoringConfig(_Section):
    """How informative an item is: the deciding measure or combination, and its weightings."""

    measure: str = "entropy"
    weights: dict[MeasureName, PositiveFloat] = Field(default_factory=dict)
    detections: Literal["max", "mean", "sum"] = "max"
    cost_aware: bool = False
    density_beta: Annotated[float, Field(ge=0.0)] = 0.0
    normalize_items: Annotated[int, Field(ge=64)] = 2000
    reservoir_items: PositiveInt = 128
    coreset_items: PositiveInt = 256
    cold_start_labels: Annotated[int, Field(ge=0)] = 0

    @field_validator("measure")
    @classmethod
    def _measure_known(cls, v: str) -> str:
        if v != COMBINATION and v not in FIELD_OF:
            raise ValueError(f"must be one of {', '.join(FIELD_OF)} or {COMBINATION}")
        return v

    @model_validator(mode="after")
    def _combination_has_weights(self) -> ScoringConfig:
        if self.measure == COMBINATION and not self.weights:
            raise ValueError(
                "'scoring.weights' must name at least one measure when 'scoring.measure' is combination"
            )
        if self.measure != COMBINATION and self.weights:
            raise ValueError(
                f"'scoring.weights' is used only when 'scoring.measure' is combination, not {self.measure!r}"
            )
        return self

    def measures(self) -> list[str]:
        """The measures that enter the deciding score (weights, density, cold start included)."""
        names = list(self.weights) if self.measure == COMBINATION else [self.measure]
        if self.density_beta > 0:
            names.append("density")
        if self.cold_start_labels > 0:
            names.append("novelty")
        return list(dict.fromkeys(names))


class DiversityConfig(_Section):
    """Windowed batch mode: over-select candidates, then keep one per cluster of similar items."""

    mode: Literal["none", "kcenter", "kmeanspp"] = "none"
    space: Literal["embedding", "gradient"] = "embedding"
    oversample: Annotated[float, Field(ge=1.0)] = 4.0


class CalibrationConfig(_Section):
    """Temperature scaling of the probabilities, applied before auto-accept and scoring."""

    temperature: PositiveFloat = 1.0


class AcceptConfig(_Section):
    """Auto-accept: a prediction whose confidence reaches its class's threshold becomes a pseudo-label."""

    default_threshold: Probability = 0.95
    thresholds: dict[str, Probability] = Field(default_factory=dict)
    committee_agreement: Probability = 0.0


Horizon = Literal["minute", "hour", "day"]


def _default_caps() -> dict[Horizon, int]:
    return {"hour": 1000}


class BudgetConfig(_Section):
    """The labeling budget: target rate, controller, shares, hard caps per sliding window, audits."""

    rate: RateOpenClosed = 0.02
    controller: Literal["quantile", "threshold"] = "quantile"
    query_threshold: Probability = 0.0
    window_items: Annotated[int, Field(ge=64)] = 2000
    max_burst: Annotated[float, AfterValidator(_at_least_one)] = 10.0
    caps: dict[Horizon, Annotated[int, Field(ge=0)]] = Field(default_factory=_default_caps)
    audit_rate: Share = 0.002
    exploration: Share = 0.0
    class_shares: dict[str, Share] = Field(default_factory=dict)
    segment_shares: dict[str, Share] = Field(default_factory=dict)
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _removed_keys(cls, data: Any) -> Any:
        removed = [k for k in ("feedback_items", "max_catchup") if isinstance(data, dict) and k in data]
        if removed:
            raise ValueError(
                f"'budget.{removed[0]}' was removed: the controller now corrects any shortfall item by item "
                "from its token balance (see docs/budget.md); delete the key"
            )
        return data

    @model_validator(mode="after")
    def _shares_fit(self) -> BudgetConfig:
        if self.audit_rate >= self.rate:
            raise ValueError(
                f"'budget.audit_rate' must be below 'budget.rate' (audits are part of the budget): "
                f"{self.audit_rate} >= {self.rate}"
            )
        reserved = self.audit_rate / self.rate + self.exploration + sum(self.class_shares.values())
        reserved += sum(self.segment_shares.values())
        if reserved >= 1.0:
            raise ValueError(
                "'budget.class_shares', 'budget.segment_shares', 'budget.exploration' and "
                f"'budget.audit_rate' / 'budget.rate' must leave part of the budget to the common pool: "
                f"they add up to {reserved:.4g} >= 1"
            )
        return self


class PendingConfig(_Section):
    """Label delay: items sent for labeling and not yet labeled."""

    ttl_s: PositiveFloat = 86400.0
    dedup_distance: Annotated[float, Field(ge=0.0)] = 0.0
    max_items: PositiveInt = 100_000


class DatasetConfig(_Section):
    """The label loop (``selector labels``): where decisions and labels are stored, and how votes resolve."""

    path: str = "selector-dataset.sqlite"
    quorum: PositiveInt = 1
    defect_classes: list[str] | None = None
    pseudo_label_share: Probability = 0.0
    pseudo_label_weight: PositiveFloat = 0.1
    unknown_label_ttl_s: Annotated[float, Field(ge=0.0)] = 3600.0
    """How long a label whose decision was not read yet waits (parked in the store) before it is
    dead-lettered as ``unknown_id`` (0: at the end of the round that read it)."""
    consensus: Literal["dawid_skene", "majority"] = "dawid_skene"
    """How votes resolve (:mod:`selector.quality.consensus`): annotators weighed by their estimated
    reliability, or a strict majority"""
    weak_below: Annotated[float, Field(gt=0.0, le=1.0)] = 0.8
    """An item whose consensus confidence is below this (or whose votes tie) asks for another vote"""
    max_votes: Annotated[int, Field(ge=2)] = 3
    """An item with this many votes is not asked again"""
    max_revotes_per_round: Annotated[int, Field(ge=0)] = 100
    """At most this many items asked for another vote per label-loop round (0: never ask)"""
    revote_share: Probability = 0.05
    """Another vote costs a label like a query: at most this share of the items with votes is ever asked again
    (0: never ask)"""


class QualityConfig(_Section):
    """The label loop's estimates: the population it counts, the sliding window, the divergence alarm."""

    read_predictions: bool = True
    """Count every prediction (the predictions topic) for the prediction-powered and label-free estimates;
    off: only the inverse-probability-weighted estimates from the labeled items exist."""
    window_s: PositiveFloat = 86400.0
    """Length of the sliding window the ``window`` estimates cover (the population is kept in 48 time
    buckets of it)."""
    divergence_sigmas: PositiveFloat = 4.0
    """The prediction-powered and the label-free accuracy of the window diverge (a concept-drift signal)
    beyond this many standard errors."""


class RetrainConfig(_Section):
    """When the label loop asks for a retrain, and the built-in trainer that may answer."""

    every_labels: PositiveInt | None = 500
    schedule_s: PositiveFloat | None = None
    audit_error_above: Probability | None = None
    audit_min_labels: PositiveInt = 30
    drift: bool = False
    drift_delta: Annotated[float, Field(ge=0.0)] = 0.005
    drift_threshold: PositiveFloat = 50.0
    min_interval_s: Annotated[float, Field(ge=0.0)] = 3600.0
    builtin: bool = False
    registry: str = "selector-models"
    members: PositiveInt = 5
    hidden: PositiveInt = 64
    epochs: PositiveInt = 150
    holdout_share: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2
    min_examples: PositiveInt = 50
    min_improvement: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    min_holdout_effective: Annotated[float, Field(ge=2.0)] = 30.0
    gate_weight_cap: Annotated[float, Field(ge=1.0)] | None = 10.0
    seed: int = 0


class ServeConfig(_Section):
    """The inference connector (``selector serve-model``)."""

    batch_size: PositiveInt = 256
    max_wait_ms: PositiveInt = 50


class LabelStudioConfig(_Section):
    """The Label Studio bridge (``selector label-studio``)."""

    url: str = "http://127.0.0.1:8080"
    token: SecretStr | None = None
    project: str = "selector"
    label_config: str | None = None
    webhook_host: str = "127.0.0.1"
    webhook_port: Port = 9467
    webhook_url: str | None = None
    poll_interval_s: PositiveFloat = 30.0


class MetricsConfig(_Section):
    """The Prometheus endpoints: the monitor's, the label loop's and the inference connector's."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: Port = 9464
    labels_port: Port = 9465
    serve_port: Port = 9466
    labels_url: Annotated[str, AfterValidator(_http_url)] | None = None
    """the label loop's endpoint as the monitor reaches it: its dashboard draws the label loop's panels"""


class Config(_Section):
    """The whole configuration of one selector instance."""

    classes: list[str] = Field(default_factory=lambda: ["ok", "scratch", "dent", "crack"])
    topics: TopicsConfig = Field(default_factory=TopicsConfig)
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    input: InputConfig = Field(default_factory=InputConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    diversity: DiversityConfig = Field(default_factory=DiversityConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    accept: AcceptConfig = Field(default_factory=AcceptConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    pending: PendingConfig = Field(default_factory=PendingConfig)
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    label_studio: LabelStudioConfig = Field(default_factory=LabelStudioConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)

    @field_validator("classes")
    @classmethod
    def _classes_valid(cls, v: list[str]) -> list[str]:
        if len(v) < 2:
            raise ValueError("must list at least 2 class names")
        if len(set(v)) != len(v) or not all(v):
            raise ValueError("must be non-empty names without repeats")
        return v

    @model_validator(mode="after")
    def _classes_consistent(self) -> Config:
        for key, names in (
            ("accept.thresholds", self.accept.thresholds),
            ("budget.class_shares", self.budget.class_shares),
            ("dataset.defect_classes", self.dataset.defect_classes or []),
        ):
            unknown = sorted(set(names) - set(self.classes))
            if unknown:
                raise ValueError(
                    f"'{key}' names classes not in 'classes': {unknown!r} (classes: {self.classes!r})"
                )
        return self

    @model_validator(mode="after")
    def _embedding_known(self) -> Config:
        user = self.required_fields().get("embedding")
        dim = self.input.embedding_dim
        if user is not None and dim is None:
            raise ValueError(
                f"'input.embedding_dim' (the length of your model's embeddings) is required by {user}"
            )
        s = self.scoring
        kept = (s.reservoir_items if "density" in s.measures() else 0) + (
            s.coreset_items if "novelty" in s.measures() else 0
        )
        if dim is not None and kept * dim * 4 > MAX_MEMORY_BYTES:
            raise ValueError(
                f"'scoring.reservoir_items' + 'scoring.coreset_items' in use keep {kept} embeddings of {dim} "
                f"numbers, {kept * dim * 4} bytes per partition snapshot, over {MAX_MEMORY_BYTES}: lower them"
            )
        if self.retrain.drift and self.budget.audit_rate == 0:
            raise ValueError(
                "'retrain.drift' watches the confidence of audited items: it needs 'budget.audit_rate' > 0"
            )
        if self.diversity.mode != "none" and self.budget.controller != "quantile":
            raise ValueError(
                "'diversity.mode' needs 'budget.controller' quantile (it over-selects by a quantile)"
            )
        return self

    @model_validator(mode="after")
    def _records_fit_the_producer(self) -> Config:
        most = self.kafka.max_request_size - DEAD_LETTER_HEADROOM_BYTES
        if self.input.max_record_bytes > most:
            raise ValueError(
                f"'input.max_record_bytes' ({self.input.max_record_bytes}) plus {DEAD_LETTER_HEADROOM_BYTES} "
                "bytes of dead-letter headers must fit 'kafka.max_request_size' "
                f"({self.kafka.max_request_size}), or a record the decoder accepts could not be "
                "dead-lettered whole: lower "
                f"'input.max_record_bytes' to at most {most}, or raise 'kafka.max_request_size' to at least "
                f"{self.input.max_record_bytes + DEAD_LETTER_HEADROOM_BYTES} (and the broker's "
                "message.max.bytes with it)"
            )
        if self.input.max_record_bytes > self.kafka.max_partition_fetch_bytes:
            raise ValueError(
                f"'kafka.max_partition_fetch_bytes' ({self.kafka.max_partition_fetch_bytes}) must hold "
                f"'input.max_record_bytes' ({self.input.max_record_bytes}), or a record the decoder accepts "
                "could stall its partition's fetches: raise 'kafka.max_partition_fetch_bytes' to at least "
                f"{self.input.max_record_bytes} or lower 'input.max_record_bytes'"
            )
        return self

    def decode_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`selector.messages.prediction.decode_batch` under this configuration."""
        return {
            "n_classes": len(self.classes),
            "max_record_bytes": self.input.max_record_bytes,
            "prob_tolerance": self.input.prob_tolerance,
            "embedding_dim": self.input.embedding_dim,
            "required": self.required_fields(),
        }

    def required_fields(self) -> dict[str, str]:
        """Prediction fields every record must carry under this configuration, with who needs them."""
        out: dict[str, str] = {}
        for m in self.scoring.measures():
            field = FIELD_OF[m]
            if field != "probs":
                out.setdefault(field, f"measure {m!r} (scoring)")
        if self.diversity.mode != "none":
            out.setdefault("embedding", f"'diversity.mode' {self.diversity.mode}")
        return out

    def defects(self) -> list[bool]:
        """Whether each class counts as a defect (``dataset.defect_classes``; default: all but the first)."""
        named = self.dataset.defect_classes
        return [c in named if named is not None else k > 0 for k, c in enumerate(self.classes)]

    def accept_thresholds(self) -> list[float]:
        """Accept threshold of every class, in class order."""
        return [self.accept.thresholds.get(c, self.accept.default_threshold) for c in self.classes]

    def config_hash(self) -> str:
        """Short stable hash of the effective configuration; secrets do not enter it (they dump masked)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def masked(self) -> dict[str, Any]:
        """The configuration as plain data with every secret replaced by ``'**********'``."""
        masked: dict[str, Any] = _mask(self.model_dump(mode="python"))
        return masked


def _mask(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return "**********"
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    return value


def parse_config(data: Mapping[str, Any] | None, source: str = "config") -> Config:
    """Validate a plain mapping into a :class:`Config`.

    Raises:
        ConfigError: with one line per problem, each naming key, constraint and value.
    """
    try:
        return Config.model_validate(dict(data or {}))
    except ValidationError as exc:
        raise ConfigError([_describe(err) for err in exc.errors()], source) from exc


def _describe(err: Mapping[str, Any]) -> str:
    parts = [str(p) for p in err["loc"]]
    if parts[-1:] == ["[key]"]:  # a bad mapping key: name the mapping
        parts = parts[:-2]
    loc = ".".join(parts)
    msg = str(err["msg"]).removeprefix("Value error, ")
    value = err.get("input")
    if err["type"] == "extra_forbidden":
        return f"'{loc}' is not a known key: {value!r}{_valid_keys_hint(err['loc'])}"
    if not loc or msg.startswith("'"):  # a model-level check already names its keys
        return msg
    if err["type"] == "value_error":
        return f"'{loc}' {msg}: {value!r}"
    return f"'{loc}': {msg[0].lower() + msg[1:]}: {value!r}"


def _valid_keys_hint(loc: tuple[Any, ...]) -> str:
    model: type[BaseModel] = Config
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = field.annotation if field is not None else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return ""
        model = ann
    return f" (valid keys: {', '.join(model.model_fields)})"
