"""Specification of the batch decoder: every reject reason, logits, timestamps, and batch-level invariants."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selector.messages.prediction import Batch, decode_batch

C = 3


def enc(obj: Any) -> bytes:
    """Encode like a Python producer would (json.dumps writes NaN and Infinity literally)."""
    return json.dumps(obj).encode()


def decode(*values: bytes | None, kafka_ts_ms: list[int] | None = None, **kw: Any) -> Batch:
    ts = kafka_ts_ms if kafka_ts_ms is not None else [0] * len(values)
    kw.setdefault("n_classes", C)
    return decode_batch(list(values), ts, **kw)


def only_reject(value: bytes | None, **kw: Any) -> tuple[str, str]:
    """The (reason, message) of a single record that must be rejected."""
    b = decode(value, **kw)
    assert len(b) == 0
    (rej,) = b.rejects
    assert rej.position == 0
    return rej.reason, rej.message


def ok(**fields: Any) -> dict[str, Any]:
    return {"id": "a", "probs": [0.7, 0.2, 0.1], **fields}


class TestRejectReasons:
    def test_tombstone_is_empty(self) -> None:
        """A None value (tombstone) is rejected as 'empty'."""
        assert only_reject(None) == ("empty", "record value is empty (tombstone)")

    def test_oversize_is_rejected_unparsed(self) -> None:
        """A record above the byte limit is rejected before parsing, naming both sizes."""
        raw = enc(ok())
        assert only_reject(raw, max_record_bytes=len(raw) - 1) == (
            "oversize",
            f"record is {len(raw)} bytes, limit 'input.max_record_bytes' is {len(raw) - 1}",
        )

    def test_record_exactly_at_the_limit_passes(self) -> None:
        """The limit is inclusive."""
        raw = enc(ok())
        assert decode(raw, max_record_bytes=len(raw)).ids == ["a"]

    @pytest.mark.parametrize(
        "raw",
        [b'{"id": "a", "probs": [0.5, 0.5', b"", b"\xff\xfe{}", '{"id": "a"}'.encode("utf-16"), b"[" * 5000],
    )
    def test_malformed_json(self, raw: bytes) -> None:
        """Truncated JSON, empty bytes, non-UTF-8 and absurd nesting are 'malformed_json'."""
        reason, message = only_reject(raw)
        assert reason == "malformed_json"
        assert message.startswith("not valid JSON: ")

    def test_lone_surrogate_is_malformed(self) -> None:
        """A string with a lone surrogate escape cannot be encoded into any output, so it is rejected."""
        reason, _ = only_reject(b'{"id": "\\ud800", "probs": [0.7, 0.2, 0.1]}')
        assert reason == "malformed_json"

    def test_payload_too_deep_to_pass_through_is_malformed(self) -> None:
        """A payload nested deeper than the output encoder allows must be rejected, not crash encoding."""
        raw = b'{"id": "a", "probs": [0.7, 0.2, 0.1], "payload": ' + b"[" * 300 + b"]" * 300 + b"}"
        reason, _ = only_reject(raw)
        assert reason == "malformed_json"

    def test_brackets_inside_strings_do_not_reject(self) -> None:
        """Many brackets inside a string are text, not nesting."""
        assert decode(enc(ok(payload="[" * 1000))).ids == ["a"]

    @pytest.mark.parametrize(
        ("value", "kind"), [([1, 2], "list"), ("x", "str"), (3, "int"), (None, "NoneType")]
    )
    def test_not_an_object(self, value: Any, kind: str) -> None:
        """Valid JSON that is not an object is 'not_an_object', naming what it is."""
        assert only_reject(enc(value)) == ("not_an_object", f"a prediction must be a JSON object, got {kind}")

    def test_missing_id(self) -> None:
        """A record without 'id' cannot be keyed."""
        assert only_reject(enc({"probs": [0.7, 0.2, 0.1]})) == (
            "missing_id",
            "required field 'id' is missing",
        )

    @pytest.mark.parametrize("rid", ["", 7, ["a"], True])
    def test_bad_id(self, rid: Any) -> None:
        """'id' must be a non-empty string."""
        assert only_reject(enc(ok(id=rid))) == ("bad_id", f"'id' must be a non-empty string: {rid!r}")

    def test_both_probs_and_logits(self) -> None:
        """Exactly one of probs/logits: both is ambiguous."""
        assert only_reject(enc(ok(logits=[1, 2, 3]))) == (
            "missing_probs",
            "exactly one of 'probs' or 'logits' is required, got both",
        )

    def test_neither_probs_nor_logits(self) -> None:
        """Exactly one of probs/logits: neither leaves nothing to score."""
        assert only_reject(enc({"id": "a"})) == (
            "missing_probs",
            "exactly one of 'probs' or 'logits' is required, got neither",
        )

    @pytest.mark.parametrize(
        ("row", "got"), [([0.5, 0.5], "2"), ([0.25] * 4, "4"), ("0.5", "str"), ({}, "dict")]
    )
    def test_wrong_class_count(self, row: Any, got: str) -> None:
        """The row must be a list with one entry per configured class."""
        assert only_reject(enc({"id": "a", "probs": row})) == (
            "wrong_class_count",
            f"'probs' must be a list of 3 numbers (one per class), got {got}",
        )

    def test_wrong_class_count_names_logits(self) -> None:
        """The message names the field actually sent."""
        _, message = only_reject(enc({"id": "a", "logits": [1.0]}))
        assert message == "'logits' must be a list of 3 numbers (one per class), got 1"

    @pytest.mark.parametrize("key", ["model", "segment"])
    def test_non_string_model_or_segment(self, key: str) -> None:
        """'model' and 'segment' are strings when present."""
        assert only_reject(enc(ok(**{key: 3}))) == ("bad_field", f"'{key}' must be a string: 3")

    @pytest.mark.parametrize("cost", [0, -1.5, True, float("nan"), float("inf"), "1"])
    def test_bad_cost(self, cost: Any) -> None:
        """'cost' must be a finite number > 0 (a bool is not a number)."""
        reason, message = only_reject(enc(ok(cost=cost)))
        assert reason == "bad_field"
        assert message.startswith("'cost' must be a finite number > 0: ")

    def test_positive_cost_is_accepted(self) -> None:
        """A valid cost does not reject the record."""
        assert decode(enc(ok(cost=2.5))).ids == ["a"]

    def test_naive_timestamp(self) -> None:
        """RFC 3339 requires an offset; a naive local time is ambiguous."""
        assert only_reject(enc(ok(ts="2024-05-01T12:00:00"))) == (
            "bad_ts",
            "'ts' must carry a UTC offset (RFC 3339): '2024-05-01T12:00:00'",
        )

    def test_garbage_timestamp(self) -> None:
        """Unparseable text is 'bad_ts'."""
        assert only_reject(enc(ok(ts="yesterday"))) == ("bad_ts", "'ts' is not RFC 3339: 'yesterday'")

    def test_negative_epoch_timestamp(self) -> None:
        """Epoch milliseconds must be >= 0."""
        assert only_reject(enc(ok(ts=-1))) == (
            "bad_ts",
            "'ts' epoch milliseconds must be finite and >= 0: -1",
        )

    @pytest.mark.parametrize("ts", [True, [1], {"ms": 1}, float("inf")])
    def test_timestamp_of_wrong_kind(self, ts: Any) -> None:
        """Booleans, containers and infinity are not timestamps."""
        reason, _ = only_reject(enc(ok(ts=ts)))
        assert reason == "bad_ts"

    @pytest.mark.parametrize(
        "row", [[0.5, "0.3", 0.2], [True, False, False], [None, 0.5, 0.5], [[0.5], [0.3], [0.2]]]
    )
    def test_not_numeric(self, row: list[Any]) -> None:
        """Strings, booleans, nulls and nested lists are not class scores, alone or in any batch."""
        assert only_reject(enc({"id": "a", "probs": row})) == (
            "not_numeric",
            f"every class score must be a number: {row!r}",
        )

    def test_nan_written_by_python_json_is_non_finite(self) -> None:
        """Python's json.dumps writes NaN; the decoder must name the reason instead of 'malformed_json'."""
        raw = json.dumps({"id": "a", "probs": [float("nan"), 0.5, 0.5]}).encode()
        assert b"NaN" in raw
        assert only_reject(raw) == (
            "non_finite",
            "class scores must be finite (no NaN or infinity): [nan, 0.5, 0.5]",
        )

    def test_infinite_logit_is_non_finite(self) -> None:
        """Logits must be finite too."""
        reason, _ = only_reject(enc({"id": "a", "logits": [float("inf"), 0.0, 0.0]}))
        assert reason == "non_finite"

    def test_integer_beyond_float_range_is_non_finite(self) -> None:
        """An integer literal too large for a double behaves like 1e400: infinite, not a crash."""
        raw = b'{"id": "a", "probs": [1' + b"0" * 400 + b", 0, 0]}"
        assert only_reject(raw)[0] == "non_finite"

    @pytest.mark.parametrize("field", ["ts", "cost"])
    def test_huge_integer_in_scalar_fields_does_not_crash(self, field: str) -> None:
        """Oversized integers in 'ts' or 'cost' are rejected with the field's reason."""
        raw = b'{"id": "a", "probs": [0.7, 0.2, 0.1], "' + field.encode() + b'": 1' + b"0" * 400 + b"}"
        assert only_reject(raw)[0] == {"ts": "bad_ts", "cost": "bad_field"}[field]

    @pytest.mark.parametrize("row", [[1.2, -0.1, -0.1], [-0.0001, 0.5, 0.5001]])
    def test_probability_out_of_range(self, row: list[float]) -> None:
        """Each probability must lie in [0, 1], even if the row sums to 1."""
        assert only_reject(enc({"id": "a", "probs": row})) == (
            "prob_out_of_range",
            f"probabilities must lie in [0, 1]: {row!r}",
        )

    def test_not_normalized(self) -> None:
        """A row summing to 1 beyond the tolerance is rejected, with the sum in the message."""
        assert only_reject(enc({"id": "a", "probs": [0.5, 0.3, 0.1]})) == (
            "not_normalized",
            "probabilities must sum to 1 within 'input.prob_tolerance' 0.001: sum is 0.9",
        )

    def test_sum_within_tolerance_is_accepted_and_renormalized(self) -> None:
        """A row off by less than the tolerance is accepted and divided by its sum."""
        b = decode(enc({"id": "a", "probs": [0.5004, 0.3, 0.2]}))
        np.testing.assert_allclose(b.probs[0], np.array([0.5004, 0.3, 0.2]) / 1.0004, rtol=0, atol=1e-15)
        assert abs(b.probs[0].sum() - 1.0) <= 1e-15

    def test_tolerance_is_configurable(self) -> None:
        """A tighter tolerance rejects what the default accepts."""
        raw = enc({"id": "a", "probs": [0.5004, 0.3, 0.2]})
        assert only_reject(raw, prob_tolerance=1e-4)[0] == "not_normalized"


class TestLogits:
    def test_logits_are_softmaxed(self) -> None:
        """Logits become the softmax probabilities."""
        z = np.array([2.0, -1.0, 0.5])
        b = decode(enc({"id": "a", "logits": z.tolist()}))
        expected = np.exp(z) / np.exp(z).sum()
        np.testing.assert_allclose(b.probs[0], expected, rtol=1e-12)

    def test_large_logits_do_not_overflow(self) -> None:
        """Softmax is shifted by the row maximum, so large logits stay finite."""
        b = decode(enc({"id": "a", "logits": [1000.0, 999.0, -1000.0]}))
        np.testing.assert_allclose(b.probs[0], [1 / (1 + np.exp(-1)), np.exp(-1) / (1 + np.exp(-1)), 0.0])

    def test_logits_need_not_be_in_unit_range(self) -> None:
        """Range and normalization rules apply to probabilities, not to logits."""
        assert decode(enc({"id": "a", "logits": [-5, 7, 30]})).ids == ["a"]


class TestTimestamps:
    def test_rfc3339_with_z(self) -> None:
        """'Z' means UTC."""
        b = decode(enc(ok(ts="2024-05-01T12:00:00Z")))
        assert b.ts_s[0] == datetime(2024, 5, 1, 12, tzinfo=UTC).timestamp()

    def test_rfc3339_with_offset(self) -> None:
        """An offset is honoured: 14:00+02:00 is 12:00Z."""
        b = decode(enc(ok(ts="2024-05-01T14:00:00.250+02:00")))
        assert b.ts_s[0] == datetime(2024, 5, 1, 12, tzinfo=UTC).timestamp() + 0.25

    def test_epoch_milliseconds(self) -> None:
        """A number is epoch milliseconds."""
        assert decode(enc(ok(ts=1714564800123))).ts_s[0] == 1714564800.123

    def test_kafka_timestamp_is_the_fallback(self) -> None:
        """Without 'ts' (or with null) the broker timestamp is used."""
        b = decode(enc(ok()), enc(ok(id="b", ts=None)), kafka_ts_ms=[1500, 2500])
        assert b.ts_s.tolist() == [1.5, 2.5]

    def test_record_ts_wins_over_kafka_timestamp(self) -> None:
        """An explicit 'ts' takes precedence over the broker's."""
        assert decode(enc(ok(ts=5000)), kafka_ts_ms=[1500]).ts_s.tolist() == [5.0]


class TestBatch:
    def test_valid_records_in_a_mixed_batch_are_unaffected(self) -> None:
        """Invalid neighbours must not change valid rows, their order, or their pass-through fields."""
        good = [
            {
                "id": "g0",
                "probs": [0.6, 0.3, 0.1],
                "model": "v1",
                "segment": "line-1",
                "payload": {"uri": "s3://x"},
            },
            {"id": "g1", "logits": [0.0, 0.0, 0.0], "meta": [1, 2]},
            {"id": "g2", "probs": [0.0, 0.0, 1.0]},
        ]
        values = [b"{", enc(good[0]), enc({"id": 5, "probs": [1, 0, 0]}), enc(good[1]), None, enc(good[2])]
        b = decode(*values, kafka_ts_ms=[0, 1000, 0, 2000, 0, 3000])
        assert b.ids == ["g0", "g1", "g2"]
        assert b.position.tolist() == [1, 3, 5]
        assert [(r.position, r.reason) for r in b.rejects] == [
            (0, "malformed_json"),
            (2, "bad_id"),
            (4, "empty"),
        ]
        np.testing.assert_allclose(b.probs[[0, 2]], [[0.6, 0.3, 0.1], [0.0, 0.0, 1.0]], rtol=0, atol=1e-15)
        np.testing.assert_allclose(b.probs[1], [1 / 3] * 3)
        assert b.model == ["v1", None, None]
        assert b.segment == ["line-1", None, None]
        assert b.payload == [{"uri": "s3://x"}, None, None]
        assert b.meta == [None, [1, 2], None]
        assert b.ts_s.tolist() == [1.0, 2.0, 3.0]

    def test_empty_batch(self) -> None:
        """No records give an empty batch with a (0, C) probability matrix."""
        b = decode()
        assert len(b) == 0
        assert b.probs.shape == (0, C)
        assert b.rejects == []

    def test_all_rejected_batch_has_well_shaped_columns(self) -> None:
        """A batch with only invalid records still has consistent empty columns."""
        b = decode(b"x", None)
        assert b.probs.shape == (0, C)
        assert len(b.position) == len(b.ts_s) == len(b.ids) == 0

    def test_duplicate_ids_are_both_kept(self) -> None:
        """Deduplication is the consumers' job (outputs are keyed by id); the decoder keeps both."""
        assert decode(enc(ok()), enc(ok())).ids == ["a", "a"]


def _json_scalars() -> st.SearchStrategy[Any]:
    return st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats() | st.text(max_size=5)


_AWKWARD = st.floats(0, 1) | st.sampled_from([True, None, "0.5", [0.5], 10**400, -(10**400), float("nan")])
"""Values numpy would happily convert (or choke on) that are not class scores."""

_JSON = st.recursive(
    _json_scalars(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=10,
)


@st.composite
def prob_rows(draw: st.DrawFn) -> list[float]:
    weights = draw(st.lists(st.floats(0, 1e6) | st.just(0.0), min_size=C, max_size=C))
    total = sum(weights)
    if total == 0:
        weights, total = [1.0] * C, float(C)
    return [w / total for w in weights]


@st.composite
def valid_records(draw: st.DrawFn) -> dict[str, Any]:
    rec: dict[str, Any] = {"id": draw(st.text(min_size=1, max_size=8))}
    if draw(st.booleans()):
        rec["probs"] = draw(prob_rows())
    else:
        rec["logits"] = draw(st.lists(st.floats(-700, 700), min_size=C, max_size=C))
    if draw(st.booleans()):
        rec["ts"] = draw(st.integers(0, 4_000_000_000_000))
    for key in ("model", "segment"):
        if draw(st.booleans()):
            rec[key] = draw(st.text(max_size=5))
    if draw(st.booleans()):
        rec["payload"] = draw(_JSON)
    return rec


@st.composite
def invalid_records(draw: st.DrawFn) -> bytes | None:
    kind = draw(st.sampled_from(["bytes", "json", "object", "row", "mutated"]))
    if kind == "row":
        name = draw(st.sampled_from(["probs", "logits"]))
        return enc({"id": "r", name: draw(st.lists(_AWKWARD, min_size=C - 1, max_size=C + 1))})
    if kind == "bytes":
        return draw(st.none() | st.binary(max_size=40))
    if kind == "json":
        return enc(draw(_JSON))
    if kind == "object":
        return enc(
            draw(st.dictionaries(st.sampled_from(["id", "probs", "logits", "ts", "cost", "model"]), _JSON))
        )
    rec = draw(valid_records())
    key = draw(st.sampled_from(["id", "probs", "logits", "ts", "cost", "model", "segment"]))
    rec[key] = draw(_JSON | st.lists(_AWKWARD, min_size=C, max_size=C))
    return enc(rec)


records = st.one_of(valid_records().map(enc), invalid_records())


class TestBatchProperties:
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(records, max_size=25))
    def test_every_position_is_accounted_for_exactly_once(self, values: list[bytes | None]) -> None:
        """Each input position is either a valid row or a reject, never both, never neither, never a crash."""
        b = decode_batch(values, list(range(len(values))), n_classes=C)
        seen = b.position.tolist() + [r.position for r in b.rejects]
        assert sorted(seen) == list(range(len(values)))
        assert b.position.tolist() == sorted(b.position.tolist())
        assert [r.position for r in b.rejects] == sorted(r.position for r in b.rejects)
        assert b.probs.shape == (len(b), C)
        assert len(b.ts_s) == len(b.model) == len(b.segment) == len(b.payload) == len(b.meta) == len(b)

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(records, max_size=25))
    def test_valid_rows_are_probability_vectors(self, values: list[bytes | None]) -> None:
        """Every accepted row lies in [0, 1] and sums to 1 within 1e-9, whatever the input was."""
        b = decode_batch(values, [0] * len(values), n_classes=C)
        assert np.isfinite(b.probs).all()
        assert ((b.probs >= 0) & (b.probs <= 1)).all()
        np.testing.assert_allclose(b.probs.sum(axis=1), 1.0, rtol=0, atol=1e-9)
        assert np.isfinite(b.ts_s).all()

    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(records, min_size=1, max_size=15))
    def test_verdict_of_a_record_does_not_depend_on_its_batch(self, values: list[bytes | None]) -> None:
        """A record is accepted (with the same row) or rejected (for the same reason), alone or in a batch."""
        b = decode_batch(values, [0] * len(values), n_classes=C)
        row_of = {int(p): k for k, p in enumerate(b.position)}
        reason_of = {r.position: r.reason for r in b.rejects}
        for i, v in enumerate(values):
            alone = decode_batch([v], [0], n_classes=C)
            if i in row_of:
                assert alone.ids == [b.ids[row_of[i]]]
                np.testing.assert_array_equal(alone.probs[0], b.probs[row_of[i]])
            else:
                assert [r.reason for r in alone.rejects] == [reason_of[i]]

    @settings(max_examples=100, deadline=None)
    @given(st.lists(valid_records(), min_size=1, max_size=20))
    def test_valid_records_are_all_accepted_in_order(self, recs: list[dict[str, Any]]) -> None:
        """Well-formed predictions are never rejected and keep their order and ids."""
        b = decode_batch([enc(r) for r in recs], [0] * len(recs), n_classes=C)
        assert b.rejects == []
        assert b.ids == [r["id"] for r in recs]
        assert b.position.tolist() == list(range(len(recs)))
