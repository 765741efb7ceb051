"""The label loop's pure parts: the audits' confidences drift watches, read from to-label records."""

from __future__ import annotations

import orjson
from kafka.consumer.fetcher import ConsumerRecord

from connectors.labels.loop import audit_confidences


def record(offset: int, value: bytes | None) -> ConsumerRecord:
    return ConsumerRecord("to-label", 0, -1, offset, 0, 0, None, value, [], None, -1, -1, -1)


class TestAuditConfidences:
    def test_records_that_are_not_decisions_are_left_out(self) -> None:
        """Only audits with numeric probabilities give a confidence (their largest probability), in order;
        a query, a record that is not JSON, not an object, without probs, with probs of a wrong type, or a
        tombstone is left out, and nothing raises."""
        values = [
            orjson.dumps({"id": "a", "route": "audit", "probs": [0.25, 0.75]}),
            orjson.dumps({"id": "b", "route": "query", "probs": [0.5, 0.5]}),
            b"{not json",
            b'"audit"',
            orjson.dumps({"id": "c", "route": "audit"}),
            orjson.dumps({"id": "d", "route": "audit", "probs": ["0.9", 0.1]}),
            orjson.dumps({"id": "e", "route": "audit", "probs": 0.9}),
            orjson.dumps({"id": "f", "route": "audit", "probs": []}),
            None,
            orjson.dumps({"id": "g", "route": "audit", "probs": [0.6, 0.4]}),
        ]
        assert audit_confidences([record(k, v) for k, v in enumerate(values)]) == [0.75, 0.6]
