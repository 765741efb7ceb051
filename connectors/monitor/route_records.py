"""Deciding one partition's polled records so that no single record can stop the batch.

A record that fails at any stage is dead-lettered with that stage and the batch goes on without it:

- ``decode``: the decoder's rejects (reason codes of :mod:`selector.messages.prediction`); a decoder that
raises is run
  record by record to find the record that makes it raise (reason ``decode_error``);
- ``score``: the router raised on the batch; each row is tried alone, and the rows that raise alone (or the
  whole batch, if none does) are dead-lettered (reason ``score_error``);
- ``encode``: the output record cannot be encoded (reason ``encode_error``);
- ``produce``: an output record would exceed ``kafka.max_request_size`` (reason ``output_too_large``).

Rows dropped after deciding are decided again without them (deciding mutates nothing), so the decisions
committed are exactly those whose records are produced: the budget never pays for a dead letter.

Every record produced carries its input's Kafka headers but ``x-dlq-*``
(:func:`connectors.kafka.delivery.carried_headers`), so a ``traceparent`` follows the item.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np
from kafka.consumer.fetcher import ConsumerRecord

from connectors.kafka.delivery import (
    SIZE_OVERHEAD_BOUND,
    Failure,
    Headers,
    Outgoing,
    carried_headers,
    dead_letter,
    headers_size,
    record_size,
)
from selector.config import Config
from selector.messages.outputs import encode_outputs
from selector.messages.prediction import Batch, Reject, decode_batch
from selector.routing import Decisions, Router

log = logging.getLogger(__name__)

STAGES = ("decode", "score", "encode", "produce")
"""The stages at which a predictions record can be dead-lettered (``x-dlq-stage``)."""


@dataclass(frozen=True)
class Routed:
    """What one partition's records produce: every outgoing record (dead letters first), the decisions to
    commit once they are delivered, and the reasons of the dead letters by stage."""

    outgoing: list[Outgoing]
    decisions: Decisions
    dead_letters: dict[str, list[str]]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def decode_isolated(
    values: list[bytes | None], kafka_ts_ms: np.ndarray, config: Config
) -> tuple[Batch, list[Failure]]:
    """The decoded batch and a :class:`Failure` per record the decoder rejected or raised on."""
    options = config.decode_options()
    try:
        batch = decode_batch(values, kafka_ts_ms, **options)
    except Exception as exc:  # a decoder bug must cost one record, not the process
        log.error(
            "the decoder raised on a batch of %d records (%s); decoding them one by one", len(values), exc
        )
        good: list[int] = []
        raised: list[Failure] = []
        for i, value in enumerate(values):
            try:
                decode_batch([value], kafka_ts_ms[i : i + 1], **options)
            except Exception as one:
                raised.append(Failure(i, "decode", "decode_error", f"the decoder failed: {_describe(one)}"))
            else:
                good.append(i)
        try:
            batch = decode_batch([values[i] for i in good], kafka_ts_ms[good], **options)
        except Exception as rest:  # they fail only together
            message = f"the decoder failed on the batch: {_describe(rest)}"
            raised += [Failure(i, "decode", "decode_error", message) for i in good]
            good = []
            batch = decode_batch([], kafka_ts_ms[:0], **options)
        where = np.asarray(good, dtype=np.int64)
        batch = dataclasses.replace(
            batch,
            position=where[batch.position],
            rejects=[Reject(int(where[r.position]), r.reason, r.message) for r in batch.rejects],
        )
        return batch, sorted(raised, key=lambda f: f.position) + _rejected(batch)
    return batch, _rejected(batch)


def _rejected(batch: Batch) -> list[Failure]:
    return [Failure(r.position, "decode", r.reason, r.message) for r in batch.rejects]


def decide_isolated(
    router: Router, partition: int, batch: Batch, now: float
) -> tuple[Decisions | None, dict[int, str]]:
    """The decisions on ``batch``, or None and the rows to drop (with why) if the router raised on it."""
    try:
        return router.decide(partition, batch, np.full(len(batch), now)), {}
    except Exception as exc:  # one odd record must not stop the partition
        log.error("deciding a batch of %d items raised (%s); trying them one by one", len(batch), exc)
        bad: dict[int, str] = {}
        for i in range(len(batch)):
            try:
                router.decide(partition, batch.take([i]), np.full(1, now))
            except Exception as one:
                bad[i] = f"scoring failed: {_describe(one)}"
        if not bad:
            bad = dict.fromkeys(range(len(batch)), f"scoring failed on the batch: {_describe(exc)}")
        return None, bad


def _size(record: tuple[bytes, bytes]) -> int:
    return len(record[0]) + len(record[1])


def route_records(
    router: Router,
    partition: int,
    records: list[ConsumerRecord],
    config: Config,
    now: float,
    decided_at: str,
    selector_info: dict[str, str],
    secrets: list[str],
) -> Routed:
    """Decode, decide and encode one partition's records (mutating nothing); see the module docstring."""
    kafka_ts = np.fromiter((r.timestamp for r in records), dtype=np.int64, count=len(records))
    batch, failures = decode_isolated([r.value for r in records], kafka_ts, config)
    topics, limit = config.topics, config.kafka.max_request_size
    # by record position; None in the common case of no headers at all, which then costs nothing per record
    carried = [carried_headers(r) for r in records] if any(r.headers for r in records) else None

    def headers_of(row: int) -> Headers | None:
        return carried[int(batch.position[row])] if carried else None

    while True:
        decisions, bad = decide_isolated(router, partition, batch, now)
        if decisions is not None:
            out = encode_outputs(
                batch,
                decisions,
                config.classes,
                decided_at,
                selector_info,
                (config.dataset.pseudo_label_share, config.budget.seed),
            )
            dropped = {row: ("encode", "encode_error", message) for row, message in out.failed}
            for topic, recs, rows in (
                (topics.to_label, out.to_label, out.to_label_rows),
                (topics.accepted, out.accepted, out.accepted_rows),
            ):
                if not carried and SIZE_OVERHEAD_BOUND + max(map(_size, recs), default=0) <= limit:
                    continue  # the common case: no headers and every record far below the limit
                for (key, value), row in zip(recs, rows, strict=True):
                    headers = headers_of(row) if carried else None
                    if len(key) + len(value) + headers_size(headers) + SIZE_OVERHEAD_BOUND <= limit:
                        continue  # the exact estimate costs a few microseconds: only near the limit
                    size = record_size(key, value, headers)
                    if size > limit:
                        dropped[row] = (
                            "produce",
                            "output_too_large",
                            f"its {topic!r} record would be {size} bytes, over 'kafka.max_request_size' "
                            f"{limit}",
                        )
            if not dropped:
                break
        else:
            dropped = {row: ("score", "score_error", message) for row, message in bad.items()}
        failures += [Failure(int(batch.position[row]), *why) for row, why in sorted(dropped.items())]
        batch = batch.take([i for i in range(len(batch)) if i not in dropped])
    failures.sort(key=lambda f: f.position)
    outgoing: list[Outgoing] = [
        dead_letter(
            topics.dead_letter, records[f.position], f.stage, f.reason, f.message, decided_at, secrets, limit
        )
        for f in failures
    ]
    if carried:
        outgoing += [
            (topics.to_label, k, v, headers_of(row))
            for (k, v), row in zip(out.to_label, out.to_label_rows, strict=True)
        ]
        outgoing += [
            (topics.accepted, k, v, headers_of(row))
            for (k, v), row in zip(out.accepted, out.accepted_rows, strict=True)
        ]
    else:
        outgoing += [(topics.to_label, k, v, None) for k, v in out.to_label]
        outgoing += [(topics.accepted, k, v, None) for k, v in out.accepted]
    by_stage: dict[str, list[str]] = {}
    for f in failures:
        by_stage.setdefault(f.stage, []).append(f.reason)
    return Routed(outgoing, decisions, by_stage)
