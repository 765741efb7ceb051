"""``selector replay``: what a configuration would have done on recorded predictions.

The records are read from a JSON-lines file (one prediction per line, the contract of the predictions topic)
or from a whole topic, decoded with :func:`~selector.messages.prediction.decode_batch` in chunks of
``chunk_records``,
and decided by the monitor's own code, :meth:`Router.decide <selector.routing.Router.decide>` then
:meth:`Router.commit <selector.routing.Router.commit>`. Differences from the live monitor, on purpose:

- Time is the records' own: a record's ``ts``; without one, from a topic, its Kafka timestamp; from a file,
  ``(line number - 1) / rate`` seconds after the epoch when ``--rate`` is given, else the record is invalid
  (reason ``missing_ts``): caps are per minute/hour/day, so an invented clock would invent their headroom.
  Items are decided on the caps' clock, these times made non-decreasing; each output line carries both
  (``decided_at`` and ``ts``).
- Everything is decided as one partition: one controller with the whole of every cap. The live monitor
  splits the stream over the topic's partitions, each with its own controller and share of the caps.
- No labels come back during a replay: a labeled item stays pending until ``pending.ttl_s``
expires.
- Nothing is produced and no offsets are committed (see :mod:`connectors.offline.recorded` for how a topic is
read).

Invalid records are counted by reason, as the monitor dead-letters them, and never stop the run. Decisions
depend only on the configuration (``budget.seed``) and the input, so two replays write identical bytes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import fields, replace
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson

from connectors.offline.pools import PoolTally, configuration
from connectors.offline.recorded import Chunk, ReplayUsageError, jsonl_chunks, topic_chunks
from connectors.offline.truth import TruthTally
from selector.arrays import FloatArray, IntArray
from selector.budget.whatif import WhatIf
from selector.config import Config
from selector.messages.prediction import Batch, decode_batch
from selector.messages.timestamps import rfc3339
from selector.routing import ROUTES, Decisions, Router

log = logging.getLogger(__name__)

PARTITION = 0
"""The one partition everything is decided as."""

EXIT_OK, EXIT_USAGE = 0, 2
"""The command line's exit codes for success and for invalid configuration or usage."""

_NO_TS_MS = -1
"""Broker timestamp handed to the decoder: a record's own ``ts`` is never negative, so ``ts_s < 0`` marks a
record without one."""

_OUTPUT_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE


def _rows(batch: Batch, keep: IntArray) -> Batch:
    """The batch restricted to rows ``keep``: every per-row column is indexed, whatever columns it has."""
    n, k = len(batch), keep.tolist()
    columns: dict[str, Any] = {}
    for f in fields(batch):
        value = getattr(batch, f.name)
        if isinstance(value, np.ndarray) and len(value) == n:
            columns[f.name] = value[keep]
        elif isinstance(value, list) and len(value) == n and f.name != "rejects":
            columns[f.name] = [value[i] for i in k]
    return replace(batch, **columns)


def _where(origin: dict[str, int]) -> str:
    return " ".join(f"{k} {v}" for k, v in origin.items())


def _truth(values: list[bytes | None], positions: IntArray) -> list[str | None] | None:
    """The ground-truth ``label`` of each decided record (None: absent); None if no record has one."""
    out: list[str | None] = []
    found = False
    for p in positions.tolist():
        raw = values[p]
        label = None
        if raw is not None and b'"label"' in raw:  # parse again only the records that may carry one
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError:  # NaN or Infinity elsewhere in the record: the decoder took it
                obj = json.loads(raw)
            value = obj.get("label")
            if value is not None:
                label, found = (value if isinstance(value, str) else json.dumps(value)), True
        out.append(label)
    return out if found else None


def decision_lines(
    batch: Batch,
    decisions: Decisions,
    decided: FloatArray,
    t: FloatArray,
    classes: list[str],
    origin: list[dict[str, int]],
    truth: list[str | None] | None,
) -> bytes:
    """One JSON line per decided record, keys sorted, floats in orjson's shortest round-trip form; with the
    decision time ``decided`` (the caps' clock) and the record's own time ``t``."""
    out = bytearray()
    route = decisions.route.tolist()
    score = decisions.score.tolist()
    scores = {k: v.tolist() for k, v in decisions.scores.items()}
    threshold = decisions.threshold.tolist()
    inclusion = decisions.inclusion.tolist()
    predicted = decisions.predicted.tolist()
    confidence = decisions.confidence.tolist()
    positions = batch.position.tolist()
    for i, rid in enumerate(batch.ids):
        value: dict[str, Any] = {
            "id": rid,
            "route": ROUTES[route[i]],
            "score": score[i],
            "scores": {k: v[i] for k, v in scores.items()},
            "threshold": threshold[i] if np.isfinite(threshold[i]) else None,
            "query_probability": inclusion[i],
            "selected_by": decisions.selected_by[i],
            "predicted": classes[predicted[i]],
            "confidence": confidence[i],
            "segment": batch.segment[i],
            "label": truth[i] if truth is not None else None,
            "decided_at": rfc3339(float(decided[i])),
            "ts": rfc3339(float(t[i])),
            **origin[positions[i]],
        }
        out += orjson.dumps(value, option=_OUTPUT_OPTIONS)
    return bytes(out)


def replay(
    config: Config, chunks: Iterable[Chunk], *, decisions_out: IO[bytes] | None = None
) -> dict[str, Any]:
    """Decide every record of ``chunks`` as the monitor would; returns the summary (see
    selector.budget.whatif, with the accept side of :mod:`connectors.offline.truth` and the configuration
    table of :mod:`connectors.offline.pools`).

    For each chunk: decode; count the invalid records; take each record's time; decide; commit; account the
    decisions; write one line per decided record to ``decisions_out``. The input's ``digest`` (SHA-256 of
    the raw records in replay order) tells whether two summaries replayed the same records.
    """
    router = Router(config)
    whatif, truths, pools = WhatIf(config), TruthTally(config), PoolTally(config)
    digest = hashlib.sha256()
    records = own_ts = fallback_ts = 0
    for chunk in chunks:
        records += len(chunk.values)
        digest.update(b"".join((v or b"") + b"\n" for v in chunk.values))
        batch = decode_batch(
            chunk.values,
            np.full(len(chunk.values), _NO_TS_MS, dtype=np.int64),
            **config.decode_options(),
        )
        fallback = chunk.fallback_s[batch.position]
        has_ts = batch.ts_s >= 0
        untimed = np.flatnonzero(~has_ts & np.isnan(fallback))
        rejects = [(r.position, r.reason, r.message) for r in batch.rejects]
        if len(untimed):
            rejects += [
                (
                    int(batch.position[i]),
                    "missing_ts",
                    "record has no 'ts'; give --rate ITEMS_PER_S to decide records without one "
                    "at a steady rate",
                )
                for i in untimed.tolist()
            ]
            keep = np.flatnonzero(has_ts | ~np.isnan(fallback))
            batch, fallback, has_ts = _rows(batch, keep), fallback[keep], has_ts[keep]
        rejects.sort()
        whatif.add_invalid(
            [_where(chunk.origin[p]) for p, _, _ in rejects],
            [r for _, r, _ in rejects],
            [m for _, _, m in rejects],
        )
        own_ts += int(np.count_nonzero(has_ts))
        fallback_ts += int(np.count_nonzero(~has_ts))
        t: FloatArray = np.where(has_ts, batch.ts_s, fallback)
        decisions = router.decide(PARTITION, batch, t)
        router.commit(PARTITION, decisions)
        truth = _truth(chunk.values, batch.position)
        decided = whatif.add(decisions, t, batch.segment, truth)
        truths.add(decisions, truth)
        pools.add(decisions, batch.segment)
        if decisions_out is not None:
            decisions_out.write(
                decision_lines(batch, decisions, decided, t, config.classes, chunk.origin, truth)
            )
    summary = whatif.summary()
    summary["input"] = {
        "records": records,
        "digest": f"sha256:{digest.hexdigest()[:16]}",
        "ts_from_records": own_ts,
        "ts_fallback": fallback_ts,
    }
    reserved = pools.reserved(config, summary["items"], summary["spend"], summary["shortfall"])
    summary["config"].update(configuration(config, reserved))
    outcomes = truths.outcomes()
    for name, by in summary["ground_truth"]["by_class"].items():
        by.update(outcomes[name])
    summary["accept"] = truths.precision()
    summary["defect_capture"] = truths.defect_capture()
    return summary


def run_replay(
    config: Config,
    *,
    input_path: str | None,
    topic: str | None,
    output: str | None,
    report: str | None,
    rate_per_s: float | None,
) -> int:
    """The command: replay, write the decisions and the report, print the JSON summary on stdout.

    Returns:
        0, or 2 (usage) with the reason on stderr. Broker errors propagate to the command line.
    """
    if rate_per_s is not None and not rate_per_s > 0:
        return _usage(f"--rate must be > 0 items per second: {rate_per_s:g}")
    for name, path in (("--output", output), ("--report", report)):
        if path is not None and not Path(path).resolve().parent.is_dir():
            return _usage(f"{name}: directory of {path!r} does not exist")
    started = time.monotonic()
    try:
        with ExitStack() as stack:
            if topic is not None:
                chunks: Iterable[Chunk] = topic_chunks(config, topic)
                source = f"topic {topic} at {config.kafka.bootstrap_servers}"
            else:
                assert input_path is not None
                stream = sys.stdin.buffer if input_path == "-" else _open_input(stack, input_path)
                chunks = jsonl_chunks(stream, rate_per_s=rate_per_s)
                source = "stdin" if input_path == "-" else input_path
            out = stack.enter_context(Path(output).open("wb")) if output is not None else None
            summary = replay(config, chunks, decisions_out=out)
    except ReplayUsageError as exc:
        return _usage(str(exc))
    summary["input"] = {"source": source, **summary["input"]}
    if rate_per_s is not None:
        summary["input"]["rate_per_s"] = rate_per_s
    if report is not None:
        from connectors.offline.report import render_report  # noqa: PLC0415 (only when a report is asked for)

        Path(report).write_text(render_report(summary), encoding="utf-8")
    sys.stdout.write(orjson.dumps(_ordered(summary), option=orjson.OPT_INDENT_2).decode() + "\n")
    log.info(
        "replayed %d records (%d decided) in %.1f s",
        summary["input"]["records"],
        summary["items"],
        time.monotonic() - started,
    )
    if summary["invalid"]["by_reason"].get("missing_ts") and summary["items"] == 0:
        log.warning("no record carries 'ts': give --rate ITEMS_PER_S to replay them at a steady rate")
    return EXIT_OK


def run_compare(
    paths: tuple[str, ...], *, report: str | None, output: str | None, rate_per_s: float | None
) -> int:
    """The command with ``--compare A.json B.json``: print the two summaries side by side (and write the
    HTML page to ``report``).

    Returns:
        0, or 2 (usage) with the reason on stderr: an option that only a replay takes, a file that is not a
        replay summary, summaries of different inputs.
    """
    from connectors.offline.compare import compare  # noqa: PLC0415 (only when a comparison is asked for)

    for name, given in (("--output", output), ("--rate", rate_per_s)):
        if given is not None:
            return _usage(f"{name} applies to a replay, not to --compare (which replays nothing)")
    a, b = paths
    try:
        text, warning = compare((a, b), report)
    except ReplayUsageError as exc:
        return _usage(str(exc))
    if warning:
        print(f"selector replay: warning: {warning}", file=sys.stderr)
    sys.stdout.write(text)
    return EXIT_OK


def _open_input(stack: ExitStack, path: str) -> IO[bytes]:
    try:
        return stack.enter_context(Path(path).open("rb"))
    except OSError as exc:
        raise ReplayUsageError(f"cannot read --input {path!r}: {exc.strerror}") from exc


def _ordered(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary with the input and headline figures first."""
    first = ("input", "config", "items", "time", "invalid", "routes", "rates")
    return {**{k: summary[k] for k in first if k in summary}, **summary}


def _usage(message: str) -> int:
    print(f"selector replay: {message}", file=sys.stderr)
    return EXIT_USAGE
