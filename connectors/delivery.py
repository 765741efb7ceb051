"""Producing routed records and confirming their delivery, resending failures until an outage deadline."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from kafka import KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError

import selector
from connectors.kafka_io import redact
from selector.decode import Reject
from selector.errors import DeliveryError

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]
Outgoing = tuple[str, bytes | None, bytes | None, Headers | None]  # topic, key, value, headers


def dead_letter(
    topic: str, rec: ConsumerRecord, stage: str, reason: str, message: str, failed_at: str, secrets: list[str]
) -> Outgoing:
    """A dead letter: the record's original key and value, and the ``x-dlq-*`` headers."""
    headers: Headers = [
        ("x-dlq-original-topic", rec.topic.encode()),
        ("x-dlq-original-partition", str(rec.partition).encode()),
        ("x-dlq-original-offset", str(rec.offset).encode()),
        ("x-dlq-stage", stage.encode()),
        ("x-dlq-reason", reason.encode()),
        ("x-dlq-exception-message", redact(message, secrets)[:2000].encode()),
        ("x-dlq-failed-at", failed_at.encode()),
        ("x-dlq-app-version", selector.__version__.encode()),
    ]
    return (topic, rec.key, rec.value, headers)


def dead_letters(
    topic: str,
    records: list[ConsumerRecord],
    rejects: list[Reject],
    failed_at: str,
    secrets: list[str],
) -> list[Outgoing]:
    """One dead letter per record the decoder rejected (stage ``decode``)."""
    return [
        dead_letter(topic, records[r.position], "decode", r.reason, r.message, failed_at, secrets)
        for r in rejects
    ]


def deliver(
    producer: KafkaProducer,
    outgoing: list[Outgoing],
    deadline_s: float,
    describe: Callable[[object], str],
) -> None:
    """Produce every record and wait for every ack; resend what failed, with backoff, until ``deadline_s``.

    Raises:
        DeliveryError: something was still undelivered at the deadline (``describe(cause)`` says what).
    """
    deadline = time.monotonic() + deadline_s
    pending = outgoing
    delay = 0.5
    while pending:
        futures = [(rec, producer.send(rec[0], key=rec[1], value=rec[2], headers=rec[3])) for rec in pending]
        while True:
            try:
                producer.flush(timeout=min(10.0, max(0.1, deadline - time.monotonic())))
                break
            except KafkaError as exc:
                if time.monotonic() >= deadline:
                    raise DeliveryError(describe(exc)) from exc
                log.warning("delivery still pending (%s); waiting", exc)
        failed = [rec for rec, fut in futures if fut.failed()]
        if not failed:
            return
        cause = next(f for _, f in futures if f.failed()).exception
        if time.monotonic() + delay >= deadline:
            raise DeliveryError(describe(cause))
        log.warning(
            "%d of %d records not delivered (%s); resending in %.1f s",
            len(failed),
            len(pending),
            cause,
            delay,
        )
        time.sleep(delay)
        delay = min(delay * 2, 10.0)
        pending = failed
