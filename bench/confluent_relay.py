"""The raw consume-and-produce relay of confluent-kafka: the floor the monitor on confluent-kafka is held to.

The same loop as :class:`bench.e2e.RawRelay`, with librdkafka's clients and the monitor's settings in
librdkafka's names: per batch of up to ``kafka.max_poll_records`` records (what has arrived, as
kafka-python's ``poll`` returns it), produce one output record per input (the input bytes, same key,
``acks=all``), flush, and commit synchronously.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from bench.e2e import RawRelay
from selector.config import Config

RAW_CONFLUENT = "raw confluent-kafka"


def consumer_settings(config: Config, group_id: str | None = None) -> dict[str, Any]:
    """The monitor's consumer settings (``kafka.*``) as librdkafka properties."""
    k = config.kafka
    return {
        "bootstrap.servers": k.bootstrap_servers,
        "group.id": group_id or k.group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": k.auto_offset_reset,
        "session.timeout.ms": k.session_timeout_ms,
        "heartbeat.interval.ms": k.heartbeat_interval_ms,
        "max.poll.interval.ms": k.max_poll_interval_ms,
        "fetch.wait.max.ms": k.fetch_max_wait_ms,
    }


def producer_settings(config: Config) -> dict[str, Any]:
    """The monitor's producer settings as librdkafka properties."""
    k = config.kafka
    return {
        "bootstrap.servers": k.bootstrap_servers,
        "acks": "all",
        "linger.ms": k.linger_ms,
        "batch.size": k.batch_size,
        "message.max.bytes": k.max_request_size,
        "compression.type": k.compression_type,
    }


def sent_ms(messages: list[Message]) -> np.ndarray:
    """The Kafka timestamps (epoch ms) of ``messages``."""
    return np.fromiter((m.timestamp()[1] for m in messages), dtype=np.float64, count=len(messages))


class ConfluentRelay(RawRelay):
    """Consume ``topics.predictions`` and produce every record unchanged to ``topics.accepted``: per batch,
    send all, flush, commit. Runs until ``expected`` records were relayed or it is stopped (the state and
    stop of :class:`bench.e2e.RawRelay`, its loop on librdkafka)."""

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned = {tp.partition for tp in partitions}

    def _on_revoke(self, _consumer: Consumer, _partitions: list[TopicPartition]) -> None:
        self.assigned = set()

    def run(self, duration_s: float | None = None) -> None:
        cfg = self.config
        consumer = Consumer(consumer_settings(cfg))
        producer = Producer(producer_settings(cfg))
        consumer.subscribe([cfg.topics.predictions], on_assign=self._on_assign, on_revoke=self._on_revoke)
        out_topic = cfg.topics.accepted
        batch = cfg.kafka.max_poll_records
        timeout_s = cfg.kafka.poll_timeout_ms / 1000.0
        end = None if duration_s is None else time.monotonic() + duration_s
        failed: list[str] = []

        def on_delivery(err: Any, _msg: Message) -> None:
            if err is not None:
                failed.append(str(err))

        try:
            while not self._stop.is_set() and (end is None or time.monotonic() < end):
                # consume(n, timeout) waits for n records or the timeout; kafka-python's poll returns what
                # has arrived: wait for one record, then take what is already fetched.
                messages = consumer.consume(1, timeout_s)
                if messages:
                    messages += consumer.consume(batch - 1, 0)
                messages = [m for m in messages if m.error() is None]
                if not messages:
                    continue
                self.progress.before()
                for m in messages:
                    producer.produce(out_topic, m.value(), m.key(), on_delivery=on_delivery)
                producer.flush()
                if failed:
                    raise KafkaException(f"{len(failed)} records not delivered: {failed[0]}")
                consumer.commit(asynchronous=False)
                self.handled += len(messages)
                self.outputs += len(messages)
                sent = sent_ms(messages) if self.progress.track_latency else None
                if self.progress.after_sent(sent, self.handled):
                    self._stop.set()
        finally:
            consumer.close()
            producer.flush(5)
