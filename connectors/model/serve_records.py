"""Scoring one polled batch of feature records so that no single record can stop the batch (serve-model).

A record that fails at any stage is dead-lettered with that stage and the batch goes on without it:

- ``serve``: the feature decoder's rejects (reason codes of :mod:`selector.messages.features`);
- ``score``: the model raised on the batch; each row is scored alone, and the rows that raise alone (or the
  whole batch, if none does) are dead-lettered (reason ``score_error``); a row whose probabilities are not
  finite is dead-lettered too (reason ``non_finite_output``);
- ``encode``: the prediction cannot be encoded as JSON (reason ``encode_error``);
- ``produce``: the prediction would exceed ``kafka.max_request_size`` (reason ``output_too_large``).

Each dead letter carries the original feature record (:func:`connectors.kafka.delivery.dead_letter`). Scoring
is
row-wise, so the predictions of the other rows are those the whole batch would have had. Each prediction
carries its feature record's Kafka headers but ``x-dlq-*``
(:func:`connectors.kafka.delivery.carried_headers`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import orjson
from kafka.consumer.fetcher import ConsumerRecord

from connectors.kafka.delivery import (
    SIZE_OVERHEAD_BOUND,
    Failure,
    Outgoing,
    carried_headers,
    dead_letter,
    headers_size,
    record_size,
)
from selector.config import Config
from selector.messages.features import FeatureBatch, decode_features

log = logging.getLogger(__name__)

STAGES = ("serve", "score", "encode", "produce")
"""The stages at which serve-model dead-letters a feature record (``x-dlq-stage``); ``serve`` is decoding."""


class Scorer(Protocol):
    """A served model: its version, embedding length, and mean and member probabilities of a batch."""

    @property
    def version(self) -> str: ...

    @property
    def embedding_dim(self) -> int: ...

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]: ...


@dataclass(frozen=True)
class Scored:
    """What one polled batch produces: every outgoing record (dead letters first), the number of
    predictions among them, and the reasons of the dead letters by stage."""

    outgoing: list[Outgoing]
    predictions: int
    dead_letters: dict[str, list[str]]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def predict_isolated(
    model: Scorer, x: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None, dict[int, tuple[str, str]]]:
    """Mean and member probabilities of every row of ``x``, and the rows that failed (reason, message).

    A failed row's probabilities are NaN (and its members None when the model raised on the batch)."""
    try:
        probs, members = model.predict(x)
    except Exception as exc:  # one odd record must not stop the batch
        log.error("the model raised on a batch of %d items (%s); scoring them one by one", len(x), exc)
        rows: list[np.ndarray | None] = []
        failed: dict[int, tuple[str, str]] = {}
        for i in range(len(x)):
            try:
                rows.append(model.predict(x[i : i + 1])[0][0])
            except Exception as one:
                rows.append(None)
                failed[i] = ("score_error", f"the model failed: {_describe(one)}")
        if not failed:
            message = f"the model failed on the batch: {_describe(exc)}"
            failed = dict.fromkeys(range(len(x)), ("score_error", message))
        n_classes = next((len(r) for r in rows if r is not None), 0)
        probs = np.full((len(x), n_classes), np.nan)
        for i, r in enumerate(rows):
            if r is not None and i not in failed:
                probs[i] = r
        return probs, None, failed
    bad = ~np.isfinite(probs).all(axis=1)
    failed = {
        int(i): ("non_finite_output", "the model's probabilities for it are NaN or infinite")
        for i in np.flatnonzero(bad)
    }
    return probs, members, failed


def score_records(
    model: Scorer, records: list[ConsumerRecord], config: Config, at: str, secrets: list[str]
) -> Scored:
    """Decode, score and encode one polled batch of feature records; see the module docstring."""
    cfg = config
    topic, limit = cfg.topics.predictions, cfg.kafka.max_request_size
    batch: FeatureBatch = decode_features(
        [r.value for r in records], model.embedding_dim, cfg.input.max_record_bytes
    )
    failures = [Failure(r.position, "serve", r.reason, r.message) for r in batch.rejects]
    predictions: list[Outgoing] = []
    if len(batch):
        probs, members, failed = predict_isolated(model, batch.x)
        for i, rid in enumerate(batch.ids):
            position = int(batch.position[i])
            if i in failed:
                failures.append(Failure(position, "score", *failed[i]))
                continue
            value: dict[str, Any] = {
                "id": rid,
                "probs": probs[i].tolist(),
                "embedding": batch.x[i].tolist(),
                "model": model.version,
                "ts": batch.ts[i] if batch.ts[i] is not None else records[position].timestamp,
                "payload": batch.payload[i],
                "meta": batch.meta[i],
            }
            if members is not None and members.shape[1] > 1:
                value["committee"] = members[i].tolist()
            try:
                key, encoded = rid.encode(), orjson.dumps(value)
            except (orjson.JSONEncodeError, UnicodeEncodeError) as exc:
                failures.append(Failure(position, "encode", "encode_error", f"cannot encode: {exc}"))
                continue
            headers = carried_headers(records[position])
            if len(key) + len(encoded) + headers_size(headers) + SIZE_OVERHEAD_BOUND > limit:
                size = record_size(key, encoded, headers)
                if size > limit:
                    message = (
                        f"its {topic!r} record would be {size} bytes, over 'kafka.max_request_size' {limit}"
                    )
                    failures.append(Failure(position, "produce", "output_too_large", message))
                    continue
            predictions.append((topic, key, encoded, headers))
    failures.sort(key=lambda f: f.position)
    outgoing = [
        dead_letter(
            cfg.topics.dead_letter, records[f.position], f.stage, f.reason, f.message, at, secrets, limit
        )
        for f in failures
    ]
    by_stage: dict[str, list[str]] = {}
    for f in failures:
        by_stage.setdefault(f.stage, []).append(f.reason)
    return Scored(outgoing + predictions, len(predictions), by_stage)
