"""A librdkafka consumer with the kafka-python ``KafkaConsumer`` calls this project makes.

librdkafka serves the rebalance callbacks from inside ``consume()``, on the polling thread, where blocking
consumer calls are allowed: a kafka-python (async) rebalance listener is run to completion there, and
:func:`connectors.kafka.clients.commit_in_rebalance` commits with the public, synchronous ``commit``. Offsets
are committed only explicitly (``enable.auto.commit`` and ``enable.auto.offset.store`` off); a ``commit()``
without offsets commits the position after the last record each partition returned.
"""

# ruff: noqa: SLF001 -- librdkafka's local error codes are public API spelled with a leading underscore

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import confluent_kafka as ck
from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.structs import OffsetAndMetadata

from connectors.kafka.confluent.errors import error_from, kafka_error, log, log_error, with_logging

PARTITIONS_MAX_AGE_S = 30.0
"""How long a topic's partition list is answered from the cache: a partition added to a topic is read
within this."""


def _ctp(tp: TopicPartition, offset: int | None = None) -> ck.TopicPartition:
    if offset is None:
        return ck.TopicPartition(tp.topic, tp.partition)
    return ck.TopicPartition(tp.topic, tp.partition, offset)


def _tp(ctp: ck.TopicPartition) -> TopicPartition:
    return TopicPartition(ctp.topic, ctp.partition)


def run_listener_call(result: object) -> None:
    """Run what a rebalance listener method returned to completion (a coroutine of an async listener)."""
    if inspect.iscoroutine(result):
        asyncio.run(result)


class ConfluentConsumer:
    """A librdkafka consumer with the kafka-python ``KafkaConsumer`` calls this project makes."""

    LISTENERS_ON_POLLING_THREAD = True
    """Rebalance listeners run inside :meth:`poll`, where blocking calls (a synchronous commit) are fine."""

    def __init__(self, conf: dict[str, Any], *, max_poll_records: int, timeout_s: float = 30.0) -> None:
        self.config = dict(conf)
        """the librdkafka settings it was built with (as kafka-python's ``KafkaConsumer.config``)"""
        self._c = ck.Consumer(with_logging(conf))
        self._max_poll_records = max_poll_records
        self._timeout_s = timeout_s
        self._next: dict[TopicPartition, int] = {}
        """the offset after the last record each partition returned (or where a seek put it)"""
        self._manual: dict[TopicPartition, int] | None = None
        """a manual assignment (no group) with the offset each partition starts at; applied at the next use"""
        self._manual_dirty = False
        self._closed = False
        self._partitions: dict[str, set[int]] = {}
        """the partitions of each topic as last asked (answered from here inside a rebalance callback)"""
        self._partitions_at: dict[str, float] = {}
        """when each topic's partitions were asked (monotonic seconds)"""
        self._in_rebalance = False

    # -- the group ------------------------------------------------------------------------------------------
    def subscribe(self, topics: list[str], listener: Any = None) -> None:
        """Join the group for ``topics``; ``listener`` is a kafka-python (async) rebalance listener."""
        for topic in topics:
            self.partitions_for_topic(topic)  # cached for the listener (see _in_listener)
        if listener is None:
            self._c.subscribe(topics)
            return

        def assigned(_: ck.Consumer, parts: list[ck.TopicPartition]) -> None:
            tps = [_tp(p) for p in parts]
            for tp in tps:
                self._next.pop(tp, None)
            self._in_listener(listener.on_partitions_assigned, tps)

        def revoked(_: ck.Consumer, parts: list[ck.TopicPartition]) -> None:
            tps = [_tp(p) for p in parts]
            self._in_listener(listener.on_partitions_revoked, tps)
            for tp in tps:
                self._next.pop(tp, None)

        def lost(_: ck.Consumer, parts: list[ck.TopicPartition]) -> None:
            tps = [_tp(p) for p in parts]
            self._in_listener(getattr(listener, "on_partitions_lost", listener.on_partitions_revoked), tps)
            for tp in tps:
                self._next.pop(tp, None)

        self._c.subscribe(topics, on_assign=assigned, on_revoke=revoked, on_lost=lost)

    def _in_listener(
        self, method: Callable[[list[TopicPartition]], object], tps: list[TopicPartition]
    ) -> None:
        """Run a listener method inside librdkafka's rebalance callback.

        While it runs, nothing may call into this consumer's handle through confluent-kafka's ``CallState``
        (``list_topics``, ``consume``, ``close``): the nested call leaves the handle's thread state cleared,
        and the next callback of the same ``consume`` aborts the process (``CallState_get: Assertion
        `cs != NULL' failed``). :meth:`partitions_for_topic` answers from its cache meanwhile; the
        synchronous commit and the committed-offset lookup do not use ``CallState``.
        """
        self._in_rebalance = True
        try:
            run_listener_call(method(tps))
        finally:
            self._in_rebalance = False

    def assignment(self) -> set[TopicPartition]:
        if self._manual is not None:
            return set(self._manual)
        return {_tp(p) for p in self._c.assignment()}

    # -- reading --------------------------------------------------------------------------------------------
    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[Any]]:
        """Records by partition, as kafka-python's ``poll`` returns them (kafka-python ``ConsumerRecord``)."""
        self._apply_manual()
        limit = max_records or self._max_poll_records
        try:
            # wait for the first record only, then take what has already arrived: consume(limit, timeout)
            # would hold a batch back until it is full or the timeout passed (a 200 ms floor on latency)
            messages = self._c.consume(num_messages=1, timeout=timeout_ms / 1000)
            if messages and limit > 1:
                messages += self._c.consume(num_messages=limit - 1, timeout=0)
        except ck.KafkaException as exc:
            raise error_from(exc) from exc
        return self._records(messages)

    def _records(self, messages: list[ck.Message]) -> dict[TopicPartition, list[Any]]:
        """kafka-python records by partition (the per-record cost of the adapter, so built as plain tuples:
        leader epoch, checksum and serialized sizes, which nothing here reads, are -1 or None)."""
        out: dict[TopicPartition, list[Any]] = {}
        new, record = tuple.__new__, ConsumerRecord
        batch: list[Any] = []
        last_topic, last_partition = None, None
        for m in messages:
            err = m.error()
            if err is not None:
                if err.code() != ck.KafkaError._PARTITION_EOF:
                    if err.fatal():
                        raise kafka_error(err)
                    log_error(err)
                continue
            topic, partition = m.topic(), m.partition()
            if partition != last_partition or topic != last_topic:  # records come in partition runs
                last_topic, last_partition = topic, partition
                batch = out.setdefault(TopicPartition(topic, partition), [])
            ts_type, ts = m.timestamp()
            # librdkafka's timestamp types: 0 none, 1 create time, 2 log append; kafka-python's: 0 and 1
            batch.append(
                new(
                    record,
                    (topic, partition, -1, m.offset(), ts, ts_type - 1 if ts_type else 0, m.key(), m.value(),
                     m.headers() or [], None, -1, -1, -1),
                )
            )  # fmt: skip
        for tp, records in out.items():
            self._next[tp] = records[-1].offset + 1
        return out

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        """The topic's partitions: from the cache inside a rebalance listener (see :meth:`_in_listener`) and
        while it is younger than :data:`PARTITIONS_MAX_AGE_S` (kafka-python answers from its metadata cache
        too; asking the broker on every read cost a quarter of the monitor's time)."""
        cached = self._partitions.get(topic)
        fresh = (
            time.monotonic() - self._partitions_at.get(topic, -PARTITIONS_MAX_AGE_S) < PARTITIONS_MAX_AGE_S
        )
        if self._in_rebalance or (cached is not None and fresh):
            return None if cached is None else set(cached)
        try:
            meta = self._c.list_topics(topic, timeout=min(5.0, self._timeout_s))
        except ck.KafkaException as exc:
            log.debug("metadata of %r: %s", topic, exc)
            return None
        t = meta.topics.get(topic)
        if t is None or t.error is not None or not t.partitions:
            return None
        self._partitions[topic] = set(t.partitions)
        self._partitions_at[topic] = time.monotonic()
        return set(t.partitions)

    def highwater(self, tp: TopicPartition) -> int | None:
        """The high watermark of the last fetch response of ``tp`` (None before the first)."""
        try:
            _, high = self._c.get_watermark_offsets(_ctp(tp), cached=True)
        except ck.KafkaException:
            return None
        return high if high is not None and high >= 0 else None

    def end_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: high for tp, (_, high) in self._watermarks(tps).items()}

    def beginning_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: low for tp, (low, _) in self._watermarks(tps).items()}

    def _watermarks(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, tuple[int, int]]:
        """(low, high) of each partition, asked of the broker (kafka-python's errors on failure)."""
        out = {}
        for tp in tps:
            try:
                out[tp] = self._c.get_watermark_offsets(_ctp(tp), timeout=self._timeout_s, cached=False)
            except ck.KafkaException as exc:
                raise error_from(exc) from exc
        return out

    def position(self, tp: TopicPartition) -> int:
        """The offset of the next record of ``tp`` this consumer returns."""
        self._apply_manual()
        known = self._next.get(tp)
        if known is not None and known >= 0:
            return known
        if known == ck.OFFSET_BEGINNING:
            low = self.beginning_offsets([tp])[tp]
            self._next[tp] = low
            return low
        pos = self._c.position([_ctp(tp)])[0].offset
        if pos >= 0:
            return int(pos)
        committed = self.committed(tp)
        if committed is not None:
            return committed
        return self.beginning_offsets([tp])[tp]

    # -- manual assignment (no group) -----------------------------------------------------------------------
    def assign(self, tps: list[TopicPartition]) -> None:
        old = self._manual or {}
        self._manual = {tp: old.get(tp, ck.OFFSET_STORED) for tp in tps}
        self._manual_dirty = True

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._next[tp] = offset
        if self._manual is not None:
            self._manual[tp] = offset
            self._manual_dirty = True
            return
        try:
            self._c.seek(_ctp(tp, offset))
        except ck.KafkaException as exc:
            raise error_from(exc) from exc

    def seek_to_beginning(self, *tps: TopicPartition) -> None:
        for tp in tps or tuple(self.assignment()):
            self.seek(tp, ck.OFFSET_BEGINNING)

    def _apply_manual(self) -> None:
        if self._manual is None or not self._manual_dirty:
            return
        self._c.assign([_ctp(tp, off) for tp, off in self._manual.items()])
        self._manual_dirty = False

    # -- offsets --------------------------------------------------------------------------------------------
    def commit(
        self, offsets: dict[TopicPartition, OffsetAndMetadata] | None = None, timeout_ms: int | None = None
    ) -> None:
        """Commit ``offsets`` (None: the position after the last record each partition returned), waiting for
        the answer. librdkafka's synchronous commit takes no timeout (it is bounded by its request timeout):
        ``timeout_ms`` is accepted for kafka-python's signature."""
        del timeout_ms
        if offsets is None:
            owned = self.assignment()
            offsets = {tp: OffsetAndMetadata(off, "", -1) for tp, off in self._next.items() if tp in owned}
        if not offsets:
            return
        parts = [_ctp(tp, om.offset) for tp, om in offsets.items()]
        try:
            answered = self._c.commit(offsets=parts, asynchronous=False)
        except ck.KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, ck.KafkaError) and err.code() == ck.KafkaError._NO_OFFSET:
                return
            raise error_from(exc) from exc
        for p in answered or []:
            if p.error is not None:
                raise kafka_error(p.error)

    def committed(self, tp: TopicPartition, timeout_ms: int | None = None) -> int | None:
        timeout = self._timeout_s if timeout_ms is None else timeout_ms / 1000
        try:
            got = self._c.committed([_ctp(tp)], timeout=timeout)
        except ck.KafkaException as exc:
            raise error_from(exc) from exc
        if got[0].error is not None:
            raise kafka_error(got[0].error)
        offset = got[0].offset
        return int(offset) if offset >= 0 else None

    def close(self, autocommit: bool = False, timeout_ms: int | None = None) -> None:
        """Leave the group and close; ``timeout_ms`` bounds the wait (a closing consumer of an unreachable
        cluster is left to finish on its own thread)."""
        del autocommit  # never: offsets are committed only explicitly
        if self._closed:
            return
        self._closed = True
        if timeout_ms is None:
            self._c.close()
            return
        closer = threading.Thread(target=self._c.close, name="confluent-consumer-close", daemon=True)
        closer.start()
        closer.join(timeout_ms / 1000)
