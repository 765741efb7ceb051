"""The collector pause around decoding, and the packing of number columns into arrays (selector.messages)."""

from __future__ import annotations

import functools
import gc
import json
from collections.abc import Iterator
from typing import Any
from unittest.mock import patch

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selector.messages import prediction, screen
from selector.messages.parsing import collector_paused, parse_batch
from selector.messages.prediction import decode_batch

from .test_decode_bulk import DIM, _same, rich_records

C = 3


@pytest.fixture
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


@pytest.mark.usefixtures("collector_on")
class TestCollectorPaused:
    def test_off_inside_and_on_again_after(self) -> None:
        """The collector is off for the block and on again after it."""
        with collector_paused():
            assert not gc.isenabled()
        assert gc.isenabled()

    def test_on_again_after_an_exception(self) -> None:
        """An error in the block does not leave the collector off."""
        with pytest.raises(KeyError), collector_paused():
            raise KeyError("boom")
        assert gc.isenabled()

    def test_nested_pause_leaves_it_to_the_outer(self) -> None:
        """An inner pause ends without turning the collector on while the outer one runs."""
        with collector_paused():
            with collector_paused():
                assert not gc.isenabled()
            assert not gc.isenabled()
        assert gc.isenabled()

    def test_collector_off_before_stays_off(self) -> None:
        """A pause while the collector is off (by the caller's choice) does not turn it on."""
        gc.disable()
        with collector_paused():
            pass
        assert not gc.isenabled()

    def test_decode_batch_runs_paused_and_restores(self) -> None:
        """decode_batch screens its batch with the collector off and leaves it on, also when it raises."""
        seen: list[bool] = []
        real = screen.suspects

        def spy(*args: Any, **kw: Any) -> set[int]:
            seen.append(gc.isenabled())
            return real(*args, **kw)

        values = [orjson.dumps({"id": "a", "probs": [1, 0, 0]})]
        with patch.object(screen, "suspects", spy):
            assert decode_batch(values, [0], n_classes=C).ids == ["a"]
        assert seen == [False] and gc.isenabled()
        with patch.object(screen, "suspects", side_effect=RuntimeError("boom")), pytest.raises(RuntimeError):
            decode_batch(values, [0], n_classes=C)
        assert gc.isenabled()


def _reasons(records: list[dict[str, Any]], **kw: Any) -> list[tuple[int, str]]:
    values = [orjson.dumps(r) for r in records]
    return [
        (r.position, r.reason) for r in decode_batch(values, [0] * len(values), n_classes=C, **kw).rejects
    ]


class TestPackedNumbers:
    """Columns vouched for in bulk are packed number by number; anything but a number is refused there and
    takes the per-record chain, which names it."""

    @pytest.mark.parametrize("odd", ["0.5", None, True, [0.5], {"x": 1}])
    def test_embedding_item_that_is_not_a_number(self, odd: Any) -> None:
        """A string that reads as a number, null, a boolean, a list or an object in an embedding is a
        bad_field, the other records of the batch unaffected."""
        good = {"id": "a", "probs": [1, 0, 0], "embedding": [0.5, 0.25]}
        bad = {"id": "b", "probs": [1, 0, 0], "embedding": [0.5, odd]}
        assert _reasons([good, bad, good], embedding_dim=2) == [(1, "bad_field")]

    def test_samples_rows_of_compensating_lengths(self) -> None:
        """Rows of 2 and 4 numbers where 3 are due hold as many as two good rows: still bad_samples."""
        good = {"id": "a", "probs": [1, 0, 0], "samples": [[1, 0, 0], [0, 1, 0]]}
        bad = {"id": "b", "probs": [1, 0, 0], "samples": [[1, 0], [0, 1, 0, 0]]}
        assert _reasons([good, bad]) == [(1, "bad_samples")]

    def test_integers_are_numbers(self) -> None:
        """Integer items pack as floats: an embedding of ints is the same vector as of floats."""
        values = [orjson.dumps({"id": "a", "probs": [1, 0, 0], "embedding": [3, -2]})]
        b = decode_batch(values, [0], n_classes=C, embedding_dim=2)
        assert b.vectors is not None and b.vectors.tolist() == [[3.0, -2.0]]


def _nest(levels: int, kind: str = "list") -> Any:
    value: Any = 1
    for level in range(levels):
        value = [value] if kind == "list" or (kind == "mixed" and level % 2) else {"k": value}
    return value


_EMB = [0.123456789] * 64
"""An embedding that makes every record long enough to nest too deep, for the bound to look at."""


class TestDepthBound:
    """Records parsed in one pass have their depth bounded from the parsed values; one that may nest deeper
    than orjson encodes (254 levels) is rejected exactly as the record-by-record parse rejects it."""

    TOO_DEEP = (
        "malformed_json",
        "not valid JSON: cannot be passed through to outputs: Recursion limit reached",
    )

    def _verdicts(self, records: list[dict[str, Any]]) -> list[tuple[int, str, str]]:
        values = [json.dumps(r).encode() for r in records]  # orjson cannot write them
        b = decode_batch(values, [0] * len(values), n_classes=C, embedding_dim=len(_EMB))
        return [(r.position, r.reason, r.message) for r in b.rejects]

    @pytest.mark.parametrize("key", ["payload", "meta", "embedding", "samples", "committee", "extra"])
    @pytest.mark.parametrize("kind", ["list", "dict", "mixed"])
    def test_too_deep_under_any_key_among_good_records(self, key: str, kind: str) -> None:
        """A value nesting 254 levels (255 with the record) under any key is malformed_json; the other
        records, whose columns the bulk screen vouches for, are unaffected."""
        good = {"id": "a", "probs": [1, 0, 0], "embedding": _EMB, "samples": [[1, 0, 0]]}
        deep = {**good, key: _nest(254, kind)}
        assert self._verdicts([good, deep, good]) == [(1, *self.TOO_DEEP)]

    def test_deepest_encodable_passes(self) -> None:
        """A record nesting exactly 254 levels is accepted (one level more is not)."""
        good = {"id": "a", "probs": [1, 0, 0], "embedding": _EMB}
        assert self._verdicts([{**good, "payload": _nest(253, "mixed")}]) == []
        assert self._verdicts([{**good, "payload": _nest(254, "mixed")}]) == [(0, *self.TOO_DEEP)]

    def test_deep_inside_probs(self) -> None:
        """Nesting inside a class score is found too (it is no number, but depth is checked first)."""
        deep = {"id": "a", "probs": [_nest(254), 0, 0], "embedding": _EMB}
        assert self._verdicts([deep]) == [(0, *self.TOO_DEEP)]

    @settings(max_examples=60, deadline=None)
    @given(st.integers(248, 258), st.sampled_from(["list", "dict", "mixed"]), st.booleans())
    def test_verdict_is_whether_orjson_encodes_it(self, levels: int, kind: str, wide: bool) -> None:
        """A record is rejected for depth exactly when orjson cannot encode it."""
        payload = [_nest(levels, kind), list(range(50))] if wide else _nest(levels, kind)
        rec = {"id": "a", "probs": [1, 0, 0], "embedding": _EMB, "payload": payload}
        try:
            orjson.dumps(rec)
        except orjson.JSONEncodeError:
            assert self._verdicts([rec]) == [(0, *self.TOO_DEEP)]
        else:
            assert self._verdicts([rec]) == []


@st.composite
def _long_records(draw: st.DrawFn) -> bytes | None:
    """Rich records made long enough to nest too deep, some nesting deep under some key."""
    raw = draw(rich_records())
    if raw is None or not raw.startswith(b"{") or draw(st.integers(0, 9)) == 0:
        return raw
    pad = b'"pad": "' + b"x" * 600 + b'", '
    if draw(st.booleans()):
        key = draw(st.sampled_from(["payload", "embedding", "samples", "probs", "extra"]))
        deep = json.dumps(
            _nest(draw(st.integers(250, 258)), draw(st.sampled_from(["list", "dict", "mixed"])))
        )
        pad += f'"{key}": {deep}, '.encode()  # a duplicate key: the last one counts, as for orjson
        return b"{" + pad + raw[1:] if draw(st.booleans()) else raw[:-1] + b", " + pad[:-2] + b"}"
    return b"{" + pad + raw[1:]


class TestDepthBoundAgreesWithRecordByRecord:
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(_long_records(), max_size=8), st.sampled_from([None, DIM]))
    def test_same_rows_and_same_rejects(self, values: list[bytes | None], dim: int | None) -> None:
        """Long records, some nested deep anywhere: every verdict, reason and message is the one of the
        record-by-record parse, which counts brackets and checks each record exactly."""
        kw: dict[str, Any] = {"n_classes": C, "embedding_dim": dim}
        ts = list(range(len(values)))
        bulk = decode_batch(values, ts, **kw)
        with patch.object(prediction, "parse_batch", functools.partial(parse_batch, record_by_record=True)):
            careful = decode_batch(values, ts, **kw)
        _same(bulk, careful)
