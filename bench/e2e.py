"""End-to-end throughput through the broker: the selector against plain kafka-python consume-and-produce.

Both read the same pre-produced records from their own 4-partition topic with the same client settings
(:func:`connectors.kafka.clients.make_consumer` / :func:`make_producer` of the same config):

- **raw** (:class:`RawRelay`): a consumer group member that, per polled batch, produces one output record per
  input (the input bytes, same key), flushes, and commits — the least any at-least-once consume-and-produce
  service does;
- **selector** (:class:`BenchMonitor`): :class:`connectors.monitor.loop.Monitor`, unchanged, until every
input is
  decided or dead-lettered.

Each runs against a fresh embedded broker holding only its input, and is timed from the moment its first
poll returned records to the moment the last record was handled (raw: flushed and committed; selector:
delivered and committed to the budget state), so the ~3 s consumer group join is excluded from both.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.consumer.subscription_state import ConsumerRebalanceListener

from bench import workload
from bench.cpu import CpuMeter
from connectors.kafka.broker import EmbeddedBroker
from connectors.kafka.clients import make_consumer, make_producer
from connectors.monitor.loop import Monitor
from selector.config import Config

Polled = dict[TopicPartition, list[ConsumerRecord]]

RAW = "raw kafka-python"
SELECTOR = "selector monitor"


@dataclass(frozen=True)
class Throughput:
    """A timed consume-and-produce run."""

    name: str
    items: int
    outputs: int
    seconds: float
    """first polled record to last handled record"""
    join_s: float
    """start (connect, join the group) to first polled record"""
    cpu: CpuMeter
    """CPU used from the first polled record to the last handled one"""

    @property
    def rate(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0


class Progress:
    """What both consumers record: first and last handled batch, and per batch (done ms, send times ms)."""

    def __init__(self, expected: int | None, track_latency: bool) -> None:
        self.expected = expected
        self.track_latency = track_latency
        self.first: float | None = None
        self.last: float | None = None
        self.done: list[tuple[float, np.ndarray]] = []
        self.cpu = CpuMeter()
        """CPU used from the first polled batch to the one that completed ``expected``"""

    def before(self) -> None:
        if self.first is None:
            self.cpu.start()
            self.first = time.perf_counter()

    def after(self, polled: Polled, handled: int) -> bool:
        """Record a handled batch; True once ``expected`` records were handled."""
        sent = None
        if self.track_latency:
            sent = np.fromiter((r.timestamp for recs in polled.values() for r in recs), dtype=np.float64)
        return self.after_sent(sent, handled)

    def after_sent(self, sent: np.ndarray | None, handled: int) -> bool:
        """Record a handled batch whose records were sent at ``sent`` (epoch ms; None when latency is not
        tracked); True once ``expected`` records were handled."""
        if self.track_latency and sent is not None:
            self.done.append((time.time() * 1000.0, sent))
        if self.expected is not None and self.last is None and handled >= self.expected:
            self.last = time.perf_counter()
            self.cpu.stop()
            return True
        return False


class _Assignment(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, relay: RawRelay) -> None:
        self.relay = relay

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.relay.assigned = set()

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.relay.assigned = {tp.partition for tp in assigned}


class RawRelay:
    """Consume ``topics.predictions`` and produce every record unchanged to ``topics.accepted``: per polled
    batch, send all, flush, commit. Runs until ``expected`` records were relayed or it is stopped."""

    def __init__(self, config: Config, expected: int | None = None, track_latency: bool = False) -> None:
        self.config = config
        self.progress = Progress(expected, track_latency)
        self.handled = 0
        self.outputs = 0
        self.assigned: set[int] = set()
        self._stop = threading.Event()

    def request_stop(self) -> None:
        self._stop.set()

    def run(self, duration_s: float | None = None) -> None:
        cfg = self.config
        servers = cfg.kafka.bootstrap_servers
        consumer = make_consumer(cfg, servers)
        producer = make_producer(cfg, servers)
        consumer.subscribe([cfg.topics.predictions], listener=_Assignment(self))
        out_topic = cfg.topics.accepted
        end = None if duration_s is None else time.monotonic() + duration_s
        try:
            while not self._stop.is_set() and (end is None or time.monotonic() < end):
                polled: Polled = consumer.poll(timeout_ms=cfg.kafka.poll_timeout_ms)
                if not polled:
                    continue
                self.progress.before()
                for records in polled.values():
                    for r in records:
                        producer.send(out_topic, key=r.key, value=r.value)
                    self.handled += len(records)
                    self.outputs += len(records)
                producer.flush()
                consumer.commit()
                if self.progress.after(polled, self.handled):
                    self._stop.set()
        finally:
            consumer.close(autocommit=False)
            producer.close(timeout=5)


class BenchMonitor(Monitor):
    """The monitor, unchanged, plus the progress record of :class:`RawRelay`; it stops itself once
    ``expected`` records were handled (decided or dead-lettered)."""

    def __init__(self, config: Config, expected: int | None = None, track_latency: bool = False) -> None:
        super().__init__(config, config.kafka.bootstrap_servers)
        self.progress = Progress(expected, track_latency)

    @property
    def handled(self) -> int:
        stats = self.router.stats
        return stats.total + sum(stats.dead_letters.values())

    @property
    def outputs(self) -> int:
        stats = self.router.stats
        return (
            stats.items["accept"] + stats.items["query"] + stats.items["audit"] + stats.dead_letters["decode"]
        )

    def process(self, polled: Polled) -> None:
        self.progress.before()
        super().process(polled)
        if self.progress.after(polled, self.handled):
            self.request_stop()


def make(
    name: str, config: Config, expected: int | None = None, track_latency: bool = False
) -> RawRelay | BenchMonitor:
    """The consumer called ``name`` (:data:`RAW` or :data:`SELECTOR`)."""
    kind = RawRelay if name == RAW else BenchMonitor
    return kind(config, expected, track_latency)


def throughput(name: str, records: list[tuple[bytes, bytes]], timeout_s: float = 300.0) -> Throughput:
    """Pre-produce ``records`` to a fresh broker, then run the consumer called ``name`` over them, timed."""
    with EmbeddedBroker() as broker:
        config = workload.bench_config(servers=broker.bootstrap_servers, unique=name.replace(" ", "-"))
        workload.create_topics(config)
        acked = workload.produce(broker.bootstrap_servers, [config.topics.predictions], records)
        if acked != len(records):
            raise RuntimeError(f"pre-producing: {acked} of {len(records)} records acknowledged")
        return timed(name, make(name, config, expected=len(records)), len(records), timeout_s)


def timed(name: str, consumer: RawRelay | BenchMonitor, n: int, timeout_s: float = 300.0) -> Throughput:
    """Run a consumer over ``n`` pre-produced records and time it."""
    started = time.perf_counter()
    consumer.run(duration_s=timeout_s)
    progress = consumer.progress
    if progress.first is None or progress.last is None:
        raise RuntimeError(f"{name} handled {consumer.handled} of {n} records within {timeout_s} s")
    seconds = progress.last - progress.first
    return Throughput(
        name, consumer.handled, consumer.outputs, seconds, progress.first - started, progress.cpu
    )
