"""Dead letters always fit the producer, and a record refused for good is replaced, never resent forever."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from connectors.kafka.delivery import (
    MAX_KEPT_KEY_BYTES,
    Outgoing,
    dead_letter,
    deliver,
    record_size,
    refused_to_dead_letter,
)
from selector.errors import DeliveryError

LIMIT = 100_000


def record(value: bytes | None, key: bytes | None = b"k") -> ConsumerRecord:
    return ConsumerRecord("predictions", 3, -1, 41, 0, 0, key, value, [], None, -1, -1, -1)


def letter(value: bytes | None, key: bytes | None = b"k", limit: int = LIMIT) -> Outgoing:
    return dead_letter("dlq", record(value, key), "decode", "oversize", "too big", "now", [], limit)


class TestDeadLetter:
    def test_a_record_that_fits_is_copied_unchanged_without_size_headers(self) -> None:
        """Key and value are the original bytes; no truncation headers."""
        _, key, value, headers = letter(b"x" * 1000)
        names = [k for k, _ in headers or []]
        assert (key, value) == (b"k", b"x" * 1000)
        assert "x-dlq-original-size" not in names

    def test_a_record_too_large_is_truncated_to_fit_with_its_size_and_hash(self) -> None:
        """The dead letter fits max_request_size; headers give the original size and SHA-256."""
        original = bytes(range(256)) * 1000  # 256,000 bytes
        _, key, value, headers = letter(original)
        h = dict(headers or [])
        assert record_size(key, value, headers) <= LIMIT
        assert value is not None and original.startswith(value) and len(value) > LIMIT // 2
        assert h["x-dlq-original-size"] == b"256000"
        assert h["x-dlq-original-sha256"] == hashlib.sha256(original).hexdigest().encode()
        assert h["x-dlq-original-offset"] == b"41" and h["x-dlq-reason"] == b"oversize"

    def test_a_huge_key_is_cut_too(self) -> None:
        """A key that alone would not fit is kept to its first bytes, with its own size and hash."""
        key_in = b"q" * (2 * LIMIT)
        _, key, value, headers = letter(b"v" * 10, key=key_in)
        h = dict(headers or [])
        assert key == key_in[:MAX_KEPT_KEY_BYTES] and record_size(key, value, headers) <= LIMIT
        assert h["x-dlq-original-key-size"] == str(2 * LIMIT).encode()

    def test_a_tombstone_without_a_key_gets_an_empty_value(self) -> None:
        """Kafka takes no record with neither key nor value: the dead letter carries b''."""
        _, key, value, _ = letter(None, key=None)
        assert (key, value) == (None, b"")

    def test_the_message_header_is_bounded_in_bytes(self) -> None:
        """A long message of multi-byte characters stays within 2,000 bytes of valid UTF-8."""
        rec = dead_letter("dlq", record(b"{}"), "decode", "bad_field", "é" * 5000, "now", [], LIMIT)
        message = dict(rec[3] or [])["x-dlq-exception-message"]
        assert len(message) <= 2000 and message.decode() == "é" * 1000


class FakeProducer:
    """Refuses records larger than ``refuse_over`` bytes as the producer would; fails others
    ``transient`` times with a retriable error first."""

    def __init__(self, refuse_over: int, *, transient: int = 0, raise_on_send: bool = True) -> None:
        self.refuse_over = refuse_over
        self.transient = transient
        self.raise_on_send = raise_on_send
        self.delivered: list[Outgoing] = []

    def send(self, topic: str, key: bytes | None, value: bytes | None, headers: Any) -> Any:
        size = record_size(key, value, headers)
        if size > self.refuse_over and self.raise_on_send:
            raise MessageSizeTooLargeError(f"The message is {size} bytes")
        fut = FakeFuture()
        if size > self.refuse_over:
            fut.exception = MessageSizeTooLargeError("broker: too large")
        elif self.transient:
            self.transient -= 1
            fut.exception = KafkaTimeoutError("not yet")
        else:
            self.delivered.append((topic, key, value, headers))
        return fut

    def flush(self, timeout: float | None = None) -> None:
        return None


class FakeFuture:
    def __init__(self) -> None:
        self.exception: Exception | None = None

    def failed(self) -> bool:
        return self.exception is not None


class TestDeliver:
    @pytest.mark.parametrize("raise_on_send", [True, False], ids=["producer", "broker"])
    def test_an_output_refused_for_good_is_dead_lettered_in_its_place(self, raise_on_send: bool) -> None:
        """The refused record goes to the dead-letter topic (stage produce, truncated to fit); the others
        are delivered; nothing raises."""
        producer = FakeProducer(refuse_over=LIMIT, raise_on_send=raise_on_send)
        big: Outgoing = ("to-label", b"id-1", b"x" * (2 * LIMIT), None)
        small: Outgoing = ("accepted", b"id-2", b"{}", None)
        refused = refused_to_dead_letter("dlq", "now", LIMIT)
        replaced = deliver(producer, [big, small], 5.0, str, refused)
        assert [(t, k) for t, k, _, _ in producer.delivered] == [("accepted", b"id-2"), ("dlq", b"id-1")]
        (dlq,) = replaced
        h = dict(dlq[3] or [])
        assert h["x-dlq-stage"] == b"produce" and h["x-dlq-original-topic"] == b"to-label"
        assert h["x-dlq-original-size"] == str(2 * LIMIT).encode()

    def test_a_dead_letter_the_broker_refuses_is_cut_to_a_last_resort_then_given_up(self) -> None:
        """A broker limit below the producer's: the dead letter is retried small, then dropped (logged),
        and delivery returns instead of resending until the deadline."""
        producer = FakeProducer(refuse_over=600, raise_on_send=False)
        refused = refused_to_dead_letter("dlq", "now", LIMIT)
        first = letter(b"y" * 50_000)
        deliver(producer, [first], 5.0, str, refused)
        assert producer.delivered == []  # the 1 KiB last resort is still over this broker's 600 bytes
        producer = FakeProducer(refuse_over=5_000, raise_on_send=False)
        deliver(producer, [first], 5.0, str, refused)
        ((_, _, value, headers),) = producer.delivered
        assert value is not None and 0 < len(value) <= 1024
        assert set(value) == {ord("y")} and dict(headers or [])["x-dlq-original-size"] == b"50000"

    def test_without_a_fallback_a_refused_record_raises_at_once(self) -> None:
        """No dead-letter fallback (e.g. state snapshots): a DeliveryError naming the cause, no waiting."""
        producer = FakeProducer(refuse_over=10)
        with pytest.raises(DeliveryError, match="too large"):
            deliver(producer, [("s", b"k", b"x" * 100, None)], 60.0, lambda e: f"too large: {e}")

    def test_retriable_failures_are_resent(self) -> None:
        """A transient failure is resent and delivered."""
        producer = FakeProducer(refuse_over=LIMIT, transient=1)
        deliver(producer, [("a", b"k", b"v", None)], 30.0, str)
        assert producer.delivered == [("a", b"k", b"v", None)]
