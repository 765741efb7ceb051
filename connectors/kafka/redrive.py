"""Listing the dead-letter topic and re-driving chosen dead letters to their original topic, once.

A re-driven record is the dead letter's key and value on the topic named by its ``x-dlq-original-topic``
header, with the original record's headers that the dead letter carries (every ``x-dlq-*`` one replaced by
``x-redriven-from-topic``, ``-partition``, ``-offset`` and ``x-redriven-at``). What was re-driven is kept in a
small compacted topic beside the dead-letter topic (:func:`redriven_topic`), one marker per record keyed by
its identity; see :mod:`connectors.kafka.dead_letter_records` for which dead letters a marker covers.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import TopicAlreadyExistsError

from connectors.kafka.clients import connect_admin, make_producer, make_reader
from connectors.kafka.dead_letter_records import (
    Covers,
    DeadLetter,
    Group,
    Selection,
    marker,
    read_marker,
    redriven_record,
    tally,
    verdict,
)
from connectors.kafka.delivery import Outgoing, deliver
from selector.config import Config
from selector.errors import SelectorError
from selector.messages.timestamps import rfc3339

log = logging.getLogger(__name__)

REDRIVEN_SUFFIX = "-redriven"
CHUNK_RECORDS = 500
"""Chosen dead letters re-sent (then marked) at once; memory holds at most this many."""
SAMPLE_IDS = 5
"""Ids shown of the records re-sent (or that would be)."""


def redriven_topic(config: Config) -> str:
    """The compacted topic of re-drive markers: the dead-letter topic's name with ``-redriven``."""
    return config.topics.dead_letter + REDRIVEN_SUFFIX


class WholeTopic:
    """Every record of a topic up to its end as of the read's start, without a consumer group.

    A partition's end is the larger of the ListOffsets answer and the high watermark of its first fetch
    response (the embedded broker's ListOffsets answer can be short of the end; see
    :mod:`connectors.kafka.topic_reader`). Records are handed out once every partition's end is known, so
    :attr:`ends` is complete from the first one on.
    """

    def __init__(self, consumer: KafkaConsumer, topic: str, stall_timeout_s: float = 30.0) -> None:
        self._consumer = consumer
        self.topic = topic
        self.stall_timeout_s = stall_timeout_s
        self.ends: dict[int, int] = {}

    def records(self) -> Iterator[ConsumerRecord]:
        """The records, partition by partition as fetched.

        Raises:
            SelectorError: nothing arrived for ``stall_timeout_s`` before the end.
        """
        consumer = self._consumer
        tps = [TopicPartition(self.topic, p) for p in sorted(consumer.partitions_for_topic(self.topic) or ())]
        if not tps:
            return
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        listed = consumer.end_offsets(tps)
        held: list[ConsumerRecord] = []
        progress = time.monotonic()
        while True:
            polled = consumer.poll(timeout_ms=200)
            for tp in tps:
                high = consumer.highwater(tp)
                if tp.partition not in self.ends and high is not None:
                    self.ends[tp.partition] = max(high, listed.get(tp, 0))
                    progress = time.monotonic()
            for records in polled.values():
                held.extend(records)
                progress = time.monotonic()
            if len(self.ends) == len(tps):
                yield from (r for r in held if r.offset < self.ends[r.partition])
                held = []
                if all(consumer.position(tp) >= self.ends[tp.partition] for tp in tps):
                    return
            if time.monotonic() - progress > self.stall_timeout_s:
                raise SelectorError(
                    f"topic {self.topic!r} delivered nothing for {self.stall_timeout_s:g} s before its end; "
                    "is the cluster healthy?"
                )


@contextlib.contextmanager
def cluster(config: Config, servers: str) -> Iterator[tuple[KafkaAdminClient, KafkaConsumer, set[str]]]:
    """An admin client (connected within ``kafka.connect_deadline_s``, else BrokerUnavailableError), a
    group-less consumer that commits nothing, and the cluster's topic names."""
    admin = connect_admin(config, servers)
    try:
        topics = set(admin.list_topics())
        consumer = make_reader(config, servers)
        try:
            yield admin, consumer, topics
        finally:
            consumer.close(autocommit=False)
    finally:
        admin.close()


def read_redriven(consumer: KafkaConsumer, topic: str, topics: set[str]) -> dict[str, Covers]:
    """Every marker of ``topic`` (empty if it does not exist): identity -> covered offsets."""
    if topic not in topics:
        return {}
    out: dict[str, Covers] = {}
    for rec in WholeTopic(consumer, topic).records():
        parsed = read_marker(rec)
        if parsed is not None:
            out[parsed[0]] = parsed[1]  # compaction keeps the latest; so does this
    return out


@dataclass(frozen=True)
class Listing:
    topic: str
    exists: bool
    groups: list[Group]

    def as_dict(self) -> dict[str, object]:
        return {
            "topic": self.topic,
            "exists": self.exists,
            "total": sum(g.count for g in self.groups),
            "groups": [g.as_dict() for g in self.groups],
        }


def list_dead_letters(config: Config, servers: str) -> Listing:
    """The dead letters, grouped (:func:`tally`); reads both topics to their end and commits nothing."""
    topic = config.topics.dead_letter
    with cluster(config, servers) as (_, consumer, topics):
        if topic not in topics:
            return Listing(topic, False, [])
        redriven = read_redriven(consumer, redriven_topic(config), topics)
        letters = (DeadLetter.of(r) for r in WholeTopic(consumer, topic).records())
        return Listing(topic, True, tally(letters, redriven))


@dataclass
class Redrive:
    """What a re-drive chose, sent and skipped."""

    topic: str
    exists: bool
    dry_run: bool
    read: int = 0
    chosen: int = 0
    sent: Counter[str] = field(default_factory=Counter)
    """by original topic"""
    skipped: Counter[str] = field(default_factory=Counter)
    """by :data:`SKIPS` code"""
    ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "topic": self.topic,
            "exists": self.exists,
            "dry_run": self.dry_run,
            "read": self.read,
            "chosen": self.chosen,
            "sent": self.sent.total(),
            "sent_by_topic": dict(sorted(self.sent.items())),
            "skipped": {code: n for code, n in sorted(self.skipped.items()) if n},
            "ids": self.ids,
        }


def redrive(config: Config, servers: str, selection: Selection, *, dry_run: bool) -> Redrive:
    """Re-send the chosen dead letters to their original topics, each identity once (see the module).

    At least once, in this order, a chunk of :data:`CHUNK_RECORDS` at a time:

    1. read every marker, then the dead-letter topic to its end as of now (no group, nothing committed);
    2. produce the chunk's records to their original topics and confirm every delivery;
    3. produce one marker per delivered record and confirm them.

    A crash between 2 and 3 re-sends that chunk on the next run: copies with the same key and id, which
    every consumer deduplicates. A record the producer or broker refuses for good is counted, not marked.

    Raises:
        BrokerUnavailableError: the cluster did not answer within ``kafka.connect_deadline_s``.
        DeliveryError: records were still undelivered after ``kafka.outage_deadline_s``.
    """
    topic, markers = config.topics.dead_letter, redriven_topic(config)
    with cluster(config, servers) as (admin, consumer, topics):
        out = Redrive(topic, topic in topics, dry_run)
        if not out.exists:
            return out
        redriven = read_redriven(consumer, markers, topics)
        reader = WholeTopic(consumer, topic)
        sending = _Sender(config, servers, admin, markers, topics) if not dry_run else None
        chunk: list[DeadLetter] = []
        now_ids: set[str] = set()
        try:
            for rec in reader.records():
                out.read += 1
                dl = DeadLetter.of(rec)
                if not selection.matches(dl):
                    continue
                out.chosen += 1
                why = verdict(dl, topic, topics, redriven)
                if why == "send" and dl.identity in now_ids:
                    why = "copy"
                if why != "send":
                    out.skipped[why] += 1
                    continue
                now_ids.add(dl.identity)
                if len(out.ids) < SAMPLE_IDS:
                    out.ids.append(dl.item_id)
                if sending is None:
                    out.sent[dl.original_topic or ""] += 1
                    continue
                chunk.append(dl)
                if len(chunk) >= CHUNK_RECORDS:
                    sending.send(chunk, reader.ends, out)
                    chunk = []
            if sending is not None and chunk:
                sending.send(chunk, reader.ends, out)
        finally:
            if sending is not None:
                sending.close()
    return out


class _Sender:
    """Steps 2 and 3 of :func:`redrive` for one chunk; creates the marker topic (compacted) on first use."""

    def __init__(
        self, config: Config, servers: str, admin: KafkaAdminClient, markers: str, topics: set[str]
    ) -> None:
        self.config, self.markers = config, markers
        self._admin, self._topics = admin, topics
        self._producer = make_producer(config, servers)

    def _ensure_markers_topic(self) -> None:
        if self.markers in self._topics:
            return
        k = self.config.kafka
        new = NewTopic(self.markers, 1, k.replication_factor, topic_configs={"cleanup.policy": "compact"})
        with contextlib.suppress(TopicAlreadyExistsError):
            self._admin.create_topics([new])
        self._topics.add(self.markers)

    def send(self, chunk: list[DeadLetter], ends: dict[int, int], out: Redrive) -> None:
        self._ensure_markers_topic()
        dlq, deadline_s = self.config.topics.dead_letter, self.config.kafka.outage_deadline_s
        at = rfc3339(time.time())
        records = [redriven_record(dl, dlq, at) for dl in chunk]
        refused: list[Outgoing] = []

        def give_up(rec: Outgoing, exc: Exception) -> None:
            log.error("a record for %r was refused for good (%s): not re-driven, not marked", rec[0], exc)
            refused.append(rec)

        deliver(
            self._producer,
            records,
            deadline_s,
            lambda exc: f"re-driven records undeliverable: {exc}",
            give_up,
        )
        done = [dl for dl, rec in zip(chunk, records, strict=True) if not any(rec is r for r in refused)]
        if refused:
            out.skipped["refused"] += len(refused)
        out.sent.update(dl.original_topic or "" for dl in done)
        notes = [marker(dl, self.markers, dlq, ends, at) for dl in done]
        deliver(self._producer, notes, deadline_s, lambda exc: f"re-drive markers undeliverable: {exc}")

    def close(self) -> None:
        self._producer.close()
