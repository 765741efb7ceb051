"""Recorded predictions for a replay, in replay order: a JSON-lines file, or a whole topic merged by time.

A file is read line by line; blank lines are skipped (their numbers still count). A topic is read from the
beginning to its end as of the start by a group-less consumer of the library ``kafka.client`` names (no
offsets are committed), and its partitions are merged in Kafka-timestamp order (ties by partition, then
offset), so the same topic gives the same order however the fetches interleave.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO

import numpy as np
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from connectors.kafka.broker import EMBEDDED
from connectors.kafka.clients import connect_admin, make_reader
from selector.arrays import FloatArray
from selector.config import Config
from selector.errors import SelectorError

CHUNK_RECORDS = 2000
"""Records per chunk, decoded and decided at once (the decisions do not depend on it)."""


class ReplayUsageError(SelectorError):
    """The replay cannot start as asked (missing input, unusable source); the message says what to do."""


@dataclass(frozen=True)
class Chunk:
    """Raw records in replay order, with the time of each if it has no ``ts`` and where it came from."""

    values: list[bytes | None]
    fallback_s: FloatArray
    """seconds since the epoch; NaN: none (a record without ``ts`` is then invalid)"""
    origin: list[dict[str, int]]
    """``{"line": n}`` or ``{"partition": p, "offset": o}``"""


def jsonl_chunks(
    stream: IO[bytes], *, rate_per_s: float | None = None, chunk_records: int = CHUNK_RECORDS
) -> Iterator[Chunk]:
    """Chunks of a JSON-lines stream; blank lines are skipped (their numbers still count)."""
    for values, lines in numbered_lines(stream, chunk_records):
        yield _line_chunk(values, lines, rate_per_s)


def numbered_lines(stream: IO[bytes], size: int) -> Iterator[tuple[list[bytes | None], list[int]]]:
    """The non-blank lines of a stream, without line ends, in chunks of ``size``, each with its line number
    (blank lines are skipped, their numbers still count)."""
    values: list[bytes | None] = []
    lines: list[int] = []
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        values.append(line.rstrip(b"\r\n"))
        lines.append(number)
        if len(values) == size:
            yield values, lines
            values, lines = [], []
    if values:
        yield values, lines


def _line_chunk(values: list[bytes | None], lines: list[int], rate_per_s: float | None) -> Chunk:
    numbers = np.asarray(lines, dtype=np.float64)
    fallback = (numbers - 1.0) / rate_per_s if rate_per_s else np.full(len(lines), np.nan)
    return Chunk(values, fallback, [{"line": n} for n in lines])


def topic_chunks(
    config: Config, topic: str, *, chunk_records: int = CHUNK_RECORDS, stall_timeout_s: float = 30.0
) -> Iterator[Chunk]:
    """Chunks of a whole topic, from the beginning to its end as of the start, partitions merged by time.

    The end of each partition is the high watermark of its first fetch response. A partition's records wait
    in memory until every partition still being read has one, so the merge never depends on which fetch
    came first. Fetching is never paused (kafka-python 3.0's parked fetch data can keep a resumed partition
    from being fetched again), so a partition whose records are all later than another's is held in memory
    while that one is read; partitions fed by one producer over the same period stay close in time.

    Raises:
        ReplayUsageError: ``kafka.bootstrap_servers`` is ``embedded``, or the topic does not exist.
        BrokerUnavailableError: the cluster did not answer within ``kafka.connect_deadline_s``.
        SelectorError: a partition delivered nothing for ``stall_timeout_s``.
    """
    servers = config.kafka.bootstrap_servers
    if servers == EMBEDDED:
        raise ReplayUsageError(
            "--topic reads recorded predictions from an existing Kafka cluster, but "
            "'kafka.bootstrap_servers' is 'embedded' (a new, empty in-memory broker): set it to the "
            "cluster's host:port (e.g. SELECTOR_KAFKA__BOOTSTRAP_SERVERS=kafka:9092), or replay a "
            "JSON-lines file with --input"
        )
    admin = connect_admin(config, servers)  # the same connection check and error on either client
    try:
        exists = topic in admin.list_topics()
    finally:
        admin.close()
    if not exists:
        raise _no_topic(topic, servers)
    consumer = make_reader(config, servers)
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            raise _no_topic(topic, servers)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        yield from _record_chunks(_merge(consumer, tps, stall_timeout_s), chunk_records)
    finally:
        consumer.close(autocommit=False)


def _no_topic(topic: str, servers: str) -> ReplayUsageError:
    return ReplayUsageError(f"topic {topic!r} does not exist at {servers!r}; check --topic")


def _merge(
    consumer: KafkaConsumer, tps: list[TopicPartition], stall_timeout_s: float
) -> Iterator[ConsumerRecord]:
    """The records of every partition up to its end, in (timestamp, partition, offset) order."""
    buffers: dict[TopicPartition, deque[ConsumerRecord]] = {tp: deque() for tp in tps}
    end: dict[TopicPartition, int] = {}
    starved = set(tps)  # still being read, nothing buffered: the merge must wait for them
    heads: list[tuple[int, int, int]] = []  # (timestamp, partition, offset) of each buffered partition's head
    by_partition = {tp.partition: tp for tp in tps}
    last_progress = time.monotonic()

    def finished(tp: TopicPartition) -> bool:
        return tp in end and consumer.position(tp) >= end[tp]

    while starved or heads:
        while heads and not starved:
            _, p, _ = heapq.heappop(heads)
            tp = by_partition[p]
            buf = buffers[tp]
            yield buf.popleft()
            if buf:
                heapq.heappush(heads, (buf[0].timestamp, p, buf[0].offset))
            elif not finished(tp):
                starved.add(tp)
        if not starved:
            continue
        polled = consumer.poll(timeout_ms=200)
        for tp in tps:
            high = consumer.highwater(tp)
            if tp not in end and high is not None:
                end[tp] = high
        for tp, records in polled.items():
            keep = [r for r in records if r.offset < end.get(tp, r.offset + 1)]
            if keep:
                if not buffers[tp]:
                    heapq.heappush(heads, (keep[0].timestamp, tp.partition, keep[0].offset))
                buffers[tp].extend(keep)
                starved.discard(tp)
                last_progress = time.monotonic()
        for tp in list(starved):
            if finished(tp):
                starved.discard(tp)
                last_progress = time.monotonic()
        if starved and time.monotonic() - last_progress > stall_timeout_s:
            names = sorted(tp.partition for tp in starved)
            raise SelectorError(
                f"partitions {names} of topic {tps[0].topic!r} delivered nothing for "
                f"{stall_timeout_s:g} s before their end; is the cluster healthy?"
            )


def _record_chunks(records: Iterable[ConsumerRecord], chunk_records: int) -> Iterator[Chunk]:
    values: list[bytes | None] = []
    times: list[float] = []
    origin: list[dict[str, int]] = []
    for r in records:
        values.append(r.value)
        times.append(max(0, r.timestamp) / 1000.0)
        origin.append({"partition": r.partition, "offset": r.offset})
        if len(values) == chunk_records:
            yield Chunk(values, np.asarray(times), origin)
            values, times, origin = [], [], []
    if values:
        yield Chunk(values, np.asarray(times), origin)
