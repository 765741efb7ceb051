"""The demo's annotators on fake clients: what they answer, and what they survive."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from kafka.consumer.fetcher import ConsumerRecord

from connectors.demo.line import Annotators


class OnePoll:
    """A consumer that hands out one batch, then stops its reader (after the answers fell due)."""

    def __init__(self, values: list[bytes | None]) -> None:
        self.records = [
            ConsumerRecord("to-label", 0, -1, k, 0, 0, None, v, [], None, -1, -1, -1)
            for k, v in enumerate(values)
        ]
        self.reader: Annotators | None = None
        self.polls = 0

    def poll(self, timeout_ms: int = 0) -> dict[Any, list[ConsumerRecord]]:
        self.polls += 1
        if self.polls == 1:
            return {("to-label", 0): self.records}
        assert self.reader is not None
        self.reader.stop_event.set()
        return {}

    def close(self) -> None:
        pass


class Sent:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    def send(self, topic: str, key: bytes, value: bytes) -> None:
        self.sent.append((topic, key, value))

    def flush(self) -> None:
        pass


class TestAnnotators:
    def test_a_record_that_is_not_a_to_label_record_is_skipped(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Records that are not JSON, not objects, without an id, or tombstones are skipped with a log line;
        the item around them is answered."""
        values = [b"{not json", b"[1]", orjson.dumps({"route": "query"}), None, orjson.dumps({"id": "i-1"})]
        consumer, producer = OnePoll(values), Sent()
        annotators = Annotators(
            consumer,  # type: ignore[arg-type]
            producer,  # type: ignore[arg-type]
            "labels",
            {"i-1": 3},
            delay_s=0.0,
            error_rate=0.0,
            second_opinion=0.0,
        )
        consumer.reader = annotators
        annotators.run()
        assert [(t, k, orjson.loads(v)["label"]) for t, k, v in producer.sent] == [("labels", b"i-1", "3")]
        assert caplog.text.count("skipped a to-label record") == 4
