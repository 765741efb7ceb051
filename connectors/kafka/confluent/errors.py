"""librdkafka's errors as kafka-python's, and librdkafka's log lines on a ``kafka.*`` logger.

The code that uses a client catches kafka-python's errors alone: :func:`kafka_error` maps the broker's codes
by number and librdkafka's local codes by sense (retriable, or the group moved on), so a dead broker, a
timeout or a rebalance is handled the same way on either client.
"""

# ruff: noqa: SLF001 -- librdkafka's local error codes are public API spelled with a leading underscore

from __future__ import annotations

import logging
from typing import Any

import confluent_kafka as ck
from kafka import errors as kerrors

log = logging.getLogger("kafka.librdkafka")
"""librdkafka's own log lines and errors (a ``kafka.*`` logger: rate-limited like kafka-python's)."""


_RETRIABLE_LOCAL = {
    ck.KafkaError._TRANSPORT: kerrors.KafkaConnectionError,
    ck.KafkaError._ALL_BROKERS_DOWN: kerrors.KafkaConnectionError,
    # a request in flight when its broker connection went away (a broker killed): ask again, as for a
    # dropped connection (seen in the broker-restart test: the label loop's end offsets)
    ck.KafkaError._DESTROY_BROKER: kerrors.KafkaConnectionError,
    # metadata lost with the broker (kafka-python's UnknownTopicOrPartitionError is retriable too)
    ck.KafkaError._UNKNOWN_PARTITION: kerrors.UnknownTopicOrPartitionError,
    ck.KafkaError._UNKNOWN_TOPIC: kerrors.UnknownTopicOrPartitionError,
    ck.KafkaError._RESOLVE: kerrors.KafkaConnectionError,
    ck.KafkaError._TIMED_OUT: kerrors.KafkaTimeoutError,
    ck.KafkaError._TIMED_OUT_QUEUE: kerrors.KafkaTimeoutError,
    ck.KafkaError._MSG_TIMED_OUT: kerrors.KafkaTimeoutError,
    ck.KafkaError._WAIT_COORD: kerrors.KafkaTimeoutError,
    ck.KafkaError._QUEUE_FULL: kerrors.KafkaTimeoutError,
}
"""librdkafka's local error codes that mean "not now": kafka-python's retriable errors of the same sense."""

_GROUP_MOVED_ON_LOCAL = (
    ck.KafkaError._ASSIGNMENT_LOST,
    ck.KafkaError._STATE,
    ck.KafkaError._MAX_POLL_EXCEEDED,
)
"""librdkafka's local codes for a commit this member may no longer make (its generation is over)."""


def kafka_error(err: ck.KafkaError) -> kerrors.KafkaError:
    """The kafka-python error for a librdkafka one: the broker's codes by number, the local codes by sense."""
    code, text = err.code(), err.str()
    if code > 0:
        return kerrors.for_code(code)(text)
    if code in _GROUP_MOVED_ON_LOCAL:
        return kerrors.CommitFailedError(text)
    cls = _RETRIABLE_LOCAL.get(code)
    if cls is not None:
        return cls(text)
    return kerrors.KafkaError(text)


def error_from(exc: ck.KafkaException) -> kerrors.KafkaError:
    """The kafka-python error for a raised librdkafka exception (to raise ``from`` it)."""
    err = exc.args[0] if exc.args else None
    if isinstance(err, ck.KafkaError):
        return kafka_error(err)
    return kerrors.KafkaError(str(exc))


def log_error(err: ck.KafkaError) -> None:
    """librdkafka's error callback: a WARNING on the ``kafka.librdkafka`` logger."""
    log.warning("librdkafka: %s", err.str())


def with_logging(conf: dict[str, Any]) -> dict[str, Any]:
    """``conf`` with librdkafka's log lines and errors sent to the ``kafka.librdkafka`` logger."""
    return {**conf, "logger": log, "error_cb": log_error}
