"""Where each owned partition stands: the offsets whose outputs were delivered, and those committed to Kafka.

The monitor's at-least-once order, as this class sees it:

1. the outputs of a polled batch are produced and confirmed: :meth:`Checkpoint.delivered_to`;
2. the partitions delivered past their last commit are :meth:`Checkpoint.due`: their state snapshot is
   produced and confirmed first;
3. then the offsets are committed to Kafka, and :meth:`Checkpoint.committed_to` records it.

Offsets only move forward: a delivered or committed offset that would go back means two owners of one
partition, or a bug, and raises :class:`OffsetRegressionError` rather than re-commit the past.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from kafka import TopicPartition

from selector.errors import SelectorError


class OffsetRegressionError(SelectorError):
    """An offset would move back: it names the partition, which offset and both values."""

    def __init__(self, tp: TopicPartition, kind: str, old: int, new: int) -> None:
        super().__init__(
            f"partition {tp.topic}:{tp.partition}: the {kind} offset would go back from {old} to {new}; "
            "offsets only move forward (is another instance consuming with the same group id?)"
        )
        self.tp, self.kind, self.old, self.new = tp, kind, old, new


@dataclass
class Checkpoint:
    """Next offset to read per partition, once delivered and once committed."""

    delivered: dict[TopicPartition, int] = field(default_factory=dict)
    committed: dict[TopicPartition, int] = field(default_factory=dict)

    def delivered_to(self, tp: TopicPartition, next_offset: int) -> None:
        """The outputs of every record of ``tp`` below ``next_offset`` are confirmed."""
        old = self.delivered.get(tp)
        if old is not None and next_offset < old:
            raise OffsetRegressionError(tp, "delivered", old, next_offset)
        self.delivered[tp] = next_offset

    def due(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """The partitions among ``tps`` delivered past their last commit, with the offset to commit."""
        return {
            tp: self.delivered[tp]
            for tp in tps
            if tp in self.delivered and self.committed.get(tp) != self.delivered[tp]
        }

    def committed_to(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Kafka accepted these offsets (each one delivered before, see the module's order)."""
        for tp, offset in offsets.items():
            old = self.committed.get(tp)
            if old is not None and offset < old:
                raise OffsetRegressionError(tp, "committed", old, offset)
            self.committed[tp] = offset

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        """The partitions were revoked or lost: their next owner continues from Kafka's committed offsets."""
        for tp in tps:
            self.delivered.pop(tp, None)
            self.committed.pop(tp, None)

    def __iter__(self) -> Iterator[tuple[TopicPartition, int]]:
        """Every partition with its delivered offset (the consumer lag is measured from these)."""
        return iter(self.delivered.items())
