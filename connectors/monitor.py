"""The monitor: consume predictions, decide, produce routed records, commit — at least once.

One loop in one thread. Each polled batch is handled completely (decided, delivered, committed in memory)
before the next poll, so nothing slow runs inside it except waiting for the broker's delivery acks; metrics
are served from another thread that only reads counters.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

import selector
from connectors.kafka_io import connect_admin, ensure_topics, make_consumer, make_producer, redact, secrets_of
from selector.config import Config
from selector.decode import Batch, decode_batch
from selector.errors import DeliveryError
from selector.records import encode_outputs
from selector.routing import Decisions, Router

log = logging.getLogger(__name__)

BATCH_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Headers = list[tuple[str, bytes]]
Outgoing = tuple[str, bytes | None, bytes | None, Headers | None]  # topic, key, value, headers


@dataclass
class MonitorStats:
    """What the shell measures: batch durations, consumer lag, progress (read by the metrics collector)."""

    batches: int = 0
    records: int = 0
    batch_bucket_counts: list[int] = field(default_factory=lambda: [0] * len(BATCH_SECONDS_BUCKETS))
    batch_seconds_sum: float = 0.0
    lag: dict[int, int] = field(default_factory=dict)
    last_progress: float = 0.0
    """wall-clock time of the last completed loop iteration (for liveness)"""

    def observe_batch(self, seconds: float, records: int) -> None:
        self.batches += 1
        self.records += records
        self.batch_seconds_sum += seconds
        for i, bound in enumerate(BATCH_SECONDS_BUCKETS):
            if seconds <= bound:
                self.batch_bucket_counts[i] += 1
                break


def rfc3339(t: float) -> str:
    """UTC RFC 3339 text with milliseconds."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.monitor.on_revoked(revoked)

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.monitor.on_assigned(assigned)


class Monitor:
    """The long-running monitor. Build it (no network), then :meth:`run` until :meth:`request_stop`."""

    def __init__(self, config: Config, servers: str, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.servers = servers
        self.clock = clock
        self.router = Router(config)
        self.stats = MonitorStats()
        self.selector_info = {"version": selector.__version__, "config_hash": config.config_hash()}
        self._stop = threading.Event()
        self._delivered: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._last_commit = 0.0
        self._secrets = secrets_of(config)
        self._consumer: KafkaConsumer | None = None
        self._producer: KafkaProducer | None = None
        self.assigned: set[int] = set()

    def request_stop(self) -> None:
        """Ask the loop to finish the batch in hand, commit and return (safe from a signal handler)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, duration_s: float | None = None) -> None:
        """Connect, then consume until stopped or ``duration_s`` elapsed; drain and commit on the way out.

        Raises:
            BrokerUnavailableError: the cluster was unreachable past ``kafka.connect_deadline_s``.
            DeliveryError: outputs could not be delivered within ``kafka.outage_deadline_s``.
        """
        cfg = self.config
        admin = connect_admin(cfg, self.servers)
        try:
            if cfg.kafka.create_topics:
                ensure_topics(admin, cfg)
        finally:
            admin.close()
        self._consumer = make_consumer(cfg, self.servers)
        self._producer = make_producer(cfg, self.servers)
        self._consumer.subscribe([cfg.topics.predictions], listener=_Rebalance(self))
        end = None if duration_s is None else time.monotonic() + duration_s
        log.info("monitor consuming %r as group %r", cfg.topics.predictions, cfg.kafka.group_id)
        try:
            while not self._stop.is_set() and (end is None or time.monotonic() < end):
                polled = self._consumer.poll(timeout_ms=cfg.kafka.poll_timeout_ms)
                if polled:
                    self.process(polled)
                self.commit_offsets()
                self._update_lag()
                self.stats.last_progress = self.clock()
        finally:
            self._shutdown()

    def on_revoked(self, revoked: list[TopicPartition]) -> None:
        """Commit what was delivered, then forget the revoked partitions (their new owner continues)."""
        self.commit_offsets(force=True)
        for tp in revoked:
            self._delivered.pop(tp, None)
            self._committed.pop(tp, None)

    def on_assigned(self, assigned: list[TopicPartition]) -> None:
        """Tell the router which partitions this instance owns now (cap shares follow)."""
        consumer = self._consumer
        assert consumer is not None
        parts = consumer.partitions_for_topic(self.config.topics.predictions) or {
            tp.partition for tp in assigned
        }
        self.assigned = {tp.partition for tp in assigned}
        self.router.assign(self.assigned, max(len(parts), 1))
        self.stats.lag = {p: v for p, v in self.stats.lag.items() if p in self.assigned}
        log.info("assigned partitions %s of %d", sorted(self.assigned), len(parts))

    def process(self, polled: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """Handle one polled batch, at least once, in this order:

        1. decode, decide and encode each partition's records (nothing is mutated yet);
        2. produce every routed record — dead letters, to-label, accepted — keyed by item id;
        3. confirm delivery of every one (resending failures until ``kafka.outage_deadline_s``);
        4. commit the decisions: advance each partition's budget state and the counters;
        5. mark the offsets delivered; they are committed to Kafka by :meth:`commit_offsets`.

        A crash before 4 re-decides the same records the same way on restart (duplicates share their id).
        """
        started = time.perf_counter()
        now = self.clock()
        decided_at = rfc3339(now)
        outgoing: list[Outgoing] = []
        plans: list[tuple[TopicPartition, Decisions, list[str], int]] = []
        n_records = 0
        for tp, records in polled.items():
            n_records += len(records)
            batch = decode_batch(
                [r.value for r in records],
                np.fromiter((r.timestamp for r in records), dtype=np.int64, count=len(records)),
                n_classes=len(self.config.classes),
                max_record_bytes=self.config.input.max_record_bytes,
                prob_tolerance=self.config.input.prob_tolerance,
            )
            outgoing.extend(self._dead_letters(tp, records, batch, decided_at))
            decisions = self.router.decide(tp.partition, batch, np.full(len(batch), now))
            out = encode_outputs(batch, decisions, self.config.classes, decided_at, self.selector_info)
            outgoing.extend((self.config.topics.to_label, k, v, None) for k, v in out.to_label)
            outgoing.extend((self.config.topics.accepted, k, v, None) for k, v in out.accepted)
            plans.append((tp, decisions, [r.reason for r in batch.rejects], records[-1].offset + 1))
        self._deliver(outgoing)
        for tp, decisions, reasons, next_offset in plans:
            self.router.commit(tp.partition, decisions)
            self.router.stats.record_dead_letters("decode", reasons)
            self._delivered[tp] = next_offset
        self.stats.observe_batch(time.perf_counter() - started, n_records)

    def _dead_letters(
        self, tp: TopicPartition, records: list[ConsumerRecord], batch: Batch, failed_at: str
    ) -> list[Outgoing]:
        out: list[Outgoing] = []
        for rej in batch.rejects:
            rec = records[rej.position]
            headers: Headers = [
                ("x-dlq-original-topic", tp.topic.encode()),
                ("x-dlq-original-partition", str(tp.partition).encode()),
                ("x-dlq-original-offset", str(rec.offset).encode()),
                ("x-dlq-stage", b"decode"),
                ("x-dlq-reason", rej.reason.encode()),
                ("x-dlq-exception-message", redact(rej.message, self._secrets)[:2000].encode()),
                ("x-dlq-failed-at", failed_at.encode()),
                ("x-dlq-app-version", selector.__version__.encode()),
            ]
            out.append((self.config.topics.dead_letter, rec.key, rec.value, headers))
        return out

    def _deliver(self, outgoing: list[Outgoing]) -> None:
        """Produce and wait for every ack; resend what failed, with backoff, until the outage deadline."""
        producer = self._producer
        assert producer is not None
        deadline = time.monotonic() + self.config.kafka.outage_deadline_s
        pending = outgoing
        delay = 0.5
        while pending:
            futures = [
                (rec, producer.send(rec[0], key=rec[1], value=rec[2], headers=rec[3])) for rec in pending
            ]
            while True:
                try:
                    producer.flush(timeout=min(10.0, max(0.1, deadline - time.monotonic())))
                    break
                except KafkaError as exc:
                    if time.monotonic() >= deadline:
                        raise DeliveryError(self._outage_message(exc)) from exc
                    log.warning("delivery still pending (%s); waiting", exc)
            failed = [rec for rec, fut in futures if fut.failed()]
            if not failed:
                return
            cause = next(f for _, f in futures if f.failed()).exception
            if time.monotonic() + delay >= deadline:
                raise DeliveryError(self._outage_message(cause))
            log.warning(
                "%d of %d records not delivered (%s); resending in %.1f s",
                len(failed),
                len(pending),
                cause,
                delay,
            )
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
            pending = failed

    def _outage_message(self, exc: object) -> str:
        return (
            f"could not deliver routed records to Kafka at {self.servers!r} within "
            f"'kafka.outage_deadline_s' ({self.config.kafka.outage_deadline_s:g} s): {exc}; "
            "no offsets were committed "
            "for them, so they will be decided again after a restart"
        )

    def commit_offsets(self, force: bool = False) -> None:
        """Commit the delivered offsets to Kafka, at most every ``kafka.commit_interval_s`` unless forced."""
        consumer = self._consumer
        if consumer is None:
            return
        due = {tp: off for tp, off in self._delivered.items() if self._committed.get(tp) != off}
        if not due or (
            not force and time.monotonic() - self._last_commit < self.config.kafka.commit_interval_s
        ):
            return
        consumer.commit({tp: OffsetAndMetadata(off, "", -1) for tp, off in due.items()})
        self._committed.update(due)
        self._last_commit = time.monotonic()

    def _update_lag(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        for tp, next_offset in self._delivered.items():
            if tp.partition not in self.assigned:
                continue
            high = consumer.highwater(tp)
            if high is not None:
                self.stats.lag[tp.partition] = max(0, high - next_offset)

    def _shutdown(self) -> None:
        consumer, producer = self._consumer, self._producer
        try:
            if consumer is not None:
                try:
                    self.commit_offsets(force=True)
                except KafkaError as exc:
                    log.warning("final offset commit failed (%s); the last records will be re-decided", exc)
                consumer.close(autocommit=False)
        finally:
            if producer is not None:
                producer.close(timeout=5)
            self._consumer = self._producer = None
            log.info("monitor stopped after %d records in %d batches", self.stats.records, self.stats.batches)
