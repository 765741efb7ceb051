"""The population: every prediction the monitor decided, counted per model version, segment and time bucket.

The label loop reads the predictions topic without a consumer group, from where the dataset store says it
stopped, like the labels and to-label topics. Each record is decoded as the monitor decodes it
(:func:`selector.messages.prediction.decode_batch` under the same configuration), so the records counted are
the ones the monitor decided; one it cannot decode is not counted, only its reason is. The calibrated
probabilities (``calibration.temperature``) and the predicted class (their argmax, what the monitor routes as
``predicted``) of each item are summed into a :class:`selector.quality.population.Tally` per (model version,
segment, time bucket): the counts the prediction-powered and label-free estimates need, whatever the number of
items.

The time of an item is its ``ts`` when it has one, else the Kafka timestamp; buckets are
``quality.window_s / 48`` wide (at least 1 s), so the sliding window is cut at a bucket boundary. Buckets that
fall out of the window are folded into one row per (model, segment) that keeps the count since start: the
table holds at most 50 rows per model and segment however long the loop runs. Rows are kept per number of
classes too: a change of ``classes`` starts new ones and never mixes two class lists.

The tallies and the positions after the records go in one transaction: a restart neither loses nor counts a
record twice.

Example:
    >>> from selector.config import parse_config
    >>> from connectors.model.dataset import DatasetStore
    >>> from kafka.consumer.fetcher import ConsumerRecord
    >>> population = Population(DatasetStore(":memory:"), parse_config({"classes": ["ok", "dent"]}))
    >>> rec = ConsumerRecord("predictions", 0, -1, 0, 1_000, 0, None, b'{"id": "a", "probs": [0.9, 0.1]}',
    ...                      [], None, -1, -1, -1)
    >>> population.ingest([rec, rec._replace(offset=1, value=b"{")], now=1.0)
    Counted(items=1, rejected={'malformed_json': 1})
    >>> population.ingest([rec], now=1.0)  # read before: skipped
    Counted(items=0, rejected={})
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from kafka.consumer.fetcher import ConsumerRecord

from connectors.kafka.topic_reader import TopicReader
from connectors.model.dataset import DatasetStore
from selector.config import Config
from selector.messages.prediction import decode_batch
from selector.quality.calibration import apply_temperature
from selector.quality.population import Tally

_SCHEMA = """
CREATE TABLE IF NOT EXISTS population_tallies (
    model TEXT NOT NULL,
    segment TEXT NOT NULL,
    start REAL NOT NULL,
    classes INTEGER NOT NULL,
    n INTEGER NOT NULL,
    sums BLOB NOT NULL,
    PRIMARY KEY (model, segment, start, classes)
);
CREATE TABLE IF NOT EXISTS population_rejects (
    reason TEXT PRIMARY KEY,
    records INTEGER NOT NULL
);
"""

NONE = ""
"""How a prediction without a model version or a segment is keyed (an empty string counts as none)."""

FOLDED = -math.inf
"""The ``start`` of the row that holds a model and segment's items older than the window."""

BUCKETS = 48
"""Time buckets per ``quality.window_s``."""


def bucket_width(config: Config) -> float:
    """Width of a time bucket, seconds: ``quality.window_s / 48``, at least 1 s."""
    return max(1.0, config.quality.window_s / BUCKETS)


def window_start(config: Config, now: float) -> float:
    """Where the sliding window ending at ``now`` starts: ``now - quality.window_s`` rounded down to a bucket
    boundary (items and labels at or after it are in the window)."""
    width = bucket_width(config)
    return math.floor((now - config.quality.window_s) / width) * width


def _pack(tally: Tally) -> bytes:
    """A tally's sums as float64 bytes: ``expected`` then ``expected_sq`` (reading 1,000 rows of JSON arrays
    back took longer than every estimate computed from them)."""
    return np.concatenate([tally.expected.ravel(), tally.expected_sq.ravel()]).astype("<f8").tobytes()


def _unpack(n: int, sums: bytes) -> Tally:
    flat = np.frombuffer(sums, dtype="<f8")
    c = math.isqrt(len(flat) // 2)
    return Tally(n, flat[: c * c].reshape(c, c), flat[c * c :].reshape(c, c))


@dataclass(frozen=True)
class Counted:
    """What one :meth:`Population.ingest` counted."""

    items: int
    """predictions added to the tallies"""
    rejected: dict[str, int]
    """records not counted, by the decoder's reason"""


@dataclass(frozen=True)
class Cell:
    """The tally of one model version, segment and time bucket."""

    model: str | None
    segment: str | None
    start: float
    """the bucket's start, seconds (:data:`FOLDED`: every item older than the window)"""
    tally: Tally


class Population:
    """The population tallies in the dataset store's file (it creates its tables)."""

    def __init__(self, store: DatasetStore, config: Config) -> None:
        self.store = store
        self.config = config
        self.topic = config.topics.predictions
        self._db = store.connection  # tallies and positions commit in one transaction
        with self._db:
            self._db.executescript(_SCHEMA)

    def ingest(self, records: Sequence[ConsumerRecord], now: float) -> Counted:
        """Count the records of the predictions topic not counted before, and store the positions after them,
        in one transaction (records below a stored position were counted before and are skipped).

        1. decode the new records (the monitor's rules), calibrate, take the argmax;
        2. sum a tally per (model, segment, bucket) and add it to the stored one;
        3. fold the buckets that left the window ending at ``now`` into their model and segment's older row;
        4. add the rejects to their reasons' counts and advance the positions; commit.
        """
        start = self.store.positions(self.topic)
        fresh = [r for r in records if r.offset >= start.get(r.partition, 0)]
        cfg = self.config
        batch = decode_batch(
            [r.value for r in fresh], np.array([r.timestamp for r in fresh], np.int64), **cfg.decode_options()
        )
        rejected = dict(Counter(r.reason for r in batch.rejects))
        cells = self._tallies(batch.probs, batch.model, batch.segment, batch.ts_s, window_start(cfg, now))
        ends: dict[int, int] = {}
        for r in records:
            ends[r.partition] = max(ends.get(r.partition, 0), r.offset + 1)
        with self._db:
            self._add(cells.items())
            self._fold(window_start(cfg, now))
            self._db.executemany(
                "INSERT INTO population_rejects VALUES (?, ?) ON CONFLICT (reason) "
                "DO UPDATE SET records = records + excluded.records",
                list(rejected.items()),
            )
            self._advance(ends)
        return Counted(len(batch), rejected)

    def _tallies(
        self,
        probs: np.ndarray,
        model: list[str | None],
        segment: list[str | None],
        ts_s: np.ndarray,
        cut: float,
    ) -> dict[tuple[str, str, float], Tally]:
        """One tally per (model, segment, bucket start) over the decoded rows; rows before ``cut`` (late
        items) go straight to the folded row."""
        if len(probs) == 0:
            return {}
        calibrated = apply_temperature(probs, self.config.calibration.temperature)
        predicted = calibrated.argmax(axis=1)
        width = bucket_width(self.config)
        start = np.floor(ts_s / width) * width
        start[start < cut] = FOLDED
        models, m = np.unique(np.array([v or NONE for v in model], dtype=str), return_inverse=True)
        segments, s = np.unique(np.array([v or NONE for v in segment], dtype=str), return_inverse=True)
        starts, b = np.unique(start, return_inverse=True)
        key = (m.ravel() * len(segments) + s.ravel()) * len(starts) + b.ravel()
        groups, inverse = np.unique(key, return_inverse=True)
        order = np.argsort(inverse.ravel(), kind="stable")
        bounds = np.cumsum(np.bincount(inverse.ravel(), minlength=len(groups)))[:-1]
        out = {}
        for g, rows in zip(groups.tolist(), np.split(order, bounds), strict=True):
            rest, kb = divmod(g, len(starts))
            km, ks = divmod(rest, len(segments))
            out[(str(models[km]), str(segments[ks]), float(starts[kb]))] = Tally.of_batch(
                calibrated[rows], predicted[rows]
            )
        return out

    def _add(self, cells: Iterable[tuple[tuple[str, str, float], Tally]]) -> None:
        """Add tallies to the stored ones of as many classes (inside the caller's transaction): a change of
        ``classes`` starts new rows and never mixes two class lists."""
        for (model, segment, start), tally in cells:
            key = (model, segment, start, tally.expected.shape[0])
            row = self._db.execute(
                "SELECT n, sums FROM population_tallies WHERE model = ? AND segment = ? AND start = ? "
                "AND classes = ?",
                key,
            ).fetchone()
            total = tally if row is None else _unpack(*row) + tally
            self._db.execute(
                "INSERT OR REPLACE INTO population_tallies VALUES (?, ?, ?, ?, ?, ?)",
                (*key, total.n, _pack(total)),
            )

    def _fold(self, cut: float) -> None:
        """Fold the buckets that start before ``cut`` into their model and segment's older row."""
        rows = self._db.execute(
            "SELECT model, segment, classes, n, sums FROM population_tallies WHERE start < ? AND start > ?",
            (cut, FOLDED),
        ).fetchall()
        if not rows:
            return
        old: dict[tuple[str, str, int], Tally] = {}
        for model, segment, classes, n, sums in rows:
            key = (model, segment, classes)
            t = _unpack(n, sums)
            old[key] = old[key] + t if key in old else t
        self._db.execute("DELETE FROM population_tallies WHERE start < ? AND start > ?", (cut, FOLDED))
        self._add(((model, segment, FOLDED), t) for (model, segment, _), t in old.items())

    def _advance(self, ends: dict[int, int]) -> None:
        self._db.executemany(
            "INSERT INTO positions VALUES (?, ?, ?) ON CONFLICT (topic, partition) "
            "DO UPDATE SET next_offset = max(next_offset, excluded.next_offset)",
            [(self.topic, p, o) for p, o in ends.items()],
        )

    def cells(self) -> list[Cell]:
        """Every stored tally of the configured classes."""
        rows = self._db.execute(
            "SELECT model, segment, start, n, sums FROM population_tallies WHERE classes = ? ORDER BY start",
            (len(self.config.classes),),
        )
        return [
            Cell(model or None, segment or None, start, _unpack(n, sums))
            for model, segment, start, n, sums in rows
        ]

    def other_classes(self) -> dict[int, int]:
        """Items counted under another number of classes than the configured one (a store written under
        another configuration), per number of classes."""
        rows = self._db.execute(
            "SELECT classes, sum(n) FROM population_tallies WHERE classes != ? GROUP BY classes "
            "ORDER BY classes",
            (len(self.config.classes),),
        )
        return dict(rows.fetchall())

    def rejected(self) -> dict[str, int]:
        """Records of the predictions topic not counted since start, by reason."""
        rows = self._db.execute("SELECT reason, records FROM population_rejects ORDER BY reason")
        return dict(rows.fetchall())


def count_new(
    reader: TopicReader,
    population: Population,
    now: float,
    chunk: int = 20_000,
    most: int = 200_000,
    timeout_s: float = 5.0,
) -> Counted:
    """Read the predictions after the reader's position and count them, ``chunk`` records per transaction,
    until a poll returns nothing, ``most`` records were read or ``timeout_s`` passed (a backlog of days is
    read over several rounds, never held in memory at once)."""
    counted: list[Counted] = []
    deadline = time.monotonic() + timeout_s
    read = 0
    pending: list[ConsumerRecord] = []
    while read < most and time.monotonic() < deadline:
        polled = reader.read_new(timeout_s=0.2)
        pending += polled
        read += len(polled)
        if pending and (not polled or len(pending) >= chunk):
            counted.append(population.ingest(pending, now))
            pending = []
        if not polled:
            break
    if pending:
        counted.append(population.ingest(pending, now))
    rejected = Counter[str]()
    for c in counted:
        rejected.update(c.rejected)
    return Counted(sum(c.items for c in counted), dict(rejected))


def predicted_counts(store: DatasetStore) -> dict[str, int]:
    """How many stored decisions predicted each class (``selector status`` checks them against
    ``classes``)."""
    rows = store.connection.execute("SELECT predicted, count(*) FROM decisions GROUP BY predicted")
    return dict(rows.fetchall())
