"""The dataset store: decisions sent for labeling, every label message, and the labeled examples they make.

An embedded SQLite file (``dataset.path``), append-only: a decision is stored once per item id (at-least-once
delivery may repeat it; the first one stands), and every label message is appended as it came. The examples
are derived on read: each item's votes (:class:`selector.quality.labels.LabelBook`) resolved by quorum
majority,
joined to the decision that asked for the label, with its inclusion probability and the importance weight
``1 / pi`` that unbiased estimates and weighted retraining use. Seed examples (the labeled set a team had
before, :meth:`DatasetStore.add_seeds`) are kept apart: they train, and never judge or estimate anything.

Example:
    >>> store = DatasetStore(":memory:")
    >>> store.add_decisions([{"id": "a", "route": "query", "predicted": "ok", "probs": [0.6, 0.4],
    ...     "embedding": None, "query_probability": 0.5, "model": "v1",
    ...     "decided_at": "2026-11-24T00:00:00Z"}])
    1
    >>> store.add_labels([LabelEvent("a", "dent", "ann", 1.0), LabelEvent("zzz", "ok", "ann", 1.0)])
    ['zzz']
    >>> [(e.id, e.label, e.weight) for e in store.examples(quorum=1)]
    [('a', 'dent', 2.0)]
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import orjson
from kafka.consumer.fetcher import ConsumerRecord

from selector.errors import SelectorError
from selector.messages.timestamps import parse_ts, rfc3339
from selector.messages.to_label import Decision, ToLabelRecord, read_to_label, to_label_of
from selector.quality.consensus import ItemConsensus
from selector.quality.labels import LabelBook, LabelEvent, Resolution, parse_label

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    id TEXT PRIMARY KEY,
    route TEXT NOT NULL,
    predicted TEXT NOT NULL,
    probs TEXT NOT NULL,
    embedding TEXT,
    inclusion REAL NOT NULL,
    model TEXT,
    decided_at TEXT NOT NULL,
    accept_eligible INTEGER,
    segment TEXT,
    payload TEXT,
    meta TEXT
);
CREATE TABLE IF NOT EXISTS label_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    label TEXT,
    annotator TEXT NOT NULL,
    ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS label_events_id ON label_events (id);
CREATE TABLE IF NOT EXISTS positions (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
CREATE TABLE IF NOT EXISTS pseudo_labels (
    id TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    confidence REAL NOT NULL,
    embedding TEXT NOT NULL,
    model TEXT,
    decided_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS parked_labels (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    label TEXT,
    annotator TEXT NOT NULL,
    ts REAL NOT NULL,
    parked_at REAL NOT NULL,
    topic TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset INTEGER NOT NULL,
    kafka_timestamp INTEGER NOT NULL,
    key BLOB,
    value BLOB
);
CREATE INDEX IF NOT EXISTS parked_labels_id ON parked_labels (id);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS seed_examples (
    id TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    embedding TEXT NOT NULL,
    dim INTEGER NOT NULL,
    annotator TEXT,
    ts REAL,
    weight REAL NOT NULL,
    imported_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Example:
    """A labeled item: the resolved human label and what the model saw and said when it was decided."""

    id: str
    label: str
    votes: int
    agreement: float
    route: str
    predicted: str
    probs: list[float]
    embedding: list[float] | None
    inclusion: float
    weight: float
    model: str | None
    decided_at: str
    accept_eligible: bool | None
    """met the auto-accept rule when decided (None: decided before the rule was recorded)"""
    source: str = "human"
    """``human`` (a resolved vote), ``seed`` (imported with ``selector dataset import``: route ``seed``, no
    prediction, the weight given at import) or ``pseudo`` (an auto-accepted prediction, weight
    ``dataset.pseudo_label_weight``); seeds and pseudo-labels train, never estimate or judge a candidate"""
    segment: str | None = None
    """the prediction's line or camera id, when it had one"""


@dataclass(frozen=True)
class Seed:
    """A labeled item the team already had (``selector dataset import``): it trains and judges nothing."""

    id: str
    label: str
    embedding: list[float]
    annotator: str | None = None
    ts: float | None = None
    """when it was labeled (seconds since the epoch), if the file said"""
    weight: float = 1.0


@dataclass(frozen=True)
class Ingested:
    """What one :meth:`DatasetStore.ingest` stored, and the label messages it could not use."""

    decisions: int
    labels: int
    """label messages stored with their decision (including parked ones whose decision came now)"""
    unknown: list[ConsumerRecord]
    """label messages whose decision did not arrive within the wait (dead-letter them: reason
    ``unknown_id``)"""
    invalid: list[tuple[ConsumerRecord, str, str]]
    """label messages that are not valid: (record, reason, message)"""
    latencies: list[float]
    """seconds from each stored vote's decision to its label message"""
    pseudo_labels: int = 0
    """accepted records stored as pseudo-labels"""
    parked: int = 0
    """label messages parked after this call: their decision was not read yet"""


class DatasetStore:
    """Decisions and label messages in one SQLite file (``":memory:"`` for a throwaway store)."""

    def __init__(self, path: str | Path) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(decisions)")}
        for column, kind in (
            ("accept_eligible", "INTEGER"),
            ("segment", "TEXT"),
            ("payload", "TEXT"),
            ("meta", "TEXT"),
        ):
            if column not in columns:  # a store written before the column existed
                self._db.execute(f"ALTER TABLE decisions ADD COLUMN {column} {kind}")

    def close(self) -> None:
        self._db.close()

    @property
    def connection(self) -> sqlite3.Connection:
        """The store's SQLite connection, for a module that keeps its own tables in the same file and commits
        them in one transaction with the topic positions (the label loop's population tallies)."""
        return self._db

    def add_decisions(self, records: Iterable[dict[str, Any]]) -> int:
        """Store to-label records (as dicts); an id already stored keeps its first decision, and a record
        that is not a decision is skipped (:meth:`selector.messages.to_label.ToLabelRecord.decision`).
        Returns how many were new."""
        read = (to_label_of(r) for r in records)
        with self._db:
            return self._insert_decisions(
                [d for r in read if isinstance(r, ToLabelRecord) and (d := r.decision()) is not None]
            )

    def _insert_decisions(self, decisions: list[Decision]) -> int:
        rows = [
            (
                d.id,
                d.route,
                d.predicted,
                orjson.dumps(d.probs).decode(),
                orjson.dumps(d.embedding).decode() if d.embedding is not None else None,
                d.query_probability,
                d.model,
                d.decided_at,
                d.accept_eligible,
                d.segment,
                orjson.dumps(d.payload).decode(),
                orjson.dumps(d.meta).decode(),
            )
            for d in decisions
        ]
        before = self._db.total_changes
        self._db.executemany(
            "INSERT OR IGNORE INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
        )
        return self._db.total_changes - before

    def positions(self, topic: str) -> dict[int, int]:
        """The next offset to read per partition of ``topic`` (what is below was ingested)."""
        rows = self._db.execute("SELECT partition, next_offset FROM positions WHERE topic = ?", (topic,))
        return dict(rows.fetchall())

    def ingest(
        self,
        to_label: Sequence[ConsumerRecord],
        labels: Sequence[ConsumerRecord],
        classes: Sequence[str],
        before_commit: Callable[[Ingested], None] | None = None,
        accepted: Sequence[ConsumerRecord] = (),
        *,
        now: float = 0.0,
        unknown_label_ttl_s: float = 0.0,
    ) -> Ingested:
        """Store to-label records and label messages, and the positions after them, in one transaction:
        records below a stored position were ingested before and are skipped, so re-reading a topic after a
        restart stores nothing twice.

        A label message waits for its decision: it is parked (with its original bytes) and joined as soon as
        a decision with its id is stored, in this call or a later one (also after a restart: the parked
        messages are in the file). One still parked ``unknown_label_ttl_s`` seconds after ``now`` of the call
        that parked it comes back in :attr:`Ingested.unknown` and leaves the store. Decisions go first, so a
        label in the same call finds its item.

        ``accepted``: records of the accepted topic; those that carry an embedding (the pseudo-label sample)
        are stored as pseudo-labels.

        ``before_commit`` sees the result before the transaction commits (the label loop delivers its dead
        letters there); if it raises, nothing is stored and the positions stay, so those messages are read
        and judged again."""
        fresh_decisions = self._unread(to_label)
        parked: list[tuple[Any, ...]] = []
        invalid: list[tuple[ConsumerRecord, str, str]] = []
        for rec in self._unread(labels):
            parsed = parse_label(rec.value, classes, rec.timestamp / 1000.0)
            if isinstance(parsed, LabelEvent):
                e = parsed
                parked.append((e.id, e.label, e.annotator, e.ts, now, rec.topic, rec.partition, rec.offset,
                               rec.timestamp, rec.key, rec.value))  # fmt: skip
            else:
                invalid.append((rec, *parsed))
        with self._db:
            added = self._insert_decisions(self._decisions(fresh_decisions))
            self._db.executemany(
                "INSERT INTO parked_labels (id, label, annotator, ts, parked_at, topic, kafka_partition, "
                "kafka_offset, kafka_timestamp, key, value) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                parked,
            )
            joined, latencies = self._join_parked()
            unknown = self._expire_parked(now - unknown_label_ttl_s)
            pseudo = self._insert_pseudo(self._unread(accepted))
            ends: dict[tuple[str, int], int] = {}
            for r in [*to_label, *labels, *accepted]:
                key = (r.topic, r.partition)
                ends[key] = max(ends.get(key, 0), r.offset + 1)
            self._db.executemany(
                "INSERT INTO positions VALUES (?, ?, ?) ON CONFLICT (topic, partition) "
                "DO UPDATE SET next_offset = max(next_offset, excluded.next_offset)",
                [(t, p, o) for (t, p), o in ends.items()],
            )
            done = Ingested(added, joined, unknown, invalid, latencies, pseudo, self.parked_count())
            if before_commit is not None:
                before_commit(done)
        return done

    @staticmethod
    def _decisions(records: list[ConsumerRecord]) -> list[Decision]:
        """The decisions among to-label records; one that is not (not ours, or a tombstone) is skipped with
        a log line: it asks no label, and stopping the loop for it would stop every label behind it."""
        out = []
        for r in records:
            if r.value is None:
                continue
            read = read_to_label(r.value)
            decision = read.decision() if isinstance(read, ToLabelRecord) else None
            if decision is None:
                why = (
                    read.message
                    if not isinstance(read, ToLabelRecord)
                    else "a field the store needs is missing or of a wrong type"
                )
                log.warning("skipped %s[%d]@%d: not a decision (%s)", r.topic, r.partition, r.offset, why)
                continue
            out.append(decision)
        return out

    def _join_parked(self) -> tuple[int, list[float]]:
        """Move the parked label messages whose decision is stored into the label events (inside the
        caller's transaction); returns how many, and each vote's latency from its decision."""
        rows = self._db.execute(
            "SELECT p.seq, p.id, p.label, p.annotator, p.ts, d.decided_at FROM parked_labels p "
            "JOIN decisions d ON d.id = p.id ORDER BY p.seq"
        ).fetchall()
        if not rows:
            return 0, []
        self._db.executemany(
            "INSERT INTO label_events (id, label, annotator, ts) VALUES (?, ?, ?, ?)",
            [(rid, label, annotator, ts) for _, rid, label, annotator, ts, _ in rows],
        )
        self._db.executemany("DELETE FROM parked_labels WHERE seq = ?", [(r[0],) for r in rows])
        latencies = [ts - parse_ts(at) for _, _, label, _, ts, at in rows if label is not None]
        return len(rows), latencies

    def _expire_parked(self, parked_before: float) -> list[ConsumerRecord]:
        """Remove the parked label messages parked at or before ``parked_before`` (inside the caller's
        transaction); returns them as the records they were read as."""
        rows = self._db.execute(
            "SELECT seq, topic, kafka_partition, kafka_offset, kafka_timestamp, key, value "
            "FROM parked_labels WHERE parked_at <= ? ORDER BY seq",
            (parked_before,),
        ).fetchall()
        self._db.executemany("DELETE FROM parked_labels WHERE seq = ?", [(r[0],) for r in rows])
        return [
            ConsumerRecord(topic, partition, -1, offset, timestamp, 0, key, value, [], None, -1, -1, -1)
            for _, topic, partition, offset, timestamp, key, value in rows
        ]

    def parked_count(self) -> int:
        """Label messages waiting for their decision."""
        return int(self._db.execute("SELECT count(*) FROM parked_labels").fetchone()[0])

    def _insert_pseudo(self, records: list[ConsumerRecord]) -> int:
        rows = []
        for r in records:
            try:
                v = orjson.loads(r.value or b"")
                if isinstance(v, dict) and isinstance(v.get("embedding"), list):
                    embedding = orjson.dumps(v["embedding"]).decode()
                    row = (
                        v["id"],
                        v["label"],
                        float(v["confidence"]),
                        embedding,
                        v.get("model"),
                        v["decided_at"],
                    )
                    rows.append(row)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # not one of the monitor's accepted records: nothing to learn from
        before = self._db.total_changes
        self._db.executemany("INSERT OR IGNORE INTO pseudo_labels VALUES (?, ?, ?, ?, ?, ?)", rows)
        return self._db.total_changes - before

    def _unread(self, records: Sequence[ConsumerRecord]) -> list[ConsumerRecord]:
        cache: dict[str, dict[int, int]] = {}
        out = []
        for r in records:
            if r.topic not in cache:
                cache[r.topic] = self.positions(r.topic)
            if r.offset >= cache[r.topic].get(r.partition, 0):
                out.append(r)
        return out

    def add_labels(self, events: Iterable[LabelEvent]) -> list[str]:
        """Append label messages of known items; returns the ids of messages for items never sent for
        labeling (not stored: the caller dead-letters them)."""
        events = list(events)
        with self._db:
            known = self._insert_labels(events)
        return [e.id for e in events if e.id not in known]

    def _insert_labels(self, events: list[LabelEvent]) -> dict[str, str]:
        """Append the events of items with a stored decision (inside the caller's transaction); returns
        those items' decision times."""
        known = self._known({e.id for e in events})
        self._db.executemany(
            "INSERT INTO label_events (id, label, annotator, ts) VALUES (?, ?, ?, ?)",
            [(e.id, e.label, e.annotator, e.ts) for e in events if e.id in known],
        )
        return known

    def known(self, ids: set[str]) -> set[str]:
        """Those of ``ids`` with a stored decision."""
        return set(self._known(ids))

    def _known(self, ids: set[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        items = sorted(ids)
        for k in range(0, len(items), 500):
            part = items[k : k + 500]
            marks = ",".join("?" * len(part))
            rows = self._db.execute(f"SELECT id, decided_at FROM decisions WHERE id IN ({marks})", part)
            found.update(rows.fetchall())
        return found

    def decisions_of(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The stored decisions of ``ids`` as to-label-shaped records (``id``, ``route``, ``predicted``,
        ``probs``, ``embedding``, ``query_probability``, ``model``, ``decided_at``, ``accept_eligible``,
        ``segment``, ``payload``, ``meta``), e.g. to ask annotators for another vote; unknown ids are left
        out."""
        out: dict[str, dict[str, Any]] = {}
        rows = self._rows_of(
            ids,
            "SELECT id, route, predicted, probs, embedding, inclusion, model, decided_at, accept_eligible, "
            "segment, payload, meta FROM decisions",
        )
        for rid, route, predicted, probs, emb, pi, model, at, eligible, segment, payload, meta in rows:
            out[rid] = {
                "id": rid, "route": route, "predicted": predicted, "probs": orjson.loads(probs),
                "embedding": orjson.loads(emb) if emb is not None else None, "query_probability": pi,
                "model": model, "decided_at": at,
                "accept_eligible": None if eligible is None else bool(eligible), "segment": segment,
                "payload": orjson.loads(payload) if payload is not None else None,
                "meta": orjson.loads(meta) if meta is not None else None,
            }  # fmt: skip
        return out

    def _rows_of(self, ids: Iterable[str], select: str) -> Iterator[tuple[Any, ...]]:
        """The rows of ``select`` (``SELECT ... FROM table``) whose ``id`` is among ``ids``, each id once."""
        wanted = list(dict.fromkeys(ids))
        for start in range(0, len(wanted), 500):  # SQLite bounds the number of parameters
            chunk = wanted[start : start + 500]
            yield from self._db.execute(f"{select} WHERE id IN ({', '.join('?' * len(chunk))})", chunk)

    def get_meta(self, key: str) -> Any:
        """A JSON value the label loop keeps between runs (trigger and drift state), or None."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else orjson.loads(row[0])

    def put_meta(self, key: str, value: Any) -> None:
        with self._db:
            self._db.execute(
                "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, orjson.dumps(value).decode()),
            )

    def add_seeds(self, seeds: Sequence[Seed], now: float) -> int:
        """Store seed examples (imported at ``now``) in one transaction; an id already stored with the same
        content is left as it is. Returns how many were new.

        Raises:
            SelectorError: an id is already stored with other content (nothing is stored).
        """
        with self._db:
            stored = self.seeds_of(s.id for s in seeds)
            clash = [s.id for s in seeds if s.id in stored and stored[s.id] != s]
            if clash:
                raise SelectorError(
                    f"{len(clash)} seed ids are already stored with other content "
                    f"(first: {clash[:3]}); nothing stored"
                )
            rows = [
                (s.id, s.label, orjson.dumps(s.embedding).decode(), len(s.embedding), s.annotator, s.ts,
                 s.weight, now)
                for s in seeds
                if s.id not in stored
            ]  # fmt: skip
            self._db.executemany("INSERT INTO seed_examples VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        return len(rows)

    def seeds_of(self, ids: Iterable[str]) -> dict[str, Seed]:
        """The stored seed examples among ``ids``."""
        rows = self._rows_of(ids, "SELECT id, label, embedding, annotator, ts, weight FROM seed_examples")
        return {
            rid: Seed(rid, label, orjson.loads(embedding), annotator, ts, weight)
            for rid, label, embedding, annotator, ts, weight in rows
        }

    def seed_lengths(self) -> dict[int, int]:
        """How many stored seed examples have each embedding length."""
        return dict(self._db.execute("SELECT dim, count(*) FROM seed_examples GROUP BY dim").fetchall())

    def counts(self) -> dict[str, int]:
        """How many decisions, label messages, pseudo-labels and seed examples are stored."""
        tables = {
            "decisions": "decisions",
            "label_messages": "label_events",
            "pseudo_labels": "pseudo_labels",
            "seeds": "seed_examples",
        }
        return {
            k: int(self._db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for k, t in tables.items()
        }

    def book(self) -> LabelBook:
        """Every stored label message, applied in arrival order."""
        rows = self._db.execute("SELECT id, label, annotator, ts FROM label_events ORDER BY seq")
        return LabelBook().with_events(LabelEvent(*r) for r in rows)

    def examples(
        self,
        quorum: int = 1,
        book: LabelBook | None = None,
        pseudo_weight: float | None = None,
        *,
        seeds: bool = True,
        consensus: Mapping[str, Resolution | ItemConsensus] | None = None,
    ) -> Iterator[Example]:
        """The labeled examples: items whose votes resolve under ``quorum``, with their decisions (``book``:
        the store's votes, when the caller read them already; ``consensus``: each item's resolution, e.g.
        Dawid-Skene's from :func:`selector.quality.consensus.consensus`, else quorum majority); then, unless
        ``seeds`` is false, the seed examples of items whose votes did not resolve, in the order they were
        imported; then, with ``pseudo_weight``, the stored pseudo-labels of items no human labeled and no
        seed holds, each with that weight."""
        book = book if book is not None else self.book()
        resolved: set[str] = set()
        columns = (
            "id, route, predicted, probs, embedding, inclusion, model, decided_at, accept_eligible, segment"
        )
        for row in self._db.execute(f"SELECT {columns} FROM decisions ORDER BY decided_at, id"):
            rid, route, predicted, probs, embedding, inclusion, model, decided_at, eligible, segment = row
            if rid not in book.votes:
                continue
            r = consensus.get(rid) if consensus is not None else book.resolve(rid, quorum)
            if r is None or r.label is None:
                continue
            resolved.add(rid)
            yield Example(
                rid,
                r.label,
                r.votes,
                r.agreement,
                route,
                predicted,
                orjson.loads(probs),
                orjson.loads(embedding) if embedding is not None else None,
                inclusion,
                1.0 / inclusion,
                model,
                decided_at,
                None if eligible is None else bool(eligible),
                segment=segment,
            )

        if seeds:
            rows = self._db.execute(
                "SELECT id, label, embedding, ts, weight, imported_at FROM seed_examples ORDER BY rowid"
            )
            for rid, label, embedding, ts, weight, imported_at in rows:
                if rid in resolved:
                    continue  # labeled again here: the stream's label stands
                yield Example(rid, label, 0, math.nan, "seed", "", [], orjson.loads(embedding), 1.0, weight,
                              None, rfc3339(imported_at if ts is None else ts), None, "seed")  # fmt: skip
        if pseudo_weight is None:
            return
        seeded = {r[0] for r in self._db.execute("SELECT id FROM seed_examples")}
        rows = self._db.execute(
            "SELECT id, label, embedding, model, decided_at FROM pseudo_labels ORDER BY decided_at, id"
        )
        for rid, label, embedding, model, decided_at in rows:
            if rid in book.votes or rid in seeded:
                continue  # a human answered, or the item is a seed: that label stands
            yield Example(rid, label, 0, math.nan, "accept", label, [], orjson.loads(embedding), 1.0,
                          pseudo_weight, model, decided_at, True, "pseudo")  # fmt: skip

    def export_jsonl(
        self,
        path: str | Path,
        quorum: int = 1,
        pseudo_weight: float | None = None,
        consensus: Mapping[str, Resolution | ItemConsensus] | None = None,
    ) -> Counter[str]:
        """Write the examples (seeds too, and pseudo-labels with ``pseudo_weight``; labels by ``consensus``
        as in :meth:`examples`) as JSON lines, each marked by its ``source``; returns how many of each
        source."""
        written: Counter[str] = Counter()
        with open(path, "wb") as f:
            for e in self.examples(quorum, pseudo_weight=pseudo_weight, consensus=consensus):
                f.write(orjson.dumps(asdict(e)) + b"\n")
                written[e.source] += 1
        return written

    def export_parquet(
        self,
        path: str | Path,
        quorum: int = 1,
        pseudo_weight: float | None = None,
        consensus: Mapping[str, Resolution | ItemConsensus] | None = None,
    ) -> Counter[str]:
        """Write the examples as one Parquet file (needs pyarrow: ``pip install 'selector[parquet]'``);
        returns how many of each source. Embeddings and probabilities are list columns; an absent
        embedding is null."""
        try:
            import pyarrow as pa  # noqa: PLC0415 (optional dependency)
            import pyarrow.parquet as pq  # noqa: PLC0415
        except ImportError as exc:
            raise SelectorError("Parquet export needs pyarrow: pip install 'selector[parquet]'") from exc
        rows = [asdict(e) for e in self.examples(quorum, pseudo_weight=pseudo_weight, consensus=consensus)]
        names = [f.name for f in fields(Example)]
        table = pa.Table.from_pydict({n: [r[n] for r in rows] for n in names}, schema=_parquet_schema(pa))
        pq.write_table(table, str(path))
        return Counter(r["source"] for r in rows)


def _parquet_schema(pa: Any) -> Any:
    """The export's column types (pyarrow would infer nothing from an empty export, and nulls as null)."""
    types = {"votes": pa.int64(), "agreement": pa.float64(), "probs": pa.list_(pa.float64()),
             "embedding": pa.list_(pa.float64()), "inclusion": pa.float64(), "weight": pa.float64(),
             "accept_eligible": pa.bool_()}  # fmt: skip
    return pa.schema([(f.name, types.get(f.name, pa.string())) for f in fields(Example)])
