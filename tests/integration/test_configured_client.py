"""Every Kafka client of the product follows ``kafka.client``: the outage probe, the replay of a recorded
topic and the demo's simulated annotators use the configured library, and behave the same on either."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from connectors.demo.line import CLASSES, Annotators
from connectors.demo.run import annotators_consumer
from connectors.kafka import clients
from connectors.kafka.broker import EmbeddedBroker, free_port
from connectors.kafka.clients import connect_admin, make_producer
from connectors.kafka.outage import BrokerProbe, OutageWatch
from connectors.offline import recorded
from connectors.offline.recorded import ReplayUsageError, topic_chunks
from selector.errors import BrokerUnavailableError
from tests.integration.streams import config_for, create_topics, produce, read_topic, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.usefixtures("kafka_client")]


def admin_class(client: str) -> Any:
    if client == "confluent-kafka":
        from connectors.kafka.confluent import ConfluentAdmin  # noqa: PLC0415 (an optional dependency)

        return ConfluentAdmin
    from kafka import KafkaAdminClient  # noqa: PLC0415

    return KafkaAdminClient


def consumer_class(client: str) -> Any:
    if client == "confluent-kafka":
        from connectors.kafka.confluent import ConfluentConsumer  # noqa: PLC0415 (an optional dependency)

        return ConfluentConsumer
    from kafka import KafkaConsumer  # noqa: PLC0415

    return KafkaConsumer


class TestOutageProbe:
    def test_the_probe_asks_with_the_configured_client_and_sees_the_broker_go_and_return(
        self, kafka_client: str, unique: str
    ) -> None:
        """The probe's admin client is of the configured library; it reports a broker that answers, one
        outage once the broker is stopped, and the end of it once a broker listens on that port again."""
        port = free_port()
        broker = EmbeddedBroker(port=port).start()
        try:
            servers = broker.bootstrap_servers
            cfg = config_for(servers, unique, kafka={"outage_deadline_s": 4})
            watch = OutageWatch(servers, 4.0)
            probe = BrokerProbe(cfg, servers, watch)
            probe.probe_once()
            assert watch.reachable and watch.outages == 0
            assert isinstance(probe._admin, admin_class(kafka_client))

            broker.stop()
            probe.probe_once()
            assert not watch.reachable and watch.outages == 1
            assert watch.status()["unreachable_since"] is not None

            broker = EmbeddedBroker(port=port).start()

            def answered() -> bool:
                probe.probe_once()
                return watch.reachable

            wait_for(answered, 30, "the probe to see the broker again")
            assert watch.outages == 1
            assert isinstance(probe._admin, admin_class(kafka_client))
        finally:
            broker.stop()


class TestReplayReader:
    def test_every_record_of_a_recorded_topic_is_read_by_the_configured_client(
        self, kafka_client: str, broker: EmbeddedBroker, unique: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A topic of 3 partitions is read whole, each record once with its partition and offset, by a
        reader of the configured library."""
        servers = broker.bootstrap_servers
        cfg = config_for(servers, unique, kafka={"topic_partitions": 3})
        create_topics(cfg)
        keys = [f"r{i}".encode() for i in range(600)]
        values = [orjson.dumps({"id": k.decode(), "n": i}) for i, k in enumerate(keys)]
        placed = produce(servers, cfg.topics.predictions, list(zip(keys, values, strict=True)))
        assert len({p for p, _ in placed}) == 3
        readers: list[Any] = []

        def spy(config: Any, at: str) -> Any:
            readers.append(clients.make_reader(config, at))
            return readers[-1]

        monkeypatch.setattr(recorded, "make_reader", spy)
        chunks = list(topic_chunks(cfg, cfg.topics.predictions, chunk_records=100))

        (reader,) = readers
        assert isinstance(reader, consumer_class(kafka_client))
        read = [(o["partition"], o["offset"]) for c in chunks for o in c.origin]
        assert sorted(read) == sorted(placed)
        assert sorted(v for c in chunks for v in c.values if v is not None) == sorted(values)

    def test_a_missing_topic_is_a_usage_error_naming_it_and_is_not_created(
        self, broker: EmbeddedBroker, unique: str
    ) -> None:
        servers = broker.bootstrap_servers
        cfg = config_for(servers, unique)
        with pytest.raises(ReplayUsageError, match=f"topic 'absent-{unique}' does not exist"):
            list(topic_chunks(cfg, f"absent-{unique}"))
        admin = connect_admin(cfg, servers)
        try:
            assert f"absent-{unique}" not in admin.list_topics()
        finally:
            admin.close()

    def test_an_unreachable_cluster_is_broker_unavailable(self, unique: str) -> None:
        """Nothing listens: BrokerUnavailableError once ``kafka.connect_deadline_s`` passed (not a missing
        topic, which is what librdkafka's reader alone would report)."""
        servers = f"127.0.0.1:{free_port()}"
        cfg = config_for(servers, unique, kafka={"connect_deadline_s": 1})
        with pytest.raises(BrokerUnavailableError, match=servers):
            list(topic_chunks(cfg, "predictions"))


class TestDemoAnnotators:
    def test_the_annotators_answer_every_to_label_item_through_the_configured_client(
        self, kafka_client: str, broker: EmbeddedBroker, unique: str
    ) -> None:
        """The demo's annotators read the to-label topic with a consumer of the configured library, in a
        group of their own, from its first record, and write one label per item (no errors, no second
        opinions asked for here)."""
        servers = broker.bootstrap_servers
        cfg = config_for(servers, unique)
        create_topics(cfg)
        truth = {f"item-{i}": i % len(CLASSES) for i in range(30)}
        produce(servers, cfg.topics.to_label, [(k.encode(), orjson.dumps({"id": k})) for k in truth])
        consumer = annotators_consumer(cfg, servers)
        assert isinstance(consumer, consumer_class(kafka_client))
        producer = make_producer(cfg, servers)
        annotators = Annotators(
            consumer, producer, cfg.topics.labels, truth, delay_s=0.05, error_rate=0.0, second_opinion=0.0
        )
        annotators.start()
        try:
            labels = read_topic(servers, cfg.topics.labels, expect=len(truth), timeout_s=60)
        finally:
            annotators.stop_event.set()
            annotators.join(timeout=30)
            producer.close(timeout=5)
        answers = [orjson.loads(m.value or b"") for m in labels]
        answered = {a["id"]: a["label"] for a in answers}
        assert len(labels) == len(truth)
        assert answered == {k: CLASSES[y] for k, y in truth.items()}
