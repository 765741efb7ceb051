"""Producing routed records and confirming their delivery, resending failures until an outage deadline.

A record the producer or the broker refuses for good (too large, invalid) is not resent: it is replaced by a
dead letter of itself, so one bad record never stalls or crashes the process. A dead letter too large to
carry its original bytes carries them truncated, with the original size and SHA-256 in headers.

Every record an input produces (a routed record, a prediction, a dead letter) carries the input's Kafka
headers (:func:`carried_headers`): all but its ``x-dlq-*``, which belong to the dead letter that set them.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from kafka import KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import (
    InvalidRecordError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)
from kafka.record.default_records import DefaultRecordBatchBuilder

import selector
from connectors.kafka.clients import redact
from selector.errors import DeliveryError
from selector.messages.contracts import DLQ_DROPPED_HEADERS
from selector.messages.prediction import Reject

log = logging.getLogger(__name__)

SIZE_OVERHEAD_BOUND = 1024
"""More than the batch and record overhead kafka-python adds to a header-less record's key and value."""


@dataclass(frozen=True)
class Failure:
    """One record that cannot go on: its position in the polled records, stage, reason code and message."""

    position: int
    stage: str
    reason: str
    message: str


Headers = list[tuple[str, bytes]]
Outgoing = tuple[str, bytes | None, bytes | None, Headers | None]  # topic, key, value, headers
Refused = Callable[[Outgoing, Exception], Outgoing | None]
"""Given a record refused for good and why: its replacement (a dead letter), or None to give it up."""

DEFAULT_MAX_REQUEST_SIZE = 1_048_576
"""kafka-python's default ``max_request_size`` (and the default of ``kafka.max_request_size``)."""
MAX_KEPT_KEY_BYTES = 1024
"""A dead letter that must be truncated keeps at most this much of the original key."""
MAX_MESSAGE_HEADER_BYTES = 2000
"""Bound on the ``x-dlq-exception-message`` header, in UTF-8 bytes."""
LAST_RESORT_VALUE_BYTES = 1024
"""What a dead letter the broker itself refused keeps of its value on its last try."""
CUT_HEADERS_BOUND = 512
"""More than the headers a cut adds (original size and SHA-256 of the value and the key)."""
VARINT_GROWTH_BYTES = 16
"""Bound on how much the record's length varints grow from an empty value to a large one."""
REFUSED_FOR_GOOD = (MessageSizeTooLargeError, RecordListTooLargeError, InvalidRecordError)
"""Per-record errors that resending cannot cure."""


DLQ_PREFIX = "x-dlq-"
"""The headers a dead letter sets; an input's own are not carried (a replayed dead letter gets fresh ones)."""
HEADER_OVERHEAD_BOUND = 10
"""More than the varints of one header's key and value lengths."""


def carried_headers(rec: ConsumerRecord) -> Headers | None:
    """The headers of input ``rec`` its outputs carry: every one but ``x-dlq-*`` (None when none is left).

    Trace context (W3C ``traceparent``, ``tracestate``, ``baggage``) and any application header thus follow an
    item from its input to every record it produces."""
    headers = getattr(rec, "headers", None)
    if not headers:
        return None
    kept = [(k, v) for k, v in headers if not k.lower().startswith(DLQ_PREFIX)]
    return kept or None


def headers_size(headers: Headers | None) -> int:
    """An upper bound on the bytes ``headers`` add to a record."""
    if not headers:
        return 0
    return sum(len(k.encode()) + len(v or b"") + HEADER_OVERHEAD_BOUND for k, v in headers or ())


def record_size(key: bytes | None, value: bytes | None, headers: Headers | None) -> int:
    """The size kafka-python checks against ``max_request_size`` for one record (an upper bound)."""
    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers or []))


def _utf8_prefix(text: str, limit: int) -> bytes:
    return text.encode()[:limit].decode("utf-8", "ignore").encode()


def truncated(
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: Headers,
    max_request_size: int,
) -> Outgoing:
    """A dead letter of ``key``/``value`` that fits ``max_request_size``: unchanged if it fits, else the value
    (and a key over :data:`MAX_KEPT_KEY_BYTES`) cut to fit, with ``x-dlq-original-size`` and
    ``x-dlq-original-sha256`` (and the same for the key) in the headers."""
    if key is None and value is None:
        value = b""  # a tombstone without a key: Kafka takes no record with neither
    if record_size(key, value, headers) <= max_request_size:
        return (topic, key, value, headers)
    original = value or b""
    carried = [h for h in headers if not h[0].lower().startswith(DLQ_PREFIX)]
    kept_key = key[:MAX_KEPT_KEY_BYTES] if key else key
    if carried and record_size(kept_key, b"", headers) + CUT_HEADERS_BOUND > max_request_size:
        # the input's own headers leave no room for its bytes: they go, and the dead letter says how many
        headers = [h for h in headers if h[0].lower().startswith(DLQ_PREFIX)]
        headers.append((DLQ_DROPPED_HEADERS, str(len(carried)).encode()))
    if not any(name == "x-dlq-original-size" for name, _ in headers):  # cut once before: keep the first
        headers = [
            *headers,
            ("x-dlq-original-size", str(len(original)).encode()),
            ("x-dlq-original-sha256", hashlib.sha256(original).hexdigest().encode()),
        ]
    if key is not None and len(key) > MAX_KEPT_KEY_BYTES:
        headers += [
            ("x-dlq-original-key-size", str(len(key)).encode()),
            ("x-dlq-original-key-sha256", hashlib.sha256(key).hexdigest().encode()),
        ]
        key = key[:MAX_KEPT_KEY_BYTES]
    # the record's length varints grow with the value: keep a few bytes for them
    room = max(0, max_request_size - record_size(key, b"", headers) - VARINT_GROWTH_BYTES)
    return (topic, key, original[:room], headers)


def dead_letter(
    topic: str,
    rec: ConsumerRecord,
    stage: str,
    reason: str,
    message: str,
    failed_at: str,
    secrets: list[str],
    max_request_size: int = DEFAULT_MAX_REQUEST_SIZE,
) -> Outgoing:
    """A dead letter: the record's original key and value (truncated only if they cannot fit
    ``max_request_size``, see :func:`truncated`), the ``x-dlq-*`` headers, then the record's own headers
    (:func:`carried_headers`)."""
    headers: Headers = [
        ("x-dlq-original-topic", rec.topic.encode()),
        ("x-dlq-original-partition", str(rec.partition).encode()),
        ("x-dlq-original-offset", str(rec.offset).encode()),
        ("x-dlq-stage", stage.encode()),
        ("x-dlq-reason", reason.encode()),
        ("x-dlq-exception-message", _utf8_prefix(redact(message, secrets), MAX_MESSAGE_HEADER_BYTES)),
        ("x-dlq-failed-at", failed_at.encode()),
        ("x-dlq-app-version", selector.__version__.encode()),
        *(carried_headers(rec) or ()),
    ]
    return truncated(topic, rec.key, rec.value, headers, max_request_size)


def dead_letters(
    topic: str,
    records: list[ConsumerRecord],
    rejects: list[Reject],
    failed_at: str,
    secrets: list[str],
    max_request_size: int = DEFAULT_MAX_REQUEST_SIZE,
) -> list[Outgoing]:
    """One dead letter per record the decoder rejected (stage ``decode``)."""
    return [
        dead_letter(
            topic, records[r.position], "decode", r.reason, r.message, failed_at, secrets, max_request_size
        )
        for r in rejects
    ]


def refused_to_dead_letter(
    dead_letter_topic: str, failed_at: str, max_request_size: int = DEFAULT_MAX_REQUEST_SIZE
) -> Refused:
    """The usual answer to a refused record: a dead letter of it (stage ``produce``, reason ``refused``; the
    original topic is the one it was meant for, partition and offset ``-1``; the headers it carried are kept
    after the ``x-dlq-*`` ones). A refused dead letter is
    retried once with its value cut to :data:`LAST_RESORT_VALUE_BYTES`, then given up (logged)."""

    def refused(rec: Outgoing, exc: Exception) -> Outgoing | None:
        topic, key, value, headers = rec
        message = f"{type(exc).__name__}: {exc}"
        if topic != dead_letter_topic:
            dlq_headers: Headers = [
                ("x-dlq-original-topic", topic.encode()),
                ("x-dlq-original-partition", b"-1"),
                ("x-dlq-original-offset", b"-1"),
                ("x-dlq-stage", b"produce"),
                ("x-dlq-reason", b"refused"),
                ("x-dlq-exception-message", _utf8_prefix(message, MAX_MESSAGE_HEADER_BYTES)),
                ("x-dlq-failed-at", failed_at.encode()),
                ("x-dlq-app-version", selector.__version__.encode()),
                *(h for h in headers or () if not h[0].lower().startswith(DLQ_PREFIX)),
            ]
            return truncated(dead_letter_topic, key, value, dlq_headers, max_request_size)
        small = min(LAST_RESORT_VALUE_BYTES, max_request_size // 2)
        if len(value or b"") > small or len(key or b"") > MAX_KEPT_KEY_BYTES:
            kept = [(k, v) for k, v in headers or [] if k != "x-dlq-exception-message"]
            return truncated(dead_letter_topic, key, value, kept, record_size(key, b"", kept) + small)
        log.error("a dead letter was refused for good (%s) and is given up: headers %s", message, headers)
        return None

    return refused


def deliver(
    producer: KafkaProducer,
    outgoing: list[Outgoing],
    deadline_s: float,
    describe: Callable[[object], str],
    refused: Refused | None = None,
) -> list[Outgoing]:
    """Produce every record and wait for every ack; resend what failed, with backoff, until ``deadline_s``.

    A record refused for good (:data:`REFUSED_FOR_GOOD`: too large for the producer or the broker, invalid)
    is not resent: ``refused(record, error)`` gives its replacement, delivered in its place (None: given up).

    Returns:
        The replacements delivered (empty when nothing was refused).

    Raises:
        DeliveryError: something was still undelivered at the deadline, or a record was refused for good and
            there is no ``refused`` (``describe(cause)`` says what).
    """
    deadline = time.monotonic() + deadline_s
    pending = outgoing
    replacements: list[Outgoing] = []
    delay = 0.5

    def replace(rec: Outgoing, exc: Exception) -> Outgoing | None:
        if refused is None:
            raise DeliveryError(describe(exc)) from exc
        log.warning("a record for %r was refused for good (%s); dead-lettered instead", rec[0], exc)
        replacements[:] = [r for r in replacements if r is not rec]  # a refused replacement is replaced
        new = refused(rec, exc)
        if new is not None:
            replacements.append(new)
        return new

    while pending:
        futures = []
        again: list[Outgoing] = []
        for rec in pending:
            try:
                futures.append((rec, producer.send(rec[0], key=rec[1], value=rec[2], headers=rec[3])))
            except REFUSED_FOR_GOOD as exc:  # kafka-python checks max_request_size before queueing
                new = replace(rec, exc)
                if new is not None:
                    again.append(new)
        while True:
            try:
                producer.flush(timeout=min(10.0, max(0.1, deadline - time.monotonic())))
                break
            except KafkaError as exc:
                if time.monotonic() >= deadline:
                    raise DeliveryError(describe(exc)) from exc
                log.warning("delivery still pending (%s); waiting", exc)
        failed = []
        for rec, fut in futures:
            if not fut.failed():
                continue
            if isinstance(fut.exception, REFUSED_FOR_GOOD):
                new = replace(rec, fut.exception)
                if new is not None:
                    again.append(new)
            else:
                failed.append((rec, fut.exception))
        if failed:
            cause = failed[0][1]
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
        pending = [rec for rec, _ in failed] + again
    return replacements
