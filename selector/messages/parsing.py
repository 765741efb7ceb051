"""Parsing a polled batch of raw JSON records, for :mod:`selector.messages.prediction`.

The whole batch is parsed by ``orjson`` in one ``map`` when nothing in it is empty, oversize, malformed or
possibly nested deeper than orjson can encode again; otherwise record by record, each failure with its reason
code (``empty``, ``oversize``, ``malformed_json``, ``not_an_object``) and message.

Decoding runs with the cyclic garbage collector paused (:func:`collector_paused`): parsed JSON holds no
reference cycles, so a collection in the middle of a batch frees nothing and only walks the batch's young
containers again (docs/performance.md, "Decoding and encoding").
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import orjson

MAX_ENCODABLE_DEPTH = 254
"""orjson refuses to encode deeper nesting; a record nested deeper could not be passed through to outputs."""
_SHORT = 2 * MAX_ENCODABLE_DEPTH
"""A record this short cannot open and close brackets enough to nest too deep."""

Failure = tuple[int, str, str]
"""A record that is not a parsed object: its position in the batch, a reason code and a message."""


@contextmanager
def collector_paused() -> Iterator[None]:
    """Run the block with the cyclic garbage collector off, if it was on (``gc`` is no I/O: the core may use
    it).

    Nested pauses, and a pause while the collector is off, leave it as they found it. The pause is
    process-wide: another thread's allocations during it are not collected until the first collection after
    it, which also walks what the block allocated and kept, once, as one young generation. A thread that turns
    the collector off for good while another thread's pause runs has it turned back on when that pause ends.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def parse_batch(
    values: Sequence[bytes | None], max_record_bytes: int
) -> tuple[list[int], list[Any], list[Failure]]:
    """The positions and parsed objects of the records that are JSON objects, and a failure for each other.

    The whole batch is parsed in one pass when nothing in it is empty, oversize, malformed or too deep;
    otherwise record by record."""
    longest = max(map(len, values)) if values and None not in values else None  # type: ignore[arg-type]
    if longest is not None and longest <= max_record_bytes:
        raws: Sequence[bytes] = values  # type: ignore[assignment]
        try:
            objs = list(map(orjson.loads, raws))
        except orjson.JSONDecodeError:
            pass
        else:
            if set(map(type, objs)) == {dict} and (longest <= _SHORT or not any(map(_may_be_too_deep, raws))):
                return list(range(len(objs))), objs, []
    at: list[int] = []
    objs = []
    failures: list[Failure] = []
    for i, raw in enumerate(values):
        parsed = _parse_one(raw, max_record_bytes)
        if isinstance(parsed, tuple):
            failures.append((i, *parsed))
        else:
            at.append(i)
            objs.append(parsed)
    return at, objs, failures


def _parse_one(raw: bytes | None, max_record_bytes: int) -> dict[str, Any] | tuple[str, str]:
    """One record's parsed object, or the (reason, message) it is rejected with."""
    if raw is None:
        return "empty", "record value is empty (tombstone)"
    if len(raw) > max_record_bytes:
        return "oversize", f"record is {len(raw)} bytes, limit 'input.max_record_bytes' is {max_record_bytes}"
    try:
        obj = _loads(raw)
    except (ValueError, RecursionError) as exc:
        return "malformed_json", f"not valid JSON: {exc}"
    if not isinstance(obj, dict):
        return "not_an_object", f"a prediction must be a JSON object, got {type(obj).__name__}"
    return obj


def _may_be_too_deep(raw: bytes) -> bool:
    """Whether a record has brackets enough to nest deeper than orjson encodes (the cheap length test spares
    typical records)."""
    return len(raw) > _SHORT and raw.count(b"[") + raw.count(b"{") > MAX_ENCODABLE_DEPTH


def _loads(raw: bytes) -> Any:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        # Python producers write NaN/Infinity by default: parse them so the reason is "non_finite". Otherwise
        # keep orjson's rules: UTF-8 only, integers beyond 64 bits as floats (so 10**400 is infinite, like
        # 1e400), and no lone surrogates ("\ud800"), which no output record could carry.
        obj = json.loads(raw.decode("utf-8"), parse_int=_parse_int)
        _check_encodable(obj)
        return obj
    if _may_be_too_deep(raw):  # too deep needs that many brackets opened and closed
        _check_encodable(obj)
    return obj


def _parse_int(text: str) -> int | float:
    value = int(text) if len(text) <= 21 else None
    return value if value is not None and -(1 << 63) <= value < (1 << 64) else float(text)


def _check_encodable(obj: Any) -> None:
    """Raise ValueError if ``obj`` cannot be re-encoded into an output record (deep nesting, surrogates)."""
    try:
        orjson.dumps(obj)
    except orjson.JSONEncodeError as exc:
        raise ValueError(f"cannot be passed through to outputs: {exc}") from None
