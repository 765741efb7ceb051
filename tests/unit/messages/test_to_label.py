"""Reading to-label records: the one function the labeling side parses them with never raises."""

from __future__ import annotations

import orjson
import pytest

from selector import __version__
from selector.messages.contracts import ToLabel
from selector.messages.to_label import NotToLabel, ToLabelRecord, read_to_label

FULL = {
    "id": "i-1",
    "route": "audit",
    "score": 0.5,
    "scores": {"entropy": 0.5},
    "threshold": None,
    "selected_by": "audit",
    "query_probability": 0.25,
    "priority": 0.5,
    "predicted": "ok",
    "accept_eligible": True,
    "probs": [0.75, 0.25],
    "embedding": [1.0, 2.0],
    "segment": None,
    "payload": {"uri": "s3://x"},
    "meta": None,
    "model": "v1",
    "decided_at": "2026-11-24T00:00:00.000Z",
    "selector": {"version": __version__, "config_hash": "abc"},
}


class TestReadToLabel:
    def test_a_record_of_the_contract_is_a_decision(self) -> None:
        """A record valid under the ToLabel contract reads with every field the store keeps."""
        ToLabel.model_validate(FULL)
        read = read_to_label(orjson.dumps(FULL))
        assert isinstance(read, ToLabelRecord) and read.value == FULL
        d = read.decision()
        assert d is not None and (d.id, d.route, d.query_probability, d.accept_eligible) == (
            "i-1",
            "audit",
            0.25,
            True,
        )
        assert read.audit_confidence() == 0.75

    @pytest.mark.parametrize(
        ("raw", "reason"),
        [(None, "malformed_json"), (b"", "malformed_json"), (b"{x", "malformed_json"), (b"[]", "missing_id"),
         (b"null", "missing_id"), (b'{"id": ""}', "missing_id"), (b'{"id": 3}', "missing_id")],
    )  # fmt: skip
    def test_a_record_without_an_id_is_not_a_to_label_record(self, raw: bytes | None, reason: str) -> None:
        """No JSON object with a non-empty string id: a reason code, no exception."""
        read = read_to_label(raw)
        assert isinstance(read, NotToLabel) and read.reason == reason

    @pytest.mark.parametrize(
        "change",
        [{"route": None}, {"predicted": 3}, {"probs": [True, 0]}, {"probs": ["0.5"]}, {"embedding": [None]},
         {"query_probability": 0}, {"query_probability": "0.5"}, {"model": 1}, {"accept_eligible": "yes"},
         {"decided_at": "2026-11-24"}],
    )  # fmt: skip
    def test_a_field_of_a_wrong_type_is_no_decision(self, change: dict[str, object]) -> None:
        """The store keeps nothing of a record whose stored fields are missing or of a wrong type."""
        value = {**FULL, **change}
        read = read_to_label(orjson.dumps(value))
        assert isinstance(read, ToLabelRecord) and read.decision() is None

    def test_a_record_before_accept_eligible_existed_is_a_decision(self) -> None:
        """accept_eligible and embedding may be absent (None)."""
        value = {k: v for k, v in FULL.items() if k not in ("accept_eligible", "embedding")}
        read = read_to_label(orjson.dumps(value))
        assert isinstance(read, ToLabelRecord)
        d = read.decision()
        assert d is not None and d.accept_eligible is None and d.embedding is None
