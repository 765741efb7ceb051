"""Seed examples: the labeled set a team already has, read from a file and stored in the dataset store.

``selector dataset import FILE`` (and the demo, for its seed digits) call :func:`import_seeds`. The file is
JSON lines or Parquet, one row per item: ``label`` (a configured class), ``embedding`` (a list of numbers;
``features`` is the same field under another name), and optionally ``id``, ``annotator`` and ``ts`` (RFC 3339
or epoch milliseconds, as in a label message). A row without an ``id`` gets one derived from its content
(``seed-`` and 16 hex digits of a SHA-256), so importing the same file again stores nothing twice.

Every row is checked before anything is stored, and one bad row stores nothing: a label that is not a class,
an embedding that is not a list of finite numbers or whose length differs from ``input.embedding_dim`` (or,
unset, from the seeds already stored, or else from most rows of the file), a missing field, an id given twice
with different content, an id stored before with different content. Other fields are ignored, so a
``selector dataset export`` file of another deployment imports as it is.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "seed.jsonl"
    >>> rows = ['{"label": "ok", "embedding": [0.1, 0.2]}', '{"label": "dent", "features": [1, 0]}']
    >>> _ = path.write_text("\\n".join(rows))
    >>> store = DatasetStore(":memory:")
    >>> done = import_seeds(store, path, ["ok", "dent"], None, now=0.0)
    >>> done.new, done.by_label, [e.source for e in store.examples()]
    (2, {'ok': 1, 'dent': 1}, ['seed', 'seed'])
    >>> import_seeds(store, path, ["ok", "dent"], None, now=1.0).already
    2
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from connectors.model.dataset import DatasetStore, Seed
from selector.errors import SelectorError
from selector.messages.timestamps import parse_ts

SHOWN = 5
"""Rows named per kind of problem; the rest are counted."""


class SeedFileError(SelectorError):
    """The file cannot be imported (``problems``: one line each, naming rows); nothing was stored."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        lines = "\n  ".join(problems)
        super().__init__(f"cannot import {path}: nothing stored\n  {lines}")


@dataclass(frozen=True)
class SeedImport:
    """What :func:`import_seeds` stored (or, on a dry run, would store)."""

    path: str
    rows: int
    """rows read"""
    seeds: int
    """distinct seed examples among them (a row repeated with the same content counts once)"""
    new: int
    already: int
    """already in the store with the same content"""
    by_label: dict[str, int]
    dry_run: bool

    def summary(self) -> str:
        """The command's one line: ``N seed examples stored from FILE (n new, k already there); by label``."""
        labels = ", ".join(f"{name} {n:,}" for name, n in self.by_label.items() if n)
        repeated = (
            f"; {_rows(self.rows - self.seeds)} repeated, counted once" if self.rows > self.seeds else ""
        )
        verb = "would be stored" if self.dry_run else "stored"
        return (
            f"{self.seeds:,} seed examples {verb} from {self.path} ({self.new:,} new, {self.already:,} "
            f"already there); by label: {labels or 'none'}{repeated}"
            + ("; dry run: nothing stored" if self.dry_run else "")
        )


def import_seeds(
    store: DatasetStore | None,
    path: str | Path,
    classes: Sequence[str],
    embedding_dim: int | None,
    *,
    weight: float = 1.0,
    fmt: str | None = None,
    dry_run: bool = False,
    now: float,
) -> SeedImport:
    """Read, check and store the seed examples of ``path`` (format ``jsonl`` or ``parquet``; default by the
    file's suffix), each with ``weight``, all or nothing. ``store`` None: no store exists yet (a dry run
    then reports every row as new).

    Raises:
        SeedFileError: the file is unreadable or a row is not valid; nothing is stored.
    """
    name = str(path)
    if not (math.isfinite(weight) and weight > 0):
        raise SeedFileError(name, [f"--weight must be a positive finite number: {weight!r}"])
    fmt = fmt or ("parquet" if name.endswith(".parquet") else "jsonl")
    rows = _parquet_rows(path) if fmt == "parquet" else _jsonl_rows(path)
    stored_lengths = store.seed_lengths() if store is not None else {}
    seeds, where = _validate(name, rows, classes, embedding_dim, stored_lengths)
    seeds = [replace(s, weight=weight) for s in seeds]
    stored = store.seeds_of(s.id for s in seeds) if store is not None else {}
    conflicts = [
        f"{where[s.id]}: id {s.id!r} is already stored with other content ({_differences(stored[s.id], s)})"
        for s in seeds
        if s.id in stored and stored[s.id] != s
    ]
    if conflicts:
        more = len(conflicts) - SHOWN
        raise SeedFileError(
            name, conflicts[:SHOWN] + ([f"... and {more} more stored ids"] if more > 0 else [])
        )
    new = sum(s.id not in stored for s in seeds)
    if store is not None and not dry_run:
        store.add_seeds(seeds, now)
    counts = Counter(s.label for s in seeds)
    return SeedImport(
        name, len(rows), len(seeds), new, len(seeds) - new, {c: counts[c] for c in classes}, dry_run
    )


def _differences(old: Seed, new: Seed) -> str:
    names = [
        f for f in ("label", "embedding", "annotator", "ts", "weight") if getattr(old, f) != getattr(new, f)
    ]
    shown = {
        "label": f"label {old.label!r}, this file {new.label!r}",
        "weight": f"weight {old.weight:g}, this import {new.weight:g}: its first import set it",
    }
    return "; ".join(shown.get(n, n) for n in names)


def _rows(n: int) -> str:
    return f"{n:,} row{'' if n == 1 else 's'}"


def _jsonl_rows(path: str | Path) -> list[tuple[str, Any]]:
    """(``line N``, the parsed value or the parse error) of every non-blank line."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SeedFileError(str(path), [f"cannot read the file ({exc.strerror or exc})"]) from exc
    rows: list[tuple[str, Any]] = []
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((f"line {number}", orjson.loads(line)))
        except orjson.JSONDecodeError as exc:
            try:  # NaN, Infinity or 1e400 (Python's json writes them): read, to be refused as non-finite
                rows.append((f"line {number}", json.loads(line)))
            except ValueError:
                rows.append((f"line {number}", exc))
    return rows


def _parquet_rows(path: str | Path) -> list[tuple[str, Any]]:
    """(``row N``, the row as a dict) of every row of a Parquet file (needs pyarrow)."""
    try:
        import pyarrow.parquet as pq  # noqa: PLC0415 (optional dependency)
    except ImportError as exc:
        raise SeedFileError(
            str(path), ["reading Parquet needs pyarrow: pip install 'selector[parquet]' (or use JSON lines)"]
        ) from exc
    try:
        table = pq.read_table(str(path))
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise SeedFileError(str(path), [f"cannot read it as Parquet ({exc})"]) from exc
    return [(f"row {k}", row) for k, row in enumerate(table.to_pylist(), start=1)]


def _validate(
    path: str,
    rows: list[tuple[str, Any]],
    classes: Sequence[str],
    embedding_dim: int | None,
    stored_lengths: dict[int, int],
) -> tuple[list[Seed], dict[str, str]]:
    """The distinct seeds of the rows and where each id first appears; raises :class:`SeedFileError` with
    every kind of problem found, a few rows each."""
    problems: dict[str, list[str]] = defaultdict(list)
    unknown: dict[str, list[str]] = defaultdict(list)
    read: list[tuple[str, Seed]] = []
    for where, value in rows:
        seed = _seed(where, value, problems)
        if seed is None:
            continue
        if seed.label not in classes:
            unknown[seed.label].append(where)
        read.append((where, seed))
    if not rows:
        problems["empty"].append("the file holds no rows")

    lengths = Counter(len(s.embedding) for _, s in read)
    if embedding_dim is not None:
        expected, whose = embedding_dim, "input.embedding_dim"
    elif stored_lengths:
        expected, whose = max(stored_lengths, key=lambda n: stored_lengths[n]), "the seeds already stored"
    else:
        expected, whose = (lengths.most_common(1)[0][0] if lengths else 0), "most rows of this file"
    for where, s in read:
        if len(s.embedding) != expected:
            problems["length"].append(
                f"{where}: the embedding has {len(s.embedding)} numbers, expected {expected} ({whose})"
            )

    first: dict[str, tuple[str, Seed]] = {}
    for where, s in read:
        if s.id not in first:
            first[s.id] = (where, s)
        elif first[s.id][1] != s:
            problems["duplicate"].append(
                f"{where}: id {s.id!r} was given on {first[s.id][0]} with other content"
            )

    lines = [
        line
        for found in problems.values()
        for line in found[:SHOWN]
        + ([f"... and {len(found) - SHOWN} more like it"] if len(found) > SHOWN else [])
    ]
    if unknown:
        listed = ", ".join(
            f"{label!r} ({_rows(len(at))}: {', '.join(at[:SHOWN])}{', ...' if len(at) > SHOWN else ''})"
            for label, at in sorted(unknown.items(), key=lambda kv: -len(kv[1]))
        )
        lines.insert(0, f"unknown labels: {listed}; the configured classes are {list(classes)}")
    if lines:
        raise SeedFileError(path, lines)
    return [s for _, s in first.values()], {rid: where for rid, (where, _) in first.items()}


def _seed(where: str, value: Any, problems: dict[str, list[str]]) -> Seed | None:
    """The row as a seed with its id (given or derived), or None with its problems noted."""
    if isinstance(value, orjson.JSONDecodeError):
        problems["json"].append(f"{where}: not valid JSON ({value})")
        return None
    if not isinstance(value, dict):
        problems["object"].append(f"{where}: a row must be a JSON object, got {type(value).__name__}")
        return None
    bad: list[str] = []
    label = value.get("label")
    if label is None:
        bad.append("'label' is missing")
    elif not isinstance(label, str):
        bad.append(f"'label' must be a class name: {label!r}")
    given = [k for k in ("embedding", "features") if value.get(k) is not None]
    if len(given) == 2 and value["embedding"] != value["features"]:
        bad.append("'embedding' and 'features' differ (give one)")
    embedding = value.get(given[0]) if given else None
    numbers = _numbers(embedding)
    if embedding is None:
        bad.append("'embedding' (or 'features') is missing")
    elif numbers is None:
        bad.append(f"'{given[0]}' must be a non-empty list of numbers")
    elif not all(map(math.isfinite, numbers)):
        at = next(k for k, v in enumerate(numbers) if not math.isfinite(v))
        bad.append(f"'{given[0]}' holds a non-finite number ({numbers[at]}) at position {at}")
    rid = value.get("id")
    if rid is not None and (isinstance(rid, bool) or not isinstance(rid, str | int) or rid == ""):
        bad.append(f"'id' must be a non-empty string or an integer: {rid!r}")
    annotator = value.get("annotator")
    if annotator is not None and (not isinstance(annotator, str) or not annotator):
        bad.append(f"'annotator' must be a non-empty string: {annotator!r}")
    ts = _ts(value.get("ts"), bad)
    if bad or not isinstance(label, str) or numbers is None:
        problems["row"].append(f"{where}: {', '.join(bad)}")
        return None
    content = Seed("", label, numbers, annotator, ts)
    return replace(content, id=str(rid) if rid is not None else _derived_id(content))


def _numbers(value: Any) -> list[float] | None:
    """The list's numbers as floats, or None if it is not a non-empty list of numbers (a bool is none)."""
    if not isinstance(value, list) or not value or not set(map(type, value)) <= {int, float}:
        return None  # map and set run in C: a per-number isinstance was most of an import's time
    return list(map(float, value))


def _ts(value: Any, bad: list[str]) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):  # a Parquet timestamp column
        if value.tzinfo is None:
            bad.append(f"'ts' must carry a time zone: {value.isoformat()}")
            return None
        return value.timestamp()
    try:
        return parse_ts(value)
    except ValueError as exc:
        bad.append(str(exc))
        return None


def _derived_id(content: Seed) -> str:
    """``seed-`` and 16 hex digits of the SHA-256 of the row's content (label, embedding, annotator, ts)."""
    data = orjson.dumps([content.label, content.embedding, content.annotator, content.ts])
    return "seed-" + hashlib.sha256(data).hexdigest()[:16]
