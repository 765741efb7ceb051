"""Plain counters the core keeps; the shell's Prometheus collector reads them at scrape time."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np

SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
"""Upper bounds of the score histogram buckets on [0, 1]."""

ROUTE_NAMES = ("accept", "query", "audit", "skip")

BATCH_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def batch_seconds_counts() -> list[int]:
    """Counts per bucket of BATCH_SECONDS_BUCKETS, plus one for batches over the last bound."""
    return [0] * (len(BATCH_SECONDS_BUCKETS) + 1)


def observe_seconds(counts: list[int], seconds: float) -> None:
    """Count one batch's duration in its bucket of :func:`batch_seconds_counts` (``le`` semantics)."""
    counts[bisect.bisect_left(BATCH_SECONDS_BUCKETS, seconds)] += 1


class RouterStats:
    """Running totals: items per route, labels requested per predicted class, the deciding score's histogram,
    dead letters per stage."""

    def __init__(self, classes: Sequence[str]) -> None:
        self.classes = list(classes)
        self.items = dict.fromkeys(ROUTE_NAMES, 0)
        self.requested_by_class = np.zeros(len(self.classes), dtype=np.int64)
        """items sent for labeling (query or audit), by predicted class: the budget's spend per class"""
        self.score_bucket_counts = np.zeros(len(SCORE_BUCKETS), dtype=np.int64)
        self.score_sum = 0.0
        self.score_count = 0
        self.shortfall: dict[str, float] = {"floor": 0.0, "cap": 0.0}
        """budget credit lost, in labels, by reason: the spend below the target and why"""
        self.model_switches = 0
        """new model versions that restarted a partition's windows"""
        self.dead_letters: dict[str, int] = {"decode": 0}
        self.dead_letter_reasons: dict[str, int] = {}

    def record(self, route: np.ndarray, score: np.ndarray, predicted: np.ndarray) -> None:
        """Count one committed batch of decisions (``route`` codes index :data:`ROUTE_NAMES`; ``predicted``
        class indices)."""
        bins = np.bincount(route, minlength=len(ROUTE_NAMES))
        labeled = (route == ROUTE_NAMES.index("query")) | (route == ROUTE_NAMES.index("audit"))
        self.requested_by_class += np.bincount(predicted[labeled], minlength=len(self.classes))
        for i, name in enumerate(ROUTE_NAMES):
            self.items[name] += int(bins[i])
        idx = np.searchsorted(np.asarray(SCORE_BUCKETS), score, side="left")
        self.score_bucket_counts += np.bincount(
            np.minimum(idx, len(SCORE_BUCKETS) - 1), minlength=len(SCORE_BUCKETS)
        )
        self.score_sum += float(score.sum())
        self.score_count += len(score)

    def record_budget(self, shortfall: dict[str, float], model_switches: int) -> None:
        """Count one committed batch's lost budget credit (by reason) and model switches."""
        for reason, lost in shortfall.items():
            self.shortfall[reason] = self.shortfall.get(reason, 0.0) + lost
        self.model_switches += model_switches

    def record_dead_letters(self, stage: str, reasons: Sequence[str]) -> None:
        """Count dead-lettered records of one stage."""
        self.dead_letters[stage] = self.dead_letters.get(stage, 0) + len(reasons)
        for r in reasons:
            self.dead_letter_reasons[r] = self.dead_letter_reasons.get(r, 0) + 1

    @property
    def total(self) -> int:
        """Items decided (every route)."""
        return sum(self.items.values())
