"""Specification of the monitor's checkpoint: delivered and committed offsets, forward only."""

from __future__ import annotations

import pytest
from kafka import TopicPartition

from connectors.monitor.checkpoint import Checkpoint, OffsetRegressionError

TP0, TP1 = TopicPartition("predictions", 0), TopicPartition("predictions", 1)


class TestCheckpoint:
    def test_only_partitions_delivered_past_their_commit_are_due(self) -> None:
        """After delivering 10 on p0 and 5 on p1 and committing p0 at 10, only p1 is due, at 5."""
        c = Checkpoint()
        c.delivered_to(TP0, 10)
        c.delivered_to(TP1, 5)
        assert c.due([TP0, TP1]) == {TP0: 10, TP1: 5}
        c.committed_to({TP0: 10})
        assert c.due([TP0, TP1]) == {TP1: 5}
        assert dict(c) == {TP0: 10, TP1: 5}

    def test_offsets_only_move_forward(self) -> None:
        """A delivered or committed offset going back raises, naming the partition and both values."""
        c = Checkpoint()
        c.delivered_to(TP0, 10)
        with pytest.raises(
            OffsetRegressionError, match=r"predictions:0: the delivered offset .* from 10 to 9"
        ):
            c.delivered_to(TP0, 9)
        c.committed_to({TP0: 10})
        with pytest.raises(OffsetRegressionError, match="committed offset would go back from 10 to 3"):
            c.committed_to({TP0: 3})
        c.delivered_to(TP0, 10)  # the same offset again is no regression

    def test_a_revoked_partition_is_forgotten(self) -> None:
        """After a revocation the partition is neither due nor remembered; its next owner starts from Kafka
        (this instance may own it again later and start lower)."""
        c = Checkpoint()
        c.delivered_to(TP0, 10)
        c.forget([TP0])
        assert c.due([TP0]) == {} and dict(c) == {}
        c.delivered_to(TP0, 2)
