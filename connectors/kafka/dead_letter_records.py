"""What a dead letter says, which ones a re-drive chooses, and the records it sends: no I/O here.

A dead letter's identity is its original topic, its id and the SHA-256 of its value: copies of one record
(dead-lettered twice, at least once) share it, while two annotators' labels of one item do not. A re-drive
marker, keyed by that identity, holds the end of every dead-letter partition when it was written
(:data:`Covers`): a dead letter older than that with the same identity (the one re-driven, or a copy) is
never sent again, while one written later (the re-driven record failed again) can be.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

import orjson
from kafka.consumer.fetcher import ConsumerRecord

from connectors.kafka.delivery import Headers, Outgoing
from selector.messages.timestamps import parse_ts, rfc3339

TRUNCATION_HEADERS = ("x-dlq-original-size", "x-dlq-original-key-size")

Covers = dict[int, int]
"""Per dead-letter partition, the end offset when a record was re-driven: older dead letters are covered."""


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
        dlq = {k: (v or b"").decode("utf-8", "replace") for k, v in headers if k.lower().startswith("x-dlq-")}
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


_OFFSETS = re.compile(r"([0-9]+):([0-9]+)(?:-([0-9]+))?", re.ASCII)


def parse_offsets(text: str) -> OffsetRange:
    """``PARTITION:FROM-TO`` (inclusive) or ``PARTITION:OFFSET``.

    Raises:
        ValueError: anything else, or FROM after TO.
    """
    usage = f"--offsets must be PARTITION:FROM-TO (inclusive, e.g. 0:120-180) or PARTITION:OFFSET: {text!r}"
    match = _OFFSETS.fullmatch(text.strip())
    if match is None:
        raise ValueError(usage)
    partition, first, last = match.groups()
    out = OffsetRange(int(partition), int(first), int(last or first))
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
    "truncated": "truncated: only part of the original bytes were kept",
    "redriven": "already re-driven",
    "copy": "a copy of a record re-driven in this run",
    "no_original_topic": "no x-dlq-original-topic header",
    "to_dead_letter_topic": "the original topic is the dead-letter topic",
    "topic_missing": "the original topic no longer exists",
    "refused": "refused for good by the producer or the broker (too large?); not marked",
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
    return "redriven" if covered(dl, redriven) else "send"


def covered(dl: DeadLetter, redriven: dict[str, Covers]) -> bool:
    """Whether a marker of ``dl``'s identity was written after ``dl`` (it or a copy of it was re-driven)."""
    covers = redriven.get(dl.identity) if redriven else None
    return covers is not None and dl.offset < covers.get(dl.partition, 0)


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
        if key not in groups:
            groups[key] = Group(dl.original_topic, dl.stage, dl.reason)
        g = groups[key]
        g.count += 1
        g.truncated += dl.truncated
        g.redriven += covered(dl, redriven)
        at = dl.failed_at_s
        g.first_s, g.last_s = min(g.first_s, at), max(g.last_s, at)
    return [groups[k] for k in sorted(groups)]
