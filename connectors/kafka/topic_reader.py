"""Reading a whole topic from the beginning to its current end, without a consumer group.

Used for the compacted state topic on every partition assignment and for the labels topic. The end is the
high watermark each fetch response reports, and never less than the ListOffsets answer at the start of the
read: the embedded broker answers ListOffsets with the first offset of a partition's last write batch (short
of the end), while a fetch response parsed now may have been fetched in the background before the last writes
(its high watermark short of the end too).
"""

from __future__ import annotations

import time

from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from connectors.kafka.clients import make_reader
from selector.config import Config


class TopicReader:
    """A group-less consumer assigned to every partition of one topic."""

    def __init__(self, config: Config, servers: str, topic: str, start: dict[int, int] | None = None) -> None:
        """``start``: the offset to begin at per partition (the beginning for a partition not in it)."""
        self.topic = topic
        self._start = start or {}
        self._consumer = make_reader(config, servers)
        self._tps: list[TopicPartition] = []

    def _assign(self) -> list[TopicPartition]:
        parts = self._consumer.partitions_for_topic(self.topic) or set()
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        if tps != self._tps:
            new = [tp for tp in tps if tp not in self._tps]
            self._consumer.assign(tps)
            for tp in new:
                if tp.partition in self._start:
                    self._consumer.seek(tp, self._start[tp.partition])
                else:
                    self._consumer.seek_to_beginning(tp)
            self._tps = tps
        return tps

    def read_all(self, timeout_s: float = 30.0) -> list[ConsumerRecord]:
        """Every record from the beginning to the end as of now."""
        tps = self._assign()
        if not tps:
            return []
        self._consumer.seek_to_beginning(*tps)
        return self.read_new(timeout_s, until_end=True)

    def read_new(self, timeout_s: float = 0.0, until_end: bool = False) -> list[ConsumerRecord]:
        """Records since the last read; ``until_end`` polls until caught up (at most ``timeout_s``)."""
        tps = self._assign()
        if not tps:
            return []
        out: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout_s
        listed: dict[TopicPartition, int] = self._consumer.end_offsets(tps) if until_end else {}
        while True:
            polled = self._consumer.poll(timeout_ms=100 if until_end else int(timeout_s * 1000))
            for records in polled.values():
                out.extend(records)
            if not until_end or self._caught_up(tps, listed) or time.monotonic() > deadline:
                return out

    def _caught_up(self, tps: list[TopicPartition], listed: dict[TopicPartition, int]) -> bool:
        for tp in tps:
            high = self._consumer.highwater(tp)
            if high is None or self._consumer.position(tp) < max(high, listed.get(tp, 0)):
                return False
        return True

    def close(self) -> None:
        self._consumer.close(autocommit=False)
