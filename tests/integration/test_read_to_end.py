"""Reading a topic "to its end" reads every record, on a broker whose ListOffsets answer is not the end.

The embedded broker (Tansu 0.6) answers ``end_offsets()`` with the first offset of a partition's last write
batch, so a reader that stops there misses the rest of that batch (issue 12 saw 1,505 of 2,000 records). Every
reader that reads to the end uses the high watermark of its fetch responses instead: the state, labels,
to-label and models readers (:class:`connectors.kafka.topic_reader.TopicReader`) and ``selector replay
--topic``
(:func:`connectors.offline.recorded.topic_chunks`).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from connectors.kafka.broker import EmbeddedBroker
from connectors.kafka.topic_reader import TopicReader
from connectors.offline.recorded import topic_chunks
from selector.config import Config
from tests.integration.streams import config_for, create_topics

pytestmark = [pytest.mark.broker, pytest.mark.usefixtures("kafka_client")]

PARTITIONS = 4


def write_in_many_batches(servers: str, topic: str, start: int, n: int) -> None:
    """``n`` records over every partition, flushed in uneven groups so each partition gets many write
    batches of several records."""
    producer = KafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=20, batch_size=4096)
    for i in range(start, start + n):
        producer.send(topic, key=b"%d" % i, value=b'{"id": "r-%d", "probs": [1, 0, 0, 0]}' % i)
        if i % 97 == 0:
            producer.flush()
    producer.flush()
    producer.close()


@pytest.fixture
def load(broker: EmbeddedBroker, unique: str) -> Iterator[None]:
    """Another producer keeps the broker busy on another topic while the test reads."""
    stop = threading.Event()

    def run() -> None:
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=5)
        while not stop.is_set():
            for _ in range(200):
                producer.send(f"load-{unique}", value=b"x" * 200)
            producer.flush()
        producer.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=10)


def list_offsets_end(config: Config, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=config.kafka.bootstrap_servers, group_id=None)
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return sum(consumer.end_offsets(tps).values())
    finally:
        consumer.close()


@pytest.mark.usefixtures("load")
def test_every_record_of_every_partition_is_read_to_the_end(broker: EmbeddedBroker, unique: str) -> None:
    """4,000 records in many batches over 4 partitions, under load: the broker's ListOffsets end is short,
    yet TopicReader.read_all, a later read_new and replay's topic_chunks each read every record once."""
    servers = broker.bootstrap_servers
    cfg = config_for(servers, unique, kafka={"topic_partitions": PARTITIONS})
    create_topics(cfg)
    topic = cfg.topics.labels
    write_in_many_batches(servers, topic, 0, 4000)
    assert list_offsets_end(cfg, topic) < 4000, (
        "the broker's end_offsets() is now exact: nothing to show here"
    )

    reader = TopicReader(cfg, servers, topic)
    try:
        first = reader.read_all()
        assert sorted(r.value for r in first) == sorted(
            b'{"id": "r-%d", "probs": [1, 0, 0, 0]}' % i for i in range(4000)
        )
        assert len(Counter(r.partition for r in first)) == PARTITIONS
        write_in_many_batches(servers, topic, 4000, 1000)
        later = reader.read_new(timeout_s=30.0, until_end=True)
        assert sorted(int(r.key) for r in later) == list(range(4000, 5000))
    finally:
        reader.close()

    replayed = [v for chunk in topic_chunks(cfg, topic) for v in chunk.values]
    assert len(replayed) == 5000 and len(set(replayed)) == 5000
