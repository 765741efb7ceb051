"""Specification of the published message contracts (JSON Schemas generated from the pydantic models)."""

from __future__ import annotations

import jsonschema
import numpy as np
import pytest
from pydantic import ValidationError

from selector.config import parse_config
from selector.messages.contracts import (
    DLQ_DROPPED_HEADERS,
    DLQ_HEADERS,
    DLQ_TRUNCATION_HEADERS,
    SCHEMAS,
    Accepted,
    DeadLetterHeaders,
    FeatureRecord,
    Label,
    StateSnapshot,
    ToLabel,
    json_schemas,
    parse_model_event,
    parse_retrain_request,
)
from selector.messages.prediction import decode_batch
from selector.routing import Router


class TestJsonSchemas:
    def test_one_schema_per_contract(self) -> None:
        """Every message has a schema: the monitor's input and outputs, dead-letter headers, labels,
        features, model events, retrain requests and state snapshots."""
        assert set(json_schemas()) == {
            "prediction",
            "to-label",
            "accepted",
            "dead-letter-headers",
            "label",
            "features",
            "model-event",
            "retrain-request",
            "state-snapshot",
        }

    @pytest.mark.parametrize(
        ("name", "title"),
        [
            ("prediction", "prediction"),
            ("to-label", "to-label"),
            ("accepted", "accepted"),
            ("dead-letter-headers", "dead-letter headers"),
            ("label", "label"),
            ("features", "features"),
            ("model-event", "model event"),
            ("retrain-request", "retrain request"),
            ("state-snapshot", "state snapshot"),
        ],
    )
    def test_schema_is_an_object_schema_with_a_readable_title(self, name: str, title: str) -> None:
        """Each schema describes a JSON object and is titled after the message it describes."""
        schema = json_schemas()[name]
        assert schema["type"] == "object"
        assert schema["title"] == title

    def test_registry_and_schemas_agree(self) -> None:
        """json_schemas() covers exactly the registered models."""
        assert set(json_schemas()) == set(SCHEMAS)

    def test_prediction_requires_only_id(self) -> None:
        """Only 'id' is required of a prediction; the rest is optional."""
        schema = json_schemas()["prediction"]
        assert schema["required"] == ["id"]
        assert {"probs", "logits", "ts", "model", "cost", "segment", "payload", "meta"} <= set(
            schema["properties"]
        )

    def test_to_label_lists_every_field_of_the_design(self) -> None:
        """to-label has every field DESIGN.md promises, plus selected_by (the mechanism that chose it) and ts
        (the prediction's time)."""
        props = set(json_schemas()["to-label"]["properties"])
        assert props == {
            "id", "route", "score", "scores", "threshold", "selected_by", "query_probability", "priority",
            "predicted", "accept_eligible", "probs", "embedding", "segment", "payload", "meta", "model",
            "ts", "decided_at", "selector",
        }  # fmt: skip

    def test_accepted_lists_every_field_of_the_design(self) -> None:
        """accepted has every field DESIGN.md promises."""
        props = set(json_schemas()["accepted"]["properties"])
        assert props == {"id", "label", "confidence", "model", "payload", "meta", "decided_at", "embedding"}

    def test_dead_letter_schema_uses_the_header_names(self) -> None:
        """The dead-letter schema is keyed by the x-dlq-* header names; all but truncation's and the count of
        cut input headers are required."""
        schema = json_schemas()["dead-letter-headers"]
        assert list(schema["properties"]) == [*DLQ_HEADERS, *DLQ_TRUNCATION_HEADERS, DLQ_DROPPED_HEADERS]
        assert sorted(schema["required"]) == sorted(DLQ_HEADERS)


class TestModels:
    def test_accepted_rejects_unknown_fields(self) -> None:
        """Output contracts are closed: an extra field is an error."""
        with pytest.raises(ValidationError):
            Accepted.model_validate(
                {
                    "id": "a",
                    "label": "ok",
                    "confidence": 0.9,
                    "model": None,
                    "payload": None,
                    "meta": None,
                    "decided_at": "t",
                    "extra": 1,
                }
            )

    def test_to_label_rejects_zero_inclusion_probability(self) -> None:
        """An item with inclusion probability 0 could never have been sent: the contract forbids it."""
        record = {
            "id": "a", "route": "audit", "score": 0.5, "scores": {}, "threshold": 0.5, "selected_by": "audit",
            "query_probability": 0.0, "priority": 0.5, "predicted": "ok", "accept_eligible": False,
            "probs": [1.0], "embedding": None, "segment": None,
            "payload": None, "meta": None, "model": None, "decided_at": "t",
            "selector": {"version": "0", "config_hash": "h"},
        }  # fmt: skip
        with pytest.raises(ValidationError):
            ToLabel.model_validate(record)
        assert ToLabel.model_validate({**record, "query_probability": 0.002}).query_probability == 0.002

    def test_to_label_threshold_may_be_null_but_selected_by_is_required(self) -> None:
        """A threshold that selects nothing is null (JSON has no infinity); who selected it must be said."""
        record = {
            "id": "a", "route": "query", "score": 0.5, "scores": {}, "threshold": None,
            "selected_by": "class:crack", "query_probability": 0.3, "priority": 0.5, "predicted": "ok",
            "accept_eligible": True,
            "probs": [1.0], "embedding": None, "segment": None, "payload": None, "meta": None, "model": None,
            "decided_at": "t",
            "selector": {"version": "0", "config_hash": "h"},
        }  # fmt: skip
        assert ToLabel.model_validate(record).threshold is None
        with pytest.raises(ValidationError, match="selected_by"):
            ToLabel.model_validate({k: v for k, v in record.items() if k != "selected_by"})

    def test_dead_letter_headers_by_alias(self) -> None:
        """Headers validate from their wire names."""
        headers = DeadLetterHeaders.model_validate(dict.fromkeys(DLQ_HEADERS, "v"))
        assert headers.reason == "v"

    def test_dead_letter_headers_carry_the_inputs_own_but_no_unknown_x_dlq(self) -> None:
        """The input's headers (a traceparent) ride along, and so does the count of those cut; an x-dlq-*
        header we do not write is refused, in any case, by the model and by the published schema."""
        ours = dict.fromkeys(DLQ_HEADERS, "v")
        carried = ours | {"traceparent": "00-4bf9-00f0-01", "x-dlq-dropped-headers": "2"}
        assert DeadLetterHeaders.model_validate(carried).dropped_headers == "2"
        schema = DeadLetterHeaders.model_json_schema(by_alias=True)
        jsonschema.validate(carried, schema)
        for bogus in ("x-dlq-bogus", "X-DLQ-Reason-Again"):
            with pytest.raises(ValidationError, match="unknown x-dlq"):
                DeadLetterHeaders.model_validate(ours | {bogus: "1"})
            with pytest.raises(jsonschema.ValidationError):
                jsonschema.validate(ours | {bogus: "1"}, schema)


class TestEveryMessageParsesThroughItsContract:
    def test_a_router_snapshot_is_a_state_snapshot(self) -> None:
        """What the monitor writes to the state topic validates against the published contract."""
        cfg = parse_config({"budget": {"class_shares": {"crack": 0.2}}})
        router = Router(cfg)
        values = [b'{"id": "s%d", "probs": [0.4, 0.3, 0.2, 0.1], "model": "v1"}' % i for i in range(300)]
        batch = decode_batch(values, np.zeros(300, dtype=np.int64), n_classes=4)
        router.commit(0, router.decide(0, batch, np.arange(300.0)))
        snap = StateSnapshot.model_validate(router.snapshot(0))
        assert snap.versions == ["v1"] and "class:crack" in snap.balances

    def test_model_events_parse_or_are_refused(self) -> None:
        """A promoted event parses with its version; a record that is not an event gives None."""
        event = parse_model_event(b'{"type": "promoted", "version": "v3", "sha256": "ab", "metrics": {}}')
        assert event is not None and (event.type, event.version, event.sha256) == ("promoted", "v3", "ab")
        for raw in (None, b"", b"[]", b'{"type": "promoted"}', b'{"type": "other", "version": "v1"}'):
            assert parse_model_event(raw) is None

    def test_retrain_requests_parse_or_are_refused(self) -> None:
        """The label loop's request parses; one without its number is refused."""
        raw = b'{"type": "retrain_request", "request": 2, "reasons": ["labels"], "labels": 500, "at": "x"}'
        req = parse_retrain_request(raw)
        assert req is not None and (req.request, req.reasons) == (2, ["labels"])
        assert parse_retrain_request(b'{"type": "retrain_request", "reasons": []}') is None

    def test_labels_and_features_follow_their_parsers(self) -> None:
        """The label and feature contracts accept what their parsers accept on the common cases."""
        assert Label.model_validate({"id": "a", "label": None}).annotator == "unknown"
        with pytest.raises(ValidationError):
            Label.model_validate({"id": "", "label": "ok"})
        assert FeatureRecord.model_validate({"id": "f", "embedding": [1, 2.5]}).embedding == [1.0, 2.5]
        with pytest.raises(ValidationError):
            FeatureRecord.model_validate({"id": "f", "embedding": [1e39]})
