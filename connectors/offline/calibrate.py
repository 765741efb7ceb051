"""``selector calibrate``: fit the temperature that calibrates the model, from labeled predictions.

The input is a JSON-lines file (or stdin) of prediction records, the contract of the predictions topic, each
also carrying ``label``, the true class name. Records are decoded in chunks by the monitor's own decoder; a
record it rejects, or one without a ``label`` or with a label not in ``classes``, is counted by reason and
skipped, never fatal. The temperature is fitted by :func:`selector.quality.calibration.calibrate`, on the
record's
``logits`` when it gives them (they keep what a probability underflowed to 0 loses), else on ``log probs``.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO

import numpy as np
import orjson

from connectors.offline.recorded import numbered_lines
from selector.arrays import FloatArray, IntArray
from selector.config import Config
from selector.messages.prediction import decode_batch
from selector.quality.calibration import (
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    CalibrationReport,
    calibrate,
    logits_of,
)

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
"""The command line's exit codes (``connectors.cli.main``): success, no usable record, unreadable input."""

CHUNK_LINES = 2000
"""Lines decoded at once (the result does not depend on it)."""

EXAMPLES = 5
"""Skipped lines quoted with their reason, the first ones in file order."""

MISSING_LABEL, UNKNOWN_LABEL = "missing_label", "unknown_label"
"""Skip reasons of valid predictions, besides the decoder's reject reasons."""


@dataclass(frozen=True)
class Skip:
    """A line that was not used: its number (from 1), a reason code and a message."""

    line: int
    reason: str
    message: str


@dataclass
class LabeledPredictions:
    """The usable records of an input, as arrays, and what was skipped."""

    probs: FloatArray
    logits: FloatArray
    labels: IntArray
    records: int
    skipped: Counter[str] = field(default_factory=Counter)
    examples: list[Skip] = field(default_factory=list)


def read_labeled(stream: IO[bytes], config: Config) -> LabeledPredictions:
    """Decode every record of a JSON-lines stream and keep those with a known ``label``.

    Blank lines are ignored (their numbers still count). ``logits`` of a record that gives them are kept as
    they are; the others get ``logits_of(probs)``, which differs from logits by a per-row constant only.
    """
    n_classes = len(config.classes)
    index = {name: k for k, name in enumerate(config.classes)}
    probs: list[FloatArray] = []
    logits: list[FloatArray] = []
    labels: list[int] = []
    records = 0
    skipped: Counter[str] = Counter()
    examples: list[Skip] = []

    def skip(line: int, reason: str, message: str) -> None:
        skipped[reason] += 1
        if len(examples) < EXAMPLES:
            examples.append(Skip(line, reason, message))

    for values, lines in numbered_lines(stream, CHUNK_LINES):
        records += len(values)
        batch = decode_batch(
            values,
            np.zeros(len(values), dtype=np.int64),
            n_classes=n_classes,
            max_record_bytes=config.input.max_record_bytes,
            prob_tolerance=config.input.prob_tolerance,
        )
        # merge the decoder's rejects and the label checks into one file-ordered stream of skips
        skips = [(lines[r.position], r.reason, r.message) for r in batch.rejects]
        keep: list[int] = []
        raw_logits: dict[int, list[float]] = {}
        for row, position in enumerate(batch.position.tolist()):
            obj = _parse(values[position])
            label = obj.get("label")
            if label is None:
                skips.append((lines[position], MISSING_LABEL, "field 'label' (the true class) is missing"))
            elif not isinstance(label, str) or label not in index:
                skips.append(
                    (
                        lines[position],
                        UNKNOWN_LABEL,
                        f"'label' must be one of the configured classes {config.classes!r}: {label!r}",
                    )
                )
            else:
                if obj.get("logits") is not None:
                    raw_logits[len(keep)] = obj["logits"]
                keep.append(row)
                labels.append(index[label])
        for line, reason, message in sorted(skips):
            skip(line, reason, message)
        p = batch.probs[keep]
        z = logits_of(p)
        if raw_logits:
            z[list(raw_logits)] = np.asarray(list(raw_logits.values()), dtype=np.float64)
        probs.append(p)
        logits.append(z)
    empty = np.zeros((0, n_classes), dtype=np.float64)
    return LabeledPredictions(
        probs=np.concatenate(probs) if probs else empty,
        logits=np.concatenate(logits) if logits else empty,
        labels=np.asarray(labels, dtype=np.int64),
        records=records,
        skipped=skipped,
        examples=examples,
    )


def run_calibrate(
    config: Config, input_path: str, out: TextIO, as_json: bool = False, *, err: TextIO | None = None
) -> int:
    """The command: read labeled predictions, fit the temperature, print the report (or one JSON object).

    Args:
        config: the configuration (its ``classes`` name the labels; its ``input`` limits apply).
        input_path: a JSON-lines file, or ``-`` for stdin.
        out: where the report goes.
        as_json: print one JSON object (the :class:`CalibrationReport` fields, ``records``, ``skipped`` by
            reason and the first ``skipped_examples``) instead of the text report.
        err: where errors go (default: ``out``).

    Returns:
        0; 1 if no usable labeled record remains; 2 if the input cannot be read.
    """
    err = out if err is None else err
    source = "stdin" if input_path == "-" else input_path
    with ExitStack() as stack:
        if input_path == "-":
            stream: IO[bytes] = sys.stdin.buffer
        else:
            try:
                stream = stack.enter_context(Path(input_path).open("rb"))
            except OSError as exc:
                print(f"selector calibrate: cannot read --input {input_path!r}: {exc.strerror}", file=err)
                return EXIT_USAGE
        data = read_labeled(stream, config)
    if len(data.labels) == 0:
        print(
            f"selector calibrate: no usable labeled prediction in {source} ({data.records} records, "
            f"{_reasons(data.skipped) or 'none skipped'}); each line needs 'id', 'probs' or 'logits' "
            f"and 'label', one of {config.classes!r}",
            file=err,
        )
        for s in data.examples:
            print(f"  line {s.line}: {s.reason}: {s.message}", file=err)
        return EXIT_ERROR
    report = calibrate(data.probs, data.labels, data.logits)
    if as_json:
        out.write(json.dumps(_summary(report, data)) + "\n")
    else:
        out.write(_text(report, data, source))
    return EXIT_OK


def _parse(raw: bytes | None) -> dict[str, Any]:
    """A record the decoder accepted, parsed again (it may hold NaN elsewhere, which only ``json`` reads)."""
    assert raw is not None
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        obj = json.loads(raw)
    assert isinstance(obj, dict)
    return obj


def _reasons(skipped: Counter[str]) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items()))


def _summary(report: CalibrationReport, data: LabeledPredictions) -> dict[str, Any]:
    return {
        **asdict(report),
        "records": data.records,
        "skipped": dict(sorted(data.skipped.items())),
        "skipped_examples": [asdict(s) for s in data.examples],
    }


def _text(report: CalibrationReport, data: LabeledPredictions, source: str) -> str:
    skipped = sum(data.skipped.values())
    lines = [f"selector calibrate: {source}: {data.records} records, {report.items} used, {skipped} skipped"]
    if skipped:
        lines += [f"  skipped {n:>6} {reason}" for reason, n in sorted(data.skipped.items())]
        lines += [f"  line {s.line}: {s.reason}: {s.message}" for s in data.examples]
        if skipped > len(data.examples):
            lines.append(f"  ... {skipped - len(data.examples)} more")
    t = report.temperature
    lines += [
        "",
        f"items        {report.items}",
        f"accuracy     {report.accuracy:.4f}",
        f"temperature  {t:.4g}",
        "             before   after",
        f"NLL          {report.nll_before:<8.4f} {report.nll_after:.4f}",
        f"ECE          {report.ece_before:<8.4f} {report.ece_after:.4f}",
    ]
    if t in (MIN_TEMPERATURE, MAX_TEMPERATURE):
        lines.append(
            f"note: the temperature is at the bound of the search range [{MIN_TEMPERATURE:g}, "
            f"{MAX_TEMPERATURE:g}]; the labeled sample may be too small or too one-sided"
        )
    lines += ["", "Put this in config.yaml:", "", "calibration:", f"  temperature: {t:.4g}", ""]
    return "\n".join(lines)
