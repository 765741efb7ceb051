"""serve-model scores a polled batch so that a record failing at any stage is dead-lettered with its stage
and reason, and every other record is predicted as if it had not been there."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from kafka.consumer.fetcher import ConsumerRecord
from prometheus_client import CollectorRegistry

from connectors.model.serve_records import score_records
from connectors.model.serving import ModelServer, ServeCollector, serve_part
from selector.config import Config, parse_config
from tests.connectors.kafka.test_delivery import FakeProducer

CLASSES = ["ok", "scratch", "dent", "crack"]
DIM = 3
BOOM, NAN = 666.0, 777.0
"""An embedding whose first number is BOOM makes the model raise on any batch holding it; NAN makes the
model answer NaN probabilities for that row."""


class FragileModel:
    """A softmax of the embedding's first number times the class index, with the two deliberate failures
    above; a committee of two identical members."""

    version = "v7"
    members = 2

    def __init__(self, embedding_dim: int = DIM) -> None:
        self.embedding_dim = embedding_dim

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if (x[:, 0] == BOOM).any():
            raise FloatingPointError("the head overflowed")
        logits = np.minimum(x[:, :1], 1.0) * np.arange(len(CLASSES))
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        probs[x[:, 0] == NAN] = np.nan
        return probs, np.stack([probs, probs], axis=1)


def config(dim: int = DIM, **kafka: Any) -> Config:
    return parse_config(
        {
            "classes": CLASSES,
            "input": {"max_record_bytes": 16_384, "embedding_dim": dim},
            "kafka": {"bootstrap_servers": "127.0.0.1:9", "max_request_size": 40_000, **kafka},
        }
    )


def feature(rid: str, first: float = 0.5, dim: int = DIM, **extra: Any) -> bytes:
    return orjson.dumps({"id": rid, "embedding": [first] + [0.1] * (dim - 1), **extra})


def records(values: list[bytes]) -> list[ConsumerRecord]:
    return [
        ConsumerRecord("features", 0, -1, 10 + i, 1_700_000_000_000, 0, None, v, [], None, -1, -1, -1)
        for i, v in enumerate(values)
    ]


def headers(out: tuple[str, Any, Any, Any]) -> dict[str, bytes]:
    return dict(out[3] or [])


class TestScoreRecords:
    def test_a_record_the_model_raises_on_is_dead_lettered_and_the_others_predicted(self) -> None:
        """The model raises on the batch because of one row: that row is dead-lettered (stage score, reason
        score_error, its original bytes); the other four get the probabilities the batch would have had."""
        values = [feature(f"f-{i}", 0.1 * i) for i in range(5)]
        values[2] = feature("boom", BOOM)
        model = FragileModel()
        scored = score_records(model, records(values), config(), "now", [])
        dead = [o for o in scored.outgoing if o[0] == "dead-letter"]
        preds = [orjson.loads(o[2]) for o in scored.outgoing if o[0] == "predictions"]
        assert [(o[1], o[2]) for o in dead] == [(None, values[2])]
        h = headers(dead[0])
        assert (h["x-dlq-stage"], h["x-dlq-reason"], h["x-dlq-original-offset"]) == (
            b"score",
            b"score_error",
            b"12",
        )
        assert b"FloatingPointError: the head overflowed" in h["x-dlq-exception-message"]
        assert [p["id"] for p in preds] == ["f-0", "f-1", "f-3", "f-4"] and scored.predictions == 4
        alone, _ = FragileModel().predict(np.array([[0.3, 0.1, 0.1]], dtype=np.float32))
        assert np.allclose(preds[2]["probs"], alone[0], atol=1e-6)
        assert scored.dead_letters == {"score": ["score_error"]}

    def test_a_prediction_carries_its_feature_records_headers_but_x_dlq(self) -> None:
        """A feature record's headers but x-dlq-* (a traceparent) reach its prediction and its dead letter."""
        recs = records([feature("a"), feature("boom", BOOM)])
        for rec in recs:
            rec.headers.extend([("traceparent", b"00-" + rec.value[7:8] * 32), ("x-dlq-reason", b"old")])
        scored = score_records(FragileModel(), recs, config(), "now", [])
        (pred,) = [o for o in scored.outgoing if o[0] == "predictions"]
        (dead,) = [o for o in scored.outgoing if o[0] == "dead-letter"]
        assert pred[3] == [("traceparent", b"00-" + b"a" * 32)]
        assert dead[3] is not None and dead[3][-1] == ("traceparent", b"00-" + b"b" * 32)
        assert headers(dead)["x-dlq-reason"] == b"score_error"

    def test_non_finite_probabilities_are_dead_lettered_not_published(self) -> None:
        values = [feature("a"), feature("nan", NAN), feature("b")]
        scored = score_records(FragileModel(), records(values), config(), "now", [])
        assert scored.dead_letters == {"score": ["non_finite_output"]}
        assert [o[1] for o in scored.outgoing if o[0] == "predictions"] == [b"a", b"b"]

    def test_a_model_that_fails_only_on_the_whole_batch_dead_letters_the_batch(self) -> None:
        """No row fails alone: the batch's failure is every row's, and nothing is published half-scored."""

        class BatchOnly(FragileModel):
            def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
                if len(x) > 1:
                    raise MemoryError("batch too large")
                return super().predict(x)

        scored = score_records(BatchOnly(), records([feature("a"), feature("b")]), config(), "now", [])
        assert scored.predictions == 0 and scored.dead_letters == {"score": ["score_error"] * 2}

    def test_a_prediction_over_the_request_size_is_dead_lettered_at_produce(self) -> None:
        """An embedding of 3,000 short numbers (12 kB, under input.max_record_bytes) is published as float32
        reprs six times longer, over kafka.max_request_size: the feature record is dead-lettered with its
        original bytes, reason output_too_large; one of zeros is published."""
        cfg = config(dim=3000, max_request_size=32_768)
        big = feature("big", 0.1, dim=3000)
        assert len(big) <= cfg.input.max_record_bytes
        model = FragileModel(embedding_dim=3000)
        zeros = orjson.dumps({"id": "a", "embedding": [0.5] + [0.0] * 2999})  # "0.0" stays "0.0"
        scored = score_records(model, records([zeros, big]), cfg, "now", [])
        assert scored.dead_letters == {"produce": ["output_too_large"]}
        dead = next(o for o in scored.outgoing if o[0] == "dead-letter")
        assert dead[2] == big and b"kafka.max_request_size" in headers(dead)["x-dlq-exception-message"]
        assert scored.predictions == 1

    def test_decoder_rejects_keep_their_stage(self) -> None:
        scored = score_records(FragileModel(), records([b"{", feature("a")]), config(), "now", [])
        assert scored.dead_letters == {"serve": ["malformed_json"]} and scored.predictions == 1


class TestModelServerHandle:
    def test_one_bad_record_is_counted_by_stage_and_the_batch_delivered(self) -> None:
        """ModelServer.handle delivers four predictions and one dead letter; the counters, the metric and
        the status say which stage failed."""
        server = ModelServer(config(), "127.0.0.1:9")
        server.model = FragileModel()  # type: ignore[assignment]
        values = [feature(f"f-{i}") for i in range(4)] + [feature("boom", BOOM)]
        producer = FakeProducer(refuse_over=10**9)
        server.handle(producer, records(values))
        assert sorted(t for t, *_ in producer.delivered) == ["dead-letter"] + ["predictions"] * 4
        assert server.stats.items == 4
        assert server.stats.dead_letters == {"serve": 0, "score": 1, "encode": 0, "produce": 0}
        registry = CollectorRegistry()
        registry.register(ServeCollector(server))
        for stage, n in server.stats.dead_letters.items():
            assert registry.get_sample_value("selector_dead_letters_total", {"stage": stage}) == n
        status = serve_part(server).status()
        assert status["dead_letters"] == 1 and status["dead_letters_by_stage"]["score"] == 1

    @pytest.mark.parametrize("raise_on_send", [True, False], ids=["producer", "broker"])
    def test_a_prediction_the_broker_refuses_counts_as_a_produce_dead_letter(
        self, raise_on_send: bool
    ) -> None:
        server = ModelServer(config(), "127.0.0.1:9")
        server.model = FragileModel()  # type: ignore[assignment]
        """The producer (or the broker) refuses a 5 kB prediction: it is dead-lettered in its place and
        counted under produce, not among the items published."""
        producer = FakeProducer(refuse_over=3000, raise_on_send=raise_on_send)
        server.handle(producer, records([feature("a"), feature("big", payload="x" * 5000)]))
        assert server.stats.items == 1 and server.stats.dead_letters["produce"] == 1
