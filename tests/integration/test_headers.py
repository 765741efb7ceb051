"""On the real broker, a prediction's Kafka headers (its W3C ``traceparent`` above all) reach every record the
monitor produces for it: accepted, to-label and dead letters (after their own ``x-dlq-*``)."""

from __future__ import annotations

import orjson
import pytest
from kafka import KafkaProducer

from connectors.kafka.broker import EmbeddedBroker
from connectors.monitor.loop import Monitor
from tests.integration.conftest import RunningMonitors
from tests.integration.streams import config_for, create_topics, read_topic, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.usefixtures("kafka_client")]

CLASSES = ["ok", "scratch", "dent", "crack"]
N = 40


def traceparent(i: int) -> bytes:
    return b"00-%032x-%016x-01" % (0x4BF92F3577B34DA6A3CE929D0E0E4736 + i, 0x00F067AA0BA902B7 + i)


class TestHeadersOnTheBroker:
    def test_a_predictions_traceparent_reaches_every_record_it_produces(
        self, broker: EmbeddedBroker, unique: str, monitors: RunningMonitors
    ) -> None:
        """40 predictions, half confident and half not, and one malformed, each with its own traceparent and
        a tenant header: each output carries its own input's two headers, in order; the dead letter carries
        its x-dlq-* first, then them, and none of the stale x-dlq-reason its input had."""
        servers = broker.bootstrap_servers
        cfg = config_for(servers, unique, budget={"rate": 0.3})
        create_topics(cfg)
        producer = KafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=5)
        for i in range(N):
            probs = [0.97, 0.01, 0.01, 0.01] if i % 2 else [0.4, 0.3, 0.2, 0.1]
            producer.send(
                cfg.topics.predictions,
                key=f"p{i}".encode(),
                value=orjson.dumps({"id": f"p{i}", "probs": probs}),
                headers=[("traceparent", traceparent(i)), ("tenant", b"line-%d" % i)],
            )
        stale = [("traceparent", traceparent(N)), ("x-dlq-reason", b"stale")]
        producer.send(cfg.topics.predictions, key=b"bad", value=b'{"id": "bad", "probs": [0.5', headers=stale)
        producer.flush()
        producer.close()

        monitor = monitors.start(Monitor(cfg, servers))
        stats = monitor.router.stats
        wait_for(lambda: stats.total >= N and stats.dead_letters["decode"] >= 1, 40, "every input decided")
        accepted = read_topic(servers, cfg.topics.accepted, expect=stats.items["accept"], idle_s=0.5)
        to_label = read_topic(
            servers, cfg.topics.to_label, expect=stats.items["query"] + stats.items["audit"], idle_s=0.5
        )
        assert accepted and to_label
        for m in accepted + to_label:
            i = int(orjson.loads(m.value or b"{}")["id"][1:])
            assert m.headers == {"traceparent": traceparent(i), "tenant": b"line-%d" % i}, m.topic

        (dead,) = read_topic(servers, cfg.topics.dead_letter, expect=1, idle_s=0.5)
        assert dead.headers["traceparent"] == traceparent(N)
        assert dead.headers["x-dlq-reason"] == b"malformed_json"
        names = list(dead.headers)
        assert names.index("traceparent") > names.index("x-dlq-app-version")
