"""`selector labels`: the label loop, one process per deployment.

Each round it reads the labels topic (what annotators answered), the to-label topic (the decisions that asked
for labels) and, with pseudo-labels on, the accepted topic, without a consumer group, from where the dataset
store says it stopped, and ingests them into the store in one transaction
(:meth:`connectors.model.dataset.DatasetStore.ingest`), so a restart neither loses nor repeats a message. With
``quality.read_predictions`` it also counts every prediction of the predictions topic into the population
tallies (:mod:`connectors.labels.population`, its own transaction with that topic's positions), which the
prediction-powered and label-free estimates need. A label whose decision was not read yet (a lagging to-label
topic, a loop restarted between the two) is parked in the
store and joined when the decision arrives; one still unknown after ``dataset.unknown_label_ttl_s``, or an
invalid label message, goes to the dead-letter topic (stage ``labels``) with its original bytes and a reason;
nothing is dropped. Then it refreshes the
estimates
(:mod:`connectors.labels.status`, exported by :class:`connectors.labels.metrics.LabelLoopCollector`), records
label
latencies, and lets the :class:`connectors.labels.retraining.Retrainer` decide whether to ask for a retrain.

One process, not one per monitor instance: every instance's decisions must meet every annotator's labels.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import numpy as np
from kafka import KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError

from connectors.kafka.clients import make_producer, redact, secrets_of
from connectors.kafka.delivery import Outgoing, dead_letter, deliver, refused_to_dead_letter
from connectors.kafka.outage import close_clients, watch_outages
from connectors.kafka.topic_reader import TopicReader
from connectors.labels.population import Counted, Population, bucket_width, count_new
from connectors.labels.retraining import Retrainer
from connectors.labels.revote import request_votes, revote_consensus
from connectors.labels.status import LabelStatus, label_status
from connectors.model.dataset import DatasetStore, Ingested
from connectors.model.registry import ModelRegistry
from selector.config import Config
from selector.errors import DeliveryError, KafkaOutageError
from selector.messages.timestamps import rfc3339
from selector.messages.to_label import ToLabelRecord, read_to_label

log = logging.getLogger(__name__)

DEAD_LETTER_STAGE = "labels"
"""The ``x-dlq-stage`` of the label messages the loop dead-letters (unknown id, invalid)."""

LATENCY_BUCKETS = (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 43200.0, 86400.0,
                   172800.0, 345600.0, 604800.0)  # fmt: skip
"""Upper bounds (seconds) of the label latency histogram: one minute to one week."""


def audit_confidences(records: list[ConsumerRecord]) -> list[float]:
    """The confidence (largest probability) of every audited decision among to-label records, in order; a
    record that is not a decision of ours is left out (ingestion logs it, drift ignores it), and so is a
    decision sent again for another vote (its audit was counted the first time)."""
    read = (read_to_label(rec.value) for rec in records)
    return [
        c
        for r in read
        if isinstance(r, ToLabelRecord)
        and "revote" not in r.value
        and (c := r.audit_confidence()) is not None
    ]


class LabelLoop:
    """Ingest to-label and label messages into the dataset store until :meth:`request_stop`."""

    def __init__(
        self,
        config: Config,
        servers: str,
        store: DatasetStore | None = None,
        status_interval_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``clock``: the wall clock timing the wait of parked labels (``dataset.unknown_label_ttl_s``) and
        ending the sliding window of the estimates (``quality.window_s``)."""
        self.config = config
        self.clock = clock
        self.servers = servers
        self.store = store if store is not None else DatasetStore(config.dataset.path)
        self._stop = threading.Event()
        self.totals = {"decisions": 0, "labels": 0, "unknown": 0, "invalid": 0, "pseudo_labels": 0}
        self.predictions = {"counted": 0, "undecodable": 0}
        """records of the predictions topic read by this process: counted in the population, or not"""
        self.population = Population(self.store, config)
        self.parked = self.store.parked_count()
        """label messages waiting in the store for their decision"""
        self.rounds = 0
        """completed ingestion rounds (each reads both topics to their current end)"""
        self.latency_counts = np.zeros(len(LATENCY_BUCKETS) + 1, dtype=np.int64)
        """label latencies per bucket of LATENCY_BUCKETS (the last: above the largest bound)"""
        self.latency_sum = 0.0
        self.last_round = 0.0
        """wall-clock time the last round completed"""
        self.registry_current: str | None = ModelRegistry(config.retrain.registry).current()
        """the registry's promoted version, read at start and once a round (the collector reads this, not the
        disk)"""
        self.status_interval_s = status_interval_s
        self.status: LabelStatus
        """the store's counts and estimates, recomputed after rounds that stored something (and once a time
        bucket of the window as it slides), at most every ``status_interval_s`` and at most a tenth of the
        time (each recomputation reads the whole store: seconds for 100,000 decisions)"""
        self.revotes = 0
        """decisions sent again to the to-label topic for another vote"""
        self._revote_due = False
        self.refresh_status()
        self._secrets = secrets_of(config)
        self.retrainer: Retrainer | None = None
        """triggers and trainer runs (created by :meth:`run`)"""
        self.outage, self._probe = watch_outages(config, servers)

    def request_stop(self) -> None:
        self._stop.set()

    def run(self, duration_s: float | None = None, poll_s: float = 0.5) -> None:
        """Ingest round after round until stopped (or ``duration_s`` passed); while Kafka does not answer,
        wait (at most ``kafka.outage_deadline_s``).

        Raises:
            KafkaOutageError: the cluster stopped answering for ``kafka.outage_deadline_s``.
            DeliveryError: dead letters could not be delivered within it.
        """
        cfg = self.config
        topics = cfg.topics

        def open_reader(topic: str) -> TopicReader:  # from where the store says it stopped
            return TopicReader(cfg, self.servers, topic, self.store.positions(topic))

        to_label, labels = open_reader(topics.to_label), open_reader(topics.labels)
        # the pseudo-label sample rides on the accepted topic
        accepted = open_reader(topics.accepted) if cfg.dataset.pseudo_label_share > 0 else None
        predictions = open_reader(topics.predictions) if cfg.quality.read_predictions else None
        readers = [r for r in (to_label, labels, accepted, predictions) if r is not None]
        producer = make_producer(cfg, self.servers)
        self.retrainer = Retrainer(cfg, self.servers, self.store, time.time())
        ends = None if duration_s is None else time.monotonic() + duration_s
        self._probe.start()
        cut_short = False
        try:
            while not self._stop.is_set() and (ends is None or time.monotonic() < ends):
                self.outage.raise_if_expired(time.time())
                if not self.outage.reachable:  # the readers resume from their positions when it answers
                    self._stop.wait(poll_s)
                    continue
                # labels first, then decisions: an annotator answers a to-label record it read, so the
                # decision a label read now answers is usually read below; one that is not (a lagging
                # to-label topic) waits parked in the store until it is
                try:
                    answers = labels.read_new(until_end=True, timeout_s=5.0)
                    decisions = to_label.read_new(until_end=True, timeout_s=5.0)
                    # dead letters are confirmed before the round's positions commit, so a crash loses none
                    done = self.store.ingest(
                        decisions,
                        answers,
                        cfg.classes,
                        before_commit=lambda result: self._dead_letter(producer, result),
                        accepted=accepted.read_new(until_end=True, timeout_s=5.0) if accepted else (),
                        now=self.clock(),
                        unknown_label_ttl_s=cfg.dataset.unknown_label_ttl_s,
                    )
                    if predictions is not None:
                        self._count_population(count_new(predictions, self.population, self.clock()))
                except KafkaError as exc:
                    if not exc.retriable:
                        raise
                    # the cluster stopped answering mid-round: what was read is not stored, so the readers
                    # start again from the store's positions
                    log.warning("label round interrupted (%s); read again from the stored positions", exc)
                    for r in readers:
                        r.close()
                    to_label, labels = open_reader(topics.to_label), open_reader(topics.labels)
                    accepted = open_reader(topics.accepted) if accepted is not None else None
                    predictions = open_reader(topics.predictions) if predictions is not None else None
                    readers = [r for r in (to_label, labels, accepted, predictions) if r is not None]
                    continue
                self._count(done)
                st = self.status
                self.retrainer.step(
                    producer,
                    time.time(),
                    new_labels=done.labels,
                    audit_confidences=audit_confidences(decisions),
                    audits=(st.audits, st.audit_errors),
                )
                if self._revote_due:
                    self._request_votes(producer)
                self.read_registry()
                self.rounds += 1
                self.last_round = time.time()
                self._stop.wait(poll_s)
        except (DeliveryError, KafkaOutageError):
            cut_short = True
            raise
        finally:
            self._probe.close()
            for reader in readers:
                reader.close()
            close_clients(None, producer, cut_short=cut_short or not self.outage.reachable)
            self.retrainer.close()

    def refresh_status(self) -> None:
        """Recompute :attr:`status` from the store now."""
        started = time.monotonic()
        self.status = label_status(self.store, self.config, self.clock())
        self._status_at = time.monotonic()
        self._status_cost = self._status_at - started
        self._stale = False
        self._revote_due = self.config.dataset.max_revotes_per_round > 0 and self.status.weak_items > 0

    def _request_votes(self, producer: KafkaProducer) -> None:
        """Ask annotators again about the items whose consensus is weak (once per status refresh)."""
        self._revote_due = False
        now = time.time()
        chosen = revote_consensus(self.store, self.config, self.store.book())
        sent = request_votes(
            self.store, producer, self.config, chosen, now, deadline_s=self.outage.remaining_s(now)
        )
        self.revotes += sent

    def _dead_letter(self, producer: KafkaProducer, done: Ingested) -> None:
        if not done.unknown and not done.invalid:
            return
        at = rfc3339(time.time())
        topic, limit = self.config.topics.dead_letter, self.config.kafka.max_request_size
        wait = self.config.dataset.unknown_label_ttl_s
        unknown = f"no decision sent this id for labeling within {wait:g} s (dataset.unknown_label_ttl_s)"
        outgoing: list[Outgoing] = [
            dead_letter(topic, rec, DEAD_LETTER_STAGE, "unknown_id", unknown, at, [], limit)
            for rec in done.unknown
        ]
        outgoing += [
            dead_letter(topic, rec, DEAD_LETTER_STAGE, reason, message, at, self._secrets, limit)
            for rec, reason, message in done.invalid
        ]
        deliver(
            producer,
            outgoing,
            self.outage.remaining_s(time.time()),
            lambda exc: f"dead letters of the label loop undeliverable: {redact(str(exc), self._secrets)}",
            refused_to_dead_letter(topic, at, limit),  # a dead letter the broker refuses is cut, not resent
        )

    def read_registry(self) -> None:
        """Note the registry's promoted version (once a round; metrics and status read the note)."""
        self.registry_current = ModelRegistry(self.config.retrain.registry).current()

    def _count_population(self, done: Counted) -> None:
        self.predictions["counted"] += done.items
        self.predictions["undecodable"] += sum(done.rejected.values())
        self._stale |= bool(done.items)
        if done.rejected:
            log.debug("predictions not counted in the population: %s", done.rejected)

    def _count(self, done: Ingested) -> None:
        self.totals["decisions"] += done.decisions
        self.totals["labels"] += done.labels
        self.totals["unknown"] += len(done.unknown)
        self.totals["invalid"] += len(done.invalid)
        self.totals["pseudo_labels"] += done.pseudo_labels
        self.parked = done.parked
        if done.latencies:
            lat = np.asarray(done.latencies, dtype=np.float64)
            self.latency_counts += np.bincount(
                np.searchsorted(LATENCY_BUCKETS, lat, side="left"), minlength=len(LATENCY_BUCKETS) + 1
            )
            self.latency_sum += float(lat.sum())
        self._stale |= bool(done.decisions or done.labels)
        age = time.monotonic() - self._status_at
        # the window slides even when nothing new arrives: recompute at least once a bucket width
        due = age >= max(self.status_interval_s, 9.0 * self._status_cost)
        if due and (self._stale or age >= bucket_width(self.config)):
            self.refresh_status()
        if done.decisions or done.labels or done.unknown or done.invalid:
            log.debug(
                "ingested %d decisions and %d labels; dead-lettered %d unknown and %d invalid label "
                "messages; %d parked awaiting their decision",
                done.decisions,
                done.labels,
                len(done.unknown),
                len(done.invalid),
                done.parked,
            )
