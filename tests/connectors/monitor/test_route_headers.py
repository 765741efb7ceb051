"""Every record a prediction produces carries the prediction's Kafka headers (a ``traceparent`` above all) but
its ``x-dlq-*``: to-label, accepted and dead letters alike, and a record refused by the broker too."""

from __future__ import annotations

from typing import Any

import orjson
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import MessageSizeTooLargeError

from connectors.kafka.delivery import Headers, refused_to_dead_letter
from connectors.monitor.route_records import Routed, route_records
from selector.config import Config, parse_config
from selector.routing import Router

CLASSES = ["ok", "scratch", "dent", "crack"]
TRACE = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def config(**sections: Any) -> Config:
    return parse_config(
        {
            "classes": CLASSES,
            "accept": {"default_threshold": 0.5},
            "budget": {"rate": 0.5},
            "input": {"max_record_bytes": 16_384},
            "kafka": {"max_request_size": 32_768},
            **sections,
        }
    )


def record(offset: int, value: bytes, headers: Headers) -> ConsumerRecord:
    return ConsumerRecord(
        "predictions", 0, -1, offset, 1_700_000_000_000, 0, None, value, headers, None, -1, -1, -1
    )


def prediction(rid: str, top: float = 0.9) -> bytes:
    rest = (1 - top) / 3
    return orjson.dumps({"id": rid, "probs": [top, rest, rest, rest]})


def route(cfg: Config, recs: list[ConsumerRecord]) -> Routed:
    return route_records(Router(cfg), 0, recs, cfg, 1_700_000_000.0, "now", {"version": "t"}, [])


def by_topic(routed: Routed, topic: str) -> list[tuple[bytes | None, Headers | None]]:
    return [(key, headers) for t, key, _, headers in routed.outgoing if t == topic]


class TestCarriedHeaders:
    def test_routed_records_carry_their_own_inputs_headers(self) -> None:
        """Each accepted or to-label record carries the headers of the prediction it came from, in their
        order; a prediction without headers gives a record without any."""
        cfg = config()
        recs = [
            record(
                i,
                prediction(f"p{i}", top),
                [("traceparent", TRACE[:-2] + b"%02d" % i), ("tenant", b"t%d" % i)],
            )
            for i, top in enumerate([0.99, 0.3, 0.99, 0.3])
        ] + [record(4, prediction("bare", 0.99), [])]
        routed = route(cfg, recs)
        out = by_topic(routed, "accepted") + by_topic(routed, "to-label")
        assert len(out) == 5  # every item decided, none skipped at this budget
        assert by_topic(routed, "accepted") and by_topic(routed, "to-label")
        for key, headers in out:
            if key == b"bare":
                assert headers is None
                continue
            i = int(key[1:])
            assert headers == [("traceparent", TRACE[:-2] + b"%02d" % i), ("tenant", b"t%d" % i)]

    def test_dead_letters_keep_their_own_headers_then_carry_the_inputs_but_not_its_old_x_dlq(self) -> None:
        """A dead letter's x-dlq-* come first and are its own; the input's traceparent follows; an input that
        is itself a replayed dead letter does not pass its old x-dlq-* on."""
        cfg = config()
        replayed: Headers = [("x-dlq-reason", b"old_reason"), ("traceparent", TRACE), ("X-DLQ-STAGE", b"old")]
        routed = route(cfg, [record(7, b"not json", replayed)])
        ((_, headers),) = by_topic(routed, "dead-letter")
        assert headers is not None
        names = [name for name, _ in headers]
        assert names[:8] == [
            "x-dlq-original-topic",
            "x-dlq-original-partition",
            "x-dlq-original-offset",
            "x-dlq-stage",
            "x-dlq-reason",
            "x-dlq-exception-message",
            "x-dlq-failed-at",
            "x-dlq-app-version",
        ]
        assert headers[8:] == [("traceparent", TRACE)]
        assert dict(headers)["x-dlq-reason"] == b"malformed_json"
        assert names.count("x-dlq-reason") == 1 and "X-DLQ-STAGE" not in names

    def test_headers_count_toward_the_output_size_limit(self) -> None:
        """An output that fits kafka.max_request_size alone but not with its input's headers is dead-lettered
        (output_too_large); headers too large for the dead letter are dropped from it, which says how many."""
        cfg = config()
        big: Headers = [("traceparent", TRACE), ("blob", b"x" * 33_000)]
        routed = route(
            cfg, [record(0, prediction("small"), [("traceparent", TRACE)]), record(1, prediction("big"), big)]
        )
        assert [key for key, _ in by_topic(routed, "accepted") + by_topic(routed, "to-label")] == [b"small"]
        ((_, headers),) = by_topic(routed, "dead-letter")
        assert headers is not None
        h = dict(headers)
        assert (h["x-dlq-reason"], h["x-dlq-dropped-headers"]) == (b"output_too_large", b"2")
        assert "blob" not in h and "traceparent" not in h
        letter = next(r for r in routed.outgoing if r[0] == "dead-letter")
        assert letter[2] == prediction("big")  # the bytes themselves still fit whole

    def test_a_record_the_broker_refuses_is_dead_lettered_with_the_headers_it_carried(self) -> None:
        """A refused to-label record's replacement has its x-dlq-* first, then the record's traceparent."""
        refused = refused_to_dead_letter("dead-letter", "now")
        new = refused(("to-label", b"k", b"v", [("traceparent", TRACE)]), MessageSizeTooLargeError("too big"))
        assert new is not None
        topic, _, value, headers = new
        assert (topic, value) == ("dead-letter", b"v")
        assert headers is not None and headers[-1] == ("traceparent", TRACE)
        assert dict(headers)["x-dlq-original-topic"] == b"to-label"
