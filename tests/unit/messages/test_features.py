"""Decoding feature records for the inference connector: exact reasons, the valid rows untouched, and a batch
decoding like its records one at a time."""

from __future__ import annotations

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from selector.messages.features import decode_features


def rec(**fields: object) -> bytes:
    return orjson.dumps(fields)


class TestDecodeFeatures:
    def test_every_reason_with_its_message_and_position(self) -> None:
        values = [
            rec(id="ok-1", embedding=[1, 2.5, -3], payload={"uri": "s3://x"}, meta=[1], ts=1700000000000),
            None,
            b"x" * 300,
            b"{nope",
            b"[1, 2]",
            rec(embedding=[1, 2, 3]),
            rec(id="", embedding=[1, 2, 3]),
            rec(id="m"),
            rec(id="d", embedding=[1, 2]),
            rec(id="s", embedding=[1, "2", 3]),
            rec(id="b", embedding=[1, True, 3]),
            b'{"id": "n", "embedding": [1, 1e39, 3]}',
            rec(id="ok-2", embedding=[0, 0, 0]),
        ]
        b = decode_features(values, dim=3, max_record_bytes=200)
        assert b.ids == ["ok-1", "ok-2"] and b.position.tolist() == [0, 12]
        assert b.x.dtype == np.float32 and b.x.tolist() == [[1.0, 2.5, -3.0], [0.0, 0.0, 0.0]]
        assert (
            b.payload == [{"uri": "s3://x"}, None] and b.meta == [[1], None] and b.ts == [1700000000000, None]
        )
        assert [(r.position, r.reason, r.message) for r in b.rejects] == [
            (1, "empty", "the record has no value"),
            (2, "oversize", "the record has 300 bytes, over 200"),
            (3, "malformed_json", b.rejects[2].message),
            (4, "not_an_object", "a feature record is a JSON object, got list"),
            (5, "missing_id", "'id' is required"),
            (6, "bad_id", "'id' must be a non-empty string: ''"),
            (7, "missing_field", "'embedding' is required (the features the model scores)"),
            (8, "wrong_embedding_dim", "'embedding' must be a list of 3 numbers, got 2"),
            (9, "not_numeric", "'embedding' must hold only numbers"),
            (10, "not_numeric", "'embedding' must hold only numbers"),
            (11, "non_finite", "'embedding' holds NaN, infinity or a number beyond float32"),
        ]
        assert b.rejects[2].message.startswith("not JSON: ")

    def test_an_empty_batch(self) -> None:
        b = decode_features([], dim=4)
        assert len(b) == 0 and b.x.shape == (0, 4) and b.rejects == []


row = st.one_of(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=2, max_size=2),
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=3),
    st.lists(st.one_of(st.floats(allow_nan=False), st.text(max_size=2)), min_size=2, max_size=2),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), row), max_size=12))
def test_a_batch_decodes_as_its_records_one_at_a_time(items: list[tuple[bool, list[object]]]) -> None:
    """Whatever mixes of valid and invalid records: the batch keeps exactly the rows and rejects that
    decoding each record alone keeps, with batch positions."""
    values = [orjson.dumps({"id": f"r{k}", "embedding": e}) if has_id else orjson.dumps({"embedding": e})
              for k, (has_id, e) in enumerate(items)]  # fmt: skip
    whole = decode_features(values, dim=2)
    alone = [decode_features([v], dim=2) for v in values]
    assert whole.ids == [i for a in alone for i in a.ids]
    assert [(r.position, r.reason) for r in whole.rejects] == [
        (k, r.reason) for k, a in enumerate(alone) for r in a.rejects
    ]
    expected = np.concatenate([a.x for a in alone]) if alone else np.zeros((0, 2), np.float32)
    assert np.array_equal(whole.x, expected.reshape(-1, 2))
