"""Listing the dead-letter topic and re-driving chosen dead letters to their original topic, once.

A re-driven record is the dead letter's key and value on the topic named by its ``x-dlq-original-topic``
header, with the dead letter's other headers (every ``x-dlq-*`` one replaced by ``x-redriven-from-topic``,
``-partition``, ``-offset`` and ``x-redriven-at``). What was re-driven is remembered in a small compacted
topic beside the dead-letter topic (:func:`redriven_topic`), one marker per record keyed by its identity:
its original topic, its id and the SHA-256 of its value. A marker also holds the end of every dead-letter
partition when it was written, so a dead letter older than that with the same identity (the one re-driven,
or a copy of it) is never sent again, while one written later (the re-driven record failed again) can be.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property

import orjson
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import TopicAlreadyExistsError

from connectors.kafka.clients import connect_admin, make_producer, make_reader
from connectors.kafka.delivery import Headers, Outgoing, deliver
from selector.config import Config
from selector.errors import SelectorError
from selector.messages.timestamps import parse_ts, rfc3339

REDRIVEN_SUFFIX = "-redriven"
CHUNK_RECORDS = 500
"""Chosen dead letters re-sent (then marked) at once; memory holds at most this many."""
SAMPLE_IDS = 5
"""Ids shown of the records re-sent (or that would be)."""
TRUNCATION_HEADERS = ("x-dlq-original-size", "x-dlq-original-key-size")

Covers = dict[int, int]
"""Per dead-letter partition, the end offset when a record was re-driven: older dead letters are covered."""


def redriven_topic(config: Config) -> str:
    """The compacted topic of re-drive markers: the dead-letter topic's name with ``-redriven``."""
    return config.topics.dead_letter + REDRIVEN_SUFFIX


@dataclass(frozen=True)
class DeadLetter:
    """One record of the dead-letter topic, its ``x-dlq-*`` headers decoded."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    dlq: dict[str, str] = field(repr=False)

    @classmethod
    def of(cls, rec: ConsumerRecord) -> DeadLetter:
        headers = [(k, v) for k, v in rec.headers or []]
        dlq = {k: (v or b"").decode("utf-8", "replace") for k, v in headers if k.startswith("x-dlq-")}
        return cls(rec.partition, rec.offset, rec.timestamp, rec.key, rec.value, headers, dlq)

    @property
    def original_topic(self) -> str | None:
        return self.dlq.get("x-dlq-original-topic") or None

    @property
    def stage(self) -> str | None:
        return self.dlq.get("x-dlq-stage")

    @property
    def reason(self) -> str | None:
        return self.dlq.get("x-dlq-reason")

    @property
    def truncated(self) -> bool:
        """Whether the dead letter carries its key or value cut (then it is never re-sent)."""
        return any(name in self.dlq for name in TRUNCATION_HEADERS)

    @property
    def failed_at_s(self) -> float:
        """``x-dlq-failed-at`` in seconds since the epoch; the record's Kafka timestamp if it has none."""
        try:
            return parse_ts(self.dlq["x-dlq-failed-at"])
        except (KeyError, ValueError):
            return max(0, self.timestamp_ms) / 1000.0

    @cached_property
    def item_id(self) -> str:
        """The value's JSON ``id`` (a prediction's, a label's); else the original record's coordinates
        (``topic:partition:offset``); else the dead letter's (``@partition:offset``)."""
        with contextlib.suppress(orjson.JSONDecodeError):
            obj = orjson.loads(self.value or b"")
            rid = obj.get("id") if isinstance(obj, dict) else None
            if isinstance(rid, str) and rid:
                return rid
        partition, offset = self.dlq.get("x-dlq-original-partition"), self.dlq.get("x-dlq-original-offset")
        if partition is not None and offset is not None and offset.isdigit():
            return f"{self.original_topic}:{partition}:{offset}"
        return f"@{self.partition}:{self.offset}"

    @cached_property
    def identity(self) -> str:
        """The marker key: ``[original topic, id, SHA-256 of the value]`` as JSON (copies share it; two
        annotators' labels of one item do not)."""
        digest = hashlib.sha256(self.value or b"").hexdigest()
        return orjson.dumps([self.original_topic, self.item_id, digest]).decode()


@dataclass(frozen=True)
class OffsetRange:
    """Dead-letter offsets ``first`` to ``last`` (inclusive) of one partition."""

    partition: int
    first: int
    last: int

    def __contains__(self, dl: DeadLetter) -> bool:
        return dl.partition == self.partition and self.first <= dl.offset <= self.last


def parse_offsets(text: str) -> OffsetRange:
    """``PARTITION:FROM-TO`` (inclusive) or ``PARTITION:OFFSET``.

    Raises:
        ValueError: anything else, or FROM after TO.
    """
    usage = f"--offsets must be PARTITION:FROM-TO (inclusive, e.g. 0:120-180) or PARTITION:OFFSET: {text!r}"
    partition, sep, span = text.strip().partition(":")
    first, _, last = span.partition("-")
    last = last or first
    if not sep or not all(part.strip().isdigit() for part in (partition, first, last)):
        raise ValueError(usage)
    out = OffsetRange(int(partition), int(first), int(last))
    if out.first > out.last:
        raise ValueError(f"{usage} ({out.first} is after {out.last})")
    return out


def parse_time(text: str, option: str) -> float:
    """Seconds since the epoch of an RFC 3339 date-time given to ``option``; raises ValueError otherwise."""
    try:
        return parse_ts(text)
    except ValueError:
        raise ValueError(
            f"{option} must be an RFC 3339 date-time with a UTC offset (e.g. 2026-12-06T02:00:00Z): {text!r}"
        ) from None


@dataclass(frozen=True)
class Selection:
    """Which dead letters to re-drive: every given filter must hold (a repeated one: any of its values).
    ``since`` is inclusive, ``until`` exclusive, both on ``x-dlq-failed-at``."""

    reasons: frozenset[str] = frozenset()
    stages: frozenset[str] = frozenset()
    topics: frozenset[str] = frozenset()
    since_s: float | None = None
    until_s: float | None = None
    offsets: tuple[OffsetRange, ...] = ()
    everything: bool = False

    @property
    def chooses_nothing(self) -> bool:
        """No filter and not ``everything``: a re-drive refuses to guess."""
        filters = (self.reasons, self.stages, self.topics, self.offsets)
        return not self.everything and not any(filters) and self.since_s is None and self.until_s is None

    def matches(self, dl: DeadLetter) -> bool:
        if self.reasons and dl.reason not in self.reasons:
            return False
        if self.stages and dl.stage not in self.stages:
            return False
        if self.topics and dl.original_topic not in self.topics:
            return False
        if self.offsets and not any(dl in r for r in self.offsets):
            return False
        if self.since_s is not None or self.until_s is not None:
            at = dl.failed_at_s
            if self.since_s is not None and at < self.since_s:
                return False
            if self.until_s is not None and at >= self.until_s:
                return False
        return True

    def describe(self) -> str:
        named = (("reason", self.reasons), ("stage", self.stages), ("original topic", self.topics))
        parts = [f"{name} {', '.join(sorted(values))}" for name, values in named if values]
        if self.since_s is not None:
            parts.append(f"since {rfc3339(self.since_s)}")
        if self.until_s is not None:
            parts.append(f"until {rfc3339(self.until_s)}")
        if self.offsets:
            parts.append("offsets " + ", ".join(f"{r.partition}:{r.first}-{r.last}" for r in self.offsets))
        return "; ".join(parts) or "every dead letter"


SKIPS = {
    "truncated": "truncated (only part of the original bytes were kept)",
    "redriven": "already re-driven",
    "copy": "copies of a record re-driven in this run",
    "no_original_topic": "without an x-dlq-original-topic header",
    "to_dead_letter_topic": "whose original topic is the dead-letter topic",
    "topic_missing": "whose original topic no longer exists",
}
"""Why a chosen dead letter is not re-sent, by code."""


def verdict(dl: DeadLetter, dead_letter_topic: str, topics: set[str], redriven: dict[str, Covers]) -> str:
    """``send``, or the :data:`SKIPS` code of a chosen dead letter that is not re-sent."""
    if dl.truncated:
        return "truncated"
    if dl.original_topic is None:
        return "no_original_topic"
    if dl.original_topic == dead_letter_topic:
        return "to_dead_letter_topic"
    if dl.original_topic not in topics:
        return "topic_missing"
    covers = redriven.get(dl.identity)
    if covers is not None and dl.offset < covers.get(dl.partition, 0):
        return "redriven"
    return "send"


def redriven_record(dl: DeadLetter, dead_letter_topic: str, at: str) -> Outgoing:
    """The record to send: the dead letter's key, value and headers but the ``x-dlq-*`` ones (the original
    record's, which the dead letter carries after its own), and where it came from."""
    kept = [(k, v) for k, v in dl.headers if not k.lower().startswith(("x-dlq-", "x-redriven-"))]
    return (
        dl.original_topic or "",
        dl.key,
        dl.value,
        [
            *kept,
            ("x-redriven-from-topic", dead_letter_topic.encode()),
            ("x-redriven-from-partition", str(dl.partition).encode()),
            ("x-redriven-from-offset", str(dl.offset).encode()),
            ("x-redriven-at", at.encode()),
        ],
    )


def marker(dl: DeadLetter, topic: str, dead_letter_topic: str, covers: Covers, at: str) -> Outgoing:
    """The durable note that ``dl`` was re-driven (key: its identity)."""
    value = {
        "id": dl.item_id,
        "original_topic": dl.original_topic,
        "dead_letter": {"topic": dead_letter_topic, "partition": dl.partition, "offset": dl.offset},
        "covers": {str(p): end for p, end in sorted(covers.items())},
        "redriven_at": at,
    }
    return (topic, dl.identity.encode(), orjson.dumps(value), None)


def read_marker(rec: ConsumerRecord) -> tuple[str, Covers] | None:
    """A marker's identity and covered offsets; None for a record that is not one."""
    try:
        covers = orjson.loads(rec.value or b"")["covers"]
        return rec.key.decode(), {int(p): int(end) for p, end in covers.items()}
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return None


@dataclass
class Group:
    """Dead letters of one original topic, stage and reason."""

    original_topic: str | None
    stage: str | None
    reason: str | None
    count: int = 0
    truncated: int = 0
    redriven: int = 0
    first_s: float = float("inf")
    last_s: float = float("-inf")

    def as_dict(self) -> dict[str, object]:
        return {
            "original_topic": self.original_topic,
            "stage": self.stage,
            "reason": self.reason,
            "count": self.count,
            "truncated": self.truncated,
            "redriven": self.redriven,
            "first": rfc3339(self.first_s),
            "last": rfc3339(self.last_s),
        }


def tally(letters: Iterable[DeadLetter], redriven: dict[str, Covers]) -> list[Group]:
    """Dead letters grouped by original topic, stage and reason (in that order), with their time range."""
    groups: dict[tuple[str, str, str], Group] = {}
    for dl in letters:
        key = (dl.original_topic or "", dl.stage or "", dl.reason or "")
        g = groups.get(key) or groups.setdefault(key, Group(dl.original_topic, dl.stage, dl.reason))
        g.count += 1
        g.truncated += dl.truncated
        if redriven:
            covers = redriven.get(dl.identity)
            g.redriven += covers is not None and dl.offset < covers.get(dl.partition, 0)
        at = dl.failed_at_s
        g.first_s, g.last_s = min(g.first_s, at), max(g.last_s, at)
    return [groups[k] for k in sorted(groups)]


# --- reading and writing the topics -------------------------------------------------------------------------


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
    """by :data:`SKIPS` code, and ``refused`` (the broker or producer refused it for good)"""
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

        def give_up(rec: Outgoing, _exc: Exception) -> None:
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
