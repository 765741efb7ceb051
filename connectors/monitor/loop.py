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
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

import selector
from connectors.kafka.clients import (
    commit_in_rebalance,
    connect_admin,
    make_consumer,
    make_producer,
    prepare_topics,
    secrets_of,
)
from connectors.kafka.delivery import Outgoing, Refused, deliver, refused_to_dead_letter
from connectors.kafka.outage import close_clients, commit_offsets, watch_outages
from connectors.kafka.state_topic import encode_snapshot, label_ids, latest_snapshots, state_key
from connectors.kafka.topic_reader import TopicReader
from connectors.monitor.cap_watch import CapWatch
from connectors.monitor.checkpoint import Checkpoint
from connectors.monitor.route_records import route_records
from connectors.settings.hot_reload import ConfigWatcher, config_diff, read_for_reload, reloadable
from selector.config import Config
from selector.errors import ConfigError, DeliveryError, KafkaOutageError
from selector.messages.timestamps import rfc3339
from selector.routing import Decisions, Router
from selector.stats import batch_seconds_counts, observe_seconds

log = logging.getLogger(__name__)


@dataclass
class MonitorStats:
    """What the shell measures: batch durations, consumer lag, progress (read by the metrics collector)."""

    batches: int = 0
    records: int = 0
    batch_bucket_counts: list[int] = field(default_factory=batch_seconds_counts)
    batch_seconds_sum: float = 0.0
    lag: dict[int, int] = field(default_factory=dict)
    last_progress: float = 0.0
    """wall-clock time of the last completed loop iteration (for liveness)"""

    labels_received: int = 0
    bad_labels: int = 0
    reloads: dict[str, int] = field(default_factory=lambda: {"applied": 0, "rejected": 0})

    def observe_batch(self, seconds: float, records: int) -> None:
        self.batches += 1
        self.records += records
        self.batch_seconds_sum += seconds
        observe_seconds(self.batch_bucket_counts, seconds)


class _Rebalance(AsyncConsumerRebalanceListener):  # type: ignore[misc]
    """Runs on the consumer's network thread, where kafka-python 3 forbids blocking consumer calls."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        offsets = self.monitor.snapshot_for_commit(revoked)
        consumer = self.monitor.consumer
        if offsets and consumer is not None:
            try:
                await commit_in_rebalance(consumer, offsets)
            except KafkaError as exc:
                log.warning("offset commit on revocation failed (%s); the new owner re-decides them", exc)
            else:
                self.monitor.mark_committed(offsets)
        self.monitor.on_revoked(revoked)

    async def on_partitions_lost(self, lost: list[TopicPartition]) -> None:
        # the group evicted this member (an outage, a stall): another member may own these partitions and
        # their state now, so nothing is snapshotted or committed for them; what was delivered and not
        # committed is decided again by the next owner (duplicates share their id)
        log.warning(
            "partitions %s lost (this member left the group): rejoining", sorted(tp.partition for tp in lost)
        )
        self.monitor.on_revoked(lost)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.monitor.on_assigned(assigned)


class Monitor:
    """The long-running monitor. Build it (no network), then :meth:`run` until :meth:`request_stop`."""

    def __init__(
        self,
        config: Config,
        servers: str,
        *,
        clock: Callable[[], float] = time.time,
        config_path: Path | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self._watcher = ConfigWatcher(config_path) if config_path is not None else None
        self._state_reader: TopicReader | None = None
        self._labels_reader: TopicReader | None = None
        self._to_restore: list[TopicPartition] = []
        self._resume_at: dict[TopicPartition, int] = {}
        """records below these offsets are covered by a restored snapshot (delivered): not decided again"""
        self.servers = servers
        self.clock = clock
        self.router = Router(config)
        self.stats = MonitorStats()
        self.selector_info = {"version": selector.__version__, "config_hash": config.config_hash()}
        self._stop = threading.Event()
        self.checkpoint = Checkpoint()
        self._last_commit = 0.0
        self._secrets = secrets_of(config)
        self._consumer: KafkaConsumer | None = None
        self._producer: KafkaProducer | None = None
        self.assigned: set[int] = set()
        self.outage, self._probe = watch_outages(config, servers)
        self.caps = CapWatch()
        """says so in the log when a hard cap pauses labeling, and when it lifts"""
        self._aborted = False
        """set when the run ends on an outage: nothing more is delivered, snapshotted or committed"""

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
            KafkaOutageError: the cluster stopped answering for ``kafka.outage_deadline_s``.
        """
        cfg = self.config
        if cfg.kafka.create_topics:
            prepare_topics(cfg, self.servers)
        else:
            connect_admin(cfg, self.servers).close()  # fail fast (exit 3) if the cluster is unreachable
        self._probe.start()
        self._producer = make_producer(cfg, self.servers)
        self._state_reader = TopicReader(cfg, self.servers, cfg.topics.state)
        self._labels_reader = TopicReader(cfg, self.servers, cfg.topics.labels)
        self._read_labels(until_end=True)
        self._consumer = make_consumer(cfg, self.servers)
        self._consumer.subscribe([cfg.topics.predictions], listener=_Rebalance(self))
        end = None if duration_s is None else time.monotonic() + duration_s
        log.info("monitor consuming %r as group %r", cfg.topics.predictions, cfg.kafka.group_id)
        try:
            while not self._stop.is_set() and (end is None or time.monotonic() < end):
                self.outage.raise_if_expired(self.clock())
                polled = self._consumer.poll(timeout_ms=cfg.kafka.poll_timeout_ms)
                if self._to_restore and not self._restore_state(polled):
                    polled = {}  # sought back: decided once the state is restored
                if polled:
                    self.process(polled)
                if self.outage.reachable:  # else the outputs wait, delivered, for the cluster to answer
                    self.commit_offsets()
                    self._read_labels()
                self._update_lag()
                self._maybe_reload()
                self.caps.check(self.router, self.clock())
                self.stats.last_progress = self.clock()
        except (DeliveryError, KafkaOutageError):
            self._aborted = True
            raise
        finally:
            self._shutdown()

    @property
    def consumer(self) -> KafkaConsumer | None:
        return self._consumer

    def on_revoked(self, revoked: list[TopicPartition]) -> None:
        """Forget the revoked partitions (their state was snapshotted; the new owner continues)."""
        self._to_restore = [tp for tp in self._to_restore if tp not in revoked]
        self.checkpoint.forget(revoked)
        for tp in revoked:
            self._resume_at.pop(tp, None)
            self.router.forget(tp.partition)

    def on_assigned(self, assigned: list[TopicPartition]) -> None:
        """Tell the router which partitions this instance owns now (cap shares follow)."""
        consumer = self._consumer
        assert consumer is not None
        parts = consumer.partitions_for_topic(self.config.topics.predictions) or {
            tp.partition for tp in assigned
        }
        self.assigned = {tp.partition for tp in assigned}
        self.router.assign(self.assigned, max(len(parts), 1))
        # restored by the loop right after this poll returns, before any record is decided (no pause/resume:
        # kafka-python 3.0.12 may stop fetching a partition for good after a pause and a resume)
        self._to_restore = list(assigned)
        self.stats.lag = {p: v for p, v in self.stats.lag.items() if p in self.assigned}
        log.info("assigned partitions %s of %d", sorted(self.assigned), len(parts))

    def process(self, polled: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """Handle one polled batch, at least once, in this order:

        1. decode, decide and encode each partition's records (nothing is mutated yet); a record that fails
           at any stage becomes a dead letter and the rest are decided without it
           (:func:`connectors.monitor.route_records.route_records`);
        2. produce every routed record — dead letters, to-label, accepted — keyed by item id (one the
           broker refuses for good is dead-lettered in its place);
        3. confirm delivery of every one (resending failures until ``kafka.outage_deadline_s``);
        4. commit the decisions: advance each partition's budget state and the counters;
        5. mark the offsets delivered; they are committed to Kafka by :meth:`commit_offsets`.

        A crash before 4 re-decides the same records the same way on restart (duplicates share their id).
        """
        started = time.perf_counter()
        now = self.clock()
        decided_at = rfc3339(now)
        outgoing: list[Outgoing] = []
        plans: list[tuple[TopicPartition, Decisions, dict[str, list[str]], int]] = []
        n_records = 0
        for tp, fetched in polled.items():
            skip_below = self._resume_at.get(tp)
            records = fetched if skip_below is None else [r for r in fetched if r.offset >= skip_below]
            if not records:
                continue
            n_records += len(records)
            routed = route_records(
                self.router,
                tp.partition,
                records,
                self.config,
                now,
                decided_at,
                self.selector_info,
                self._secrets,
            )
            outgoing.extend(routed.outgoing)
            plans.append((tp, routed.decisions, routed.dead_letters, records[-1].offset + 1))
        refused = refused_to_dead_letter(
            self.config.topics.dead_letter, decided_at, self.config.kafka.max_request_size
        )
        replaced = self._deliver(outgoing, refused)
        for tp, decisions, dead, next_offset in plans:
            self.router.commit(tp.partition, decisions)
            for previous, version in decisions.model_switches:
                log.info(
                    "partition %d: predictions of model %s follow %s: its score windows start afresh",
                    tp.partition,
                    version,
                    previous,
                )
            for stage, reasons in dead.items():
                self.router.stats.record_dead_letters(stage, reasons)
            self.checkpoint.delivered_to(tp, next_offset)
        outputs_refused = sum(("x-dlq-stage", b"produce") in (r[3] or []) for r in replaced)
        if outputs_refused:
            self.router.stats.record_dead_letters("produce", ["refused"] * outputs_refused)
        self.stats.observe_batch(time.perf_counter() - started, n_records)

    def _deliver(self, outgoing: list[Outgoing], refused: Refused | None = None) -> list[Outgoing]:
        assert self._producer is not None
        # an outage that began before this delivery counts against the deadline
        return deliver(
            self._producer, outgoing, self.outage.remaining_s(self.clock()), self._outage_message, refused
        )

    def _outage_message(self, exc: object) -> str:
        return (
            f"could not deliver routed records to Kafka at {self.servers!r} within "
            f"'kafka.outage_deadline_s' ({self.config.kafka.outage_deadline_s:g} s): {exc}; "
            "no offsets were committed for them, so they will be decided again after a restart"
        )

    def commit_offsets(self, force: bool = False) -> None:
        """Commit the delivered offsets to Kafka, at most every ``kafka.commit_interval_s`` unless forced."""
        consumer = self._consumer
        if consumer is None:
            return
        if not force and time.monotonic() - self._last_commit < self.config.kafka.commit_interval_s:
            return
        offsets = self.snapshot_for_commit(list(self.checkpoint.delivered))
        if offsets and commit_offsets(consumer, offsets, min(10.0, self.outage.remaining_s(self.clock()))):
            self.mark_committed(offsets)
        self._last_commit = time.monotonic()

    def snapshot_for_commit(self, tps: list[TopicPartition]) -> dict[TopicPartition, OffsetAndMetadata]:
        """Persist the state of partitions with delivered, uncommitted offsets; return the offsets to commit.

        Order (at least once): the outputs of these offsets were delivered; now the state snapshot is
        produced and confirmed; only then may the caller commit the offsets. Nothing after an outage ended
        the run.
        """
        if self._aborted:
            return {}
        due = self.checkpoint.due(tps)
        if not due:
            return {}
        topic, at = self.config.topics.state, rfc3339(self.clock())
        self._deliver(
            [
                (
                    topic,
                    self._state_key(tp.partition),
                    encode_snapshot(off, at, self.selector_info, self.router.snapshot(tp.partition)),
                    None,
                )
                for tp, off in due.items()
            ]
        )
        return {tp: OffsetAndMetadata(off, "", -1) for tp, off in due.items()}

    def mark_committed(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        """Record offsets as committed to Kafka."""
        self.checkpoint.committed_to({tp: om.offset for tp, om in offsets.items()})

    def _state_key(self, partition: int) -> bytes:
        return state_key(self.config.kafka.group_id, self.config.topics.predictions, partition)

    def _restore_state(self, polled: dict[TopicPartition, list[ConsumerRecord]]) -> bool:
        """Adopt the latest snapshot of each newly assigned partition; skip records it already covers.

        Snapshots are written after the outputs of their records were delivered and before the offsets are
        committed, so a snapshot ahead of the committed offset means those records were delivered: records
        below the snapshot's offset are dropped instead of decided (and spent on) twice.

        Returns False when the cluster did not answer (an outage right after the assignment): the partitions
        of ``polled`` are sought back to their first record and the restore is tried again next time.
        """
        reader, consumer = self._state_reader, self._consumer
        assigned, self._to_restore = self._to_restore, []
        if reader is None or consumer is None or not assigned:
            return True
        try:
            latest = latest_snapshots(reader.read_all())
            committed_at = {tp: consumer.committed(tp, timeout_ms=30_000) for tp in assigned}
        except KafkaError as exc:
            log.warning("state restore interrupted (%s); retried at the next poll", exc)
            self._to_restore = assigned
            for tp, records in polled.items():
                if records:
                    consumer.seek(tp, records[0].offset)
            return False
        for tp in assigned:
            snap = latest.get(self._state_key(tp.partition))
            if snap is None:
                continue
            self.router.restore(tp.partition, snap["state"])
            committed = committed_at[tp]
            if committed is None or snap["offset"] > committed:
                # no seek: records this poll already fetched would come again; they are dropped instead
                self._resume_at[tp] = snap["offset"]
            log.info(
                "partition %d: restored state at offset %d (committed %s)",
                tp.partition,
                snap["offset"],
                committed,
            )
        return True

    def _read_labels(self, until_end: bool = False) -> None:
        """Labels that arrived clear their items from the pending set (any label, update or retraction)."""
        reader = self._labels_reader
        if reader is None:
            return
        ids, bad = label_ids(reader.read_new(timeout_s=10.0 if until_end else 0.0, until_end=until_end))
        self.stats.bad_labels += bad
        if ids:
            self.stats.labels_received += len(ids)
            self.router.labels_received(ids)

    def request_reload(self) -> None:
        """Reload the configuration file at the next loop iteration (safe from a signal handler)."""
        if self._watcher is not None:
            self._watcher.request()

    def _maybe_reload(self) -> None:
        if self._watcher is not None and self._watcher.due(time.monotonic()):
            self.reload()

    def reload(self, new: Config | None = None) -> bool:
        """Apply a new configuration (default: re-read the file) without a restart, keeping every state.

        Thresholds, budgets, shares, scoring, input limits and pending settings take effect at once;
        connection, topic and metrics settings need a restart and keep their running values (with a
        warning). An invalid file, or a change of classes, is rejected and the running configuration stays.
        """
        try:
            if new is None:
                if self.config_path is None:
                    return False
                new = read_for_reload(self.config_path)
            effective, warnings = reloadable(self.config, new)
        except ConfigError as exc:
            self.stats.reloads["rejected"] += 1
            log.error("configuration reload rejected, keeping the running one: %s", exc)
            return False
        for warning in warnings:
            log.warning("%s", warning)
        changes = config_diff(self.config, effective)
        if not changes:
            return True
        self.config = effective
        self.router.configure(effective)
        self.selector_info = {"version": selector.__version__, "config_hash": effective.config_hash()}
        self.stats.reloads["applied"] += 1
        log.info("configuration reloaded: %s", "; ".join(changes))
        return True

    def _update_lag(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        for tp, next_offset in self.checkpoint:
            if tp.partition not in self.assigned:
                continue
            high = consumer.highwater(tp)
            if high is not None:
                self.stats.lag[tp.partition] = max(0, high - next_offset)

    def _shutdown(self) -> None:
        """Commit what was delivered and close the clients; after an outage (or during one, on SIGTERM)
        nothing more is committed and nothing waits for the cluster."""
        consumer, producer = self._consumer, self._producer
        cut_short = self._aborted or not self.outage.reachable
        self._aborted = cut_short
        try:
            if consumer is not None and not cut_short:
                try:
                    self.commit_offsets(force=True)
                except (KafkaError, DeliveryError) as exc:
                    log.warning("final offset commit failed (%s); the last records will be re-decided", exc)
                    self._aborted = cut_short = True
        finally:
            close_clients(consumer, producer, cut_short=cut_short)
            self._probe.close()
            for reader in (self._state_reader, self._labels_reader):
                if reader is not None:
                    reader.close()
            self._consumer = self._producer = None
            self._state_reader = self._labels_reader = None
            log.info("monitor stopped after %d records in %d batches", self.stats.records, self.stats.batches)
