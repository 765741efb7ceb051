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
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import orjson

MAX_ENCODABLE_DEPTH = 254
"""orjson refuses to encode deeper nesting; a record nested deeper could not be passed through to outputs."""
_SHORT = 2 * MAX_ENCODABLE_DEPTH
"""A record this short cannot open and close brackets enough to nest too deep."""

_SCALARS = frozenset({str, int, float, bool, type(None)})
"""What orjson parses a JSON string, number, true, false or null into."""

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
    values: Sequence[bytes | None], max_record_bytes: int, *, record_by_record: bool = False
) -> tuple[list[int], list[Any], list[Failure], list[int]]:
    """The positions and parsed objects of the records that are JSON objects, a failure for each other, and
    the records (indexes into the objects) long enough to nest too deep whose depth is left to the caller.

    The whole batch is parsed in one pass when nothing in it is empty, oversize or malformed (the long
    records' depth is then for the caller to bound: :func:`may_nest_too_deep`, which knows what the bulk
    screen proved); otherwise, or with ``record_by_record``, record by record, each long one with its brackets
    counted and, when there are enough of them, checked exactly."""
    longest = max(map(len, values)) if values and None not in values else None  # type: ignore[arg-type]
    if not record_by_record and longest is not None and longest <= max_record_bytes:
        raws: Sequence[bytes] = values  # type: ignore[assignment]
        try:
            objs = list(map(orjson.loads, raws))
        except orjson.JSONDecodeError:
            pass
        else:
            if set(map(type, objs)) == {dict}:
                long = [] if longest <= _SHORT else [k for k, raw in enumerate(raws) if len(raw) > _SHORT]
                return list(range(len(objs))), objs, [], long
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
    return at, objs, failures, []


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


def may_nest_too_deep(
    objs: Sequence[dict[str, Any]], rows: list[int], proven: Mapping[str, Collection[int]]
) -> bool:
    """Whether any record ``rows`` of ``objs`` may nest deeper than orjson encodes (then the caller parses the
    batch again record by record, where each such record is checked exactly).

    A sound bound, walking the parsed values instead of counting the brackets of the raw bytes (which costs
    about a nanosecond a byte): a value the bulk screen proved to be a list of numbers or of lists of numbers
    is not walked again; any other list or object is, a level at a time (one set of its items' types). A
    record nests one level deeper than its deepest value; orjson encodes 254 levels.

    Args:
        objs: the parsed records.
        rows: the records to bound (those long enough to nest too deep).
        proven: per key, the records whose value under it is a list of numbers or of lists of numbers.
    """
    for k in rows:
        for key, value in objs[k].items():
            nested = type(value) is list or type(value) is dict
            if nested and k not in proven.get(key, ()) and _deeper_than(value, MAX_ENCODABLE_DEPTH - 1):
                return True
    return False


def _deeper_than(value: list[Any] | dict[str, Any], levels: int) -> bool:
    """Whether a list or object nests more than ``levels`` levels (itself one)."""
    items = value.values() if type(value) is dict else value
    if set(map(type, items)) <= _SCALARS:
        return levels < 1
    return levels <= 1 or any(
        _deeper_than(v, levels - 1) for v in items if type(v) is list or type(v) is dict
    )


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
