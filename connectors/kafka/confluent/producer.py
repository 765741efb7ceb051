"""A librdkafka producer with the kafka-python ``KafkaProducer`` calls this project makes, and the delivery
report of one record as kafka-python's future.

A record over ``message.max.bytes`` is refused by ``produce()`` at once, as kafka-python refuses one over
``max_request_size``: both raise :class:`kafka.errors.MessageSizeTooLargeError`. The producer waits for
``acks=all`` and retries until ``message.timeout.ms`` (not idempotent: see :mod:`connectors.kafka.confluent`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import confluent_kafka as ck
from kafka import TopicPartition
from kafka import errors as kerrors
from kafka.producer.future import RecordMetadata

from connectors.kafka.confluent.errors import error_from, kafka_error, with_logging


class Delivery:
    """The delivery report of one produced record, as kafka-python's ``FutureRecordMetadata`` offers it.

    One is made per record, so it holds little: the report's message, and callbacks only when asked.
    """

    __slots__ = ("_callbacks", "_errbacks", "_msg", "_producer", "exception", "is_done")

    def __init__(self, producer: ck.Producer) -> None:
        self._producer = producer
        self.is_done = False
        self.exception: kerrors.KafkaError | None = None
        self._msg: ck.Message | None = None
        self._callbacks: list[Callable[[Any], object]] | None = None
        self._errbacks: list[Callable[[Exception], object]] | None = None

    def report(self, err: ck.KafkaError | None, msg: ck.Message) -> None:
        """librdkafka's delivery callback (served by the producer's ``poll``/``flush``)."""
        self.is_done = True
        if err is not None:
            self.exception = kafka_error(err)
            for eb in self._errbacks or ():
                eb(self.exception)
            return
        self._msg = msg
        for cb in self._callbacks or ():
            cb(self.value)

    @property
    def value(self) -> Any:
        """kafka-python's ``RecordMetadata`` of the delivered record (None until then)."""
        msg = self._msg
        if msg is None:
            return None
        tp = TopicPartition(msg.topic(), msg.partition())
        return RecordMetadata(tp.topic, tp.partition, tp, msg.offset(), msg.timestamp()[1], None, -1, -1, -1)

    def succeeded(self) -> bool:
        return self.is_done and self.exception is None

    def failed(self) -> bool:
        return self.is_done and self.exception is not None

    def add_callback(self, fn: Callable[[Any], object]) -> Delivery:
        if self.succeeded():
            fn(self.value)
        elif not self.is_done:
            self._callbacks = [*(self._callbacks or ()), fn]
        return self

    def add_errback(self, fn: Callable[[Exception], object]) -> Delivery:
        if self.exception is not None:
            fn(self.exception)
        elif not self.is_done:
            self._errbacks = [*(self._errbacks or ()), fn]
        return self

    def get(self, timeout: float | None = None) -> Any:
        """The record's metadata once delivered.

        Raises:
            KafkaTimeoutError: no report within ``timeout``.
            KafkaError: the record was not delivered.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_done:
            if deadline is not None and time.monotonic() >= deadline:
                raise kerrors.KafkaTimeoutError(f"no delivery report within {timeout} s")
            self._producer.poll(0.05)
        if self.exception is not None:
            raise self.exception
        return self.value


class ConfluentProducer:
    """A librdkafka producer with the kafka-python ``KafkaProducer`` calls this project makes."""

    SERVE_EVERY = 1000
    """Delivery reports are served (``poll(0)``) every this many sends, not all at the flush."""

    def __init__(self, conf: dict[str, Any]) -> None:
        self.config = dict(conf)
        """the librdkafka settings it was built with (as kafka-python's ``KafkaProducer.config``)"""
        self._p = ck.Producer(with_logging(conf))
        self._since_poll = 0

    def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> Delivery:
        """Queue one record; its :class:`Delivery` completes on :meth:`flush` (or a later send).

        Raises:
            MessageSizeTooLargeError: the record is over ``message.max.bytes`` (``kafka.max_request_size``).
        """
        fut = Delivery(self._p)
        try:
            if headers or partition is not None:
                self._send_slow(fut, topic, value, key, headers, partition)
            else:
                try:
                    self._p.produce(topic, value, key, on_delivery=fut.report)
                except BufferError:
                    self._send_slow(fut, topic, value, key, headers, partition)
        except ck.KafkaException as exc:
            raise error_from(exc) from exc
        self._since_poll += 1
        if self._since_poll >= self.SERVE_EVERY:
            self._since_poll = 0
            self._p.poll(0)
        return fut

    def _send_slow(
        self,
        fut: Delivery,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: list[tuple[str, bytes]] | None,
        partition: int | None,
    ) -> None:
        """``produce`` with headers or a partition, waiting (serving delivery reports) while the local queue
        is full."""
        kwargs: dict[str, Any] = {"on_delivery": fut.report}
        if headers:
            kwargs["headers"] = headers
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                self._p.produce(topic, value, key, **kwargs)
                return
            except BufferError:  # the local queue is full: serve delivery reports until there is room
                self._p.poll(0.1)

    def flush(self, timeout: float | None = None) -> None:
        """Wait for every queued record's delivery report.

        Raises:
            KafkaTimeoutError: some were still undelivered after ``timeout`` seconds.
        """
        try:
            left = self._p.flush(-1 if timeout is None else timeout)
        except ck.KafkaException as exc:
            raise error_from(exc) from exc
        if left:
            raise kerrors.KafkaTimeoutError(f"{left} records still undelivered after {timeout} s")

    def close(self, timeout: float | None = None) -> None:
        """Deliver what is queued within ``timeout`` seconds; drop the rest (their futures fail)."""
        left = self._p.flush(-1 if timeout is None else timeout)
        if left:
            self._p.purge()
            self._p.poll(0)
