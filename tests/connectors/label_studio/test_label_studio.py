"""The Label Studio bridge's pure parts: the labeling interface, tasks from to-label records, votes from
annotations, label messages, and the client's retries (no server, no broker)."""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from kafka.consumer.fetcher import ConsumerRecord

from connectors.label_studio.api import LabelStudioClient, LabelStudioUnavailableError
from connectors.label_studio.bridge import LabelStudioBridge
from connectors.label_studio.tasks import (
    choices_names,
    label_config,
    label_message,
    read_vote,
    render_text,
    task_for,
)
from selector.config import parse_config
from selector.errors import ConfigError
from selector.quality.labels import LabelEvent, parse_label
from tests.connectors.kafka.test_delivery import FakeProducer

CLASSES = ["ok", 'sc"ratch', "<dent>", "crack & chip"]
NAMES = ("label", "item")


def annotation(choices: list[str], **extra: Any) -> dict[str, Any]:
    result = [{"from_name": "label", "to_name": "item", "type": "choices", "value": {"choices": choices}}]
    return {"id": 7, "task": 3, "result": result, "updated_at": "2026-11-24T19:56:29.136182Z", **extra}


class TestLabelConfig:
    def test_one_escaped_choice_per_class(self) -> None:
        """The generated interface is valid XML with one single-choice option per class, names intact."""
        root = ET.fromstring(label_config(CLASSES))
        (choices,) = root.iter("Choices")
        assert (choices.get("name"), choices.get("toName"), choices.get("choice")) == (
            "label",
            "item",
            "single",
        )
        assert [c.get("value") for c in choices.iter("Choice")] == CLASSES
        assert root.find("Text") is not None and root.find("Text").get("value") == "$text"  # type: ignore[union-attr]

    def test_the_choices_of_a_custom_interface_are_found(self) -> None:
        """A configured interface names where the class is chosen; one without <Choices> is refused."""
        xml = (
            '<View><Text name="t" value="$text"/><Choices name="cls" toName="t"><Choice value="a"/></Choices>'
        )
        xml += "</View>"
        assert choices_names(xml) == ("cls", "t")
        with pytest.raises(ConfigError, match="Choices"):
            choices_names('<View><Text name="t" value="$text"/></View>')
        with pytest.raises(ConfigError, match="not valid XML"):
            choices_names("<View>")

    def test_the_bridge_needs_a_token_and_touches_no_network(self) -> None:
        """Building the bridge reads the config only; without a token it says which key to set."""
        with pytest.raises(ConfigError, match=r"label_studio\.token"):
            LabelStudioBridge(parse_config({}), "localhost:1")
        bridge = LabelStudioBridge(parse_config({"label_studio": {"token": "x" * 40}}), "localhost:1")
        assert bridge.names == NAMES and bridge.client.mode is None


class TestTasks:
    def test_a_record_becomes_a_task_with_its_prediction(self) -> None:
        """The task carries the item id, payload, meta, route and score; the prediction the model version,
        the informativeness and the predicted class."""
        record = {"id": "i-1", "route": "audit", "score": 0.25, "predicted": "<dent>", "model": "v3"}
        record |= {"payload": {"text": "hello"}, "meta": {"m": 1}, "probs": [0.1, 0.2, 0.3, 0.4]}
        task = task_for(record, CLASSES, NAMES)
        assert task["data"] == {
            "text": "hello",
            "selector_id": "i-1",
            "payload": {"text": "hello"},
            "meta": {"m": 1},
            "route": "audit",
            "score": 0.25,
        }
        assert task["predictions"] == [
            {
                "model_version": "v3",
                "score": 0.25,
                "result": [
                    {
                        "from_name": "label",
                        "to_name": "item",
                        "type": "choices",
                        "value": {"choices": ["<dent>"]},
                    }
                ],
            }
        ]

    def test_an_unknown_model_and_class_index(self) -> None:
        """No model: version 'unknown'; a class index names the class; no class, no prediction."""
        task = task_for({"id": "a", "predicted": 1, "score": 1}, CLASSES, NAMES)
        assert task["predictions"][0]["model_version"] == "unknown"
        assert task["predictions"][0]["result"][0]["value"]["choices"] == ['sc"ratch']
        assert "predictions" not in task_for({"id": "a", "predicted": "rust"}, CLASSES, NAMES)

    def test_the_text_is_readable(self) -> None:
        """A string payload is shown as is, a payload's text field too, anything else as indented JSON."""
        assert render_text({"id": "a", "payload": "plain"}) == "plain"
        assert render_text({"id": "a", "payload": None}) == "item a"
        assert render_text({"id": "a", "payload": {"b": 1, "a": [1]}}).startswith('{\n  "a": [')


class TestVotes:
    def test_an_annotation_is_a_vote_for_its_class(self) -> None:
        """The vote names the item, the class, the annotator and the annotation's updated_at."""
        vote = read_vote(
            {"id": 3, "data": {"selector_id": "i-1"}}, annotation(["crack & chip"]), "label", CLASSES, "a@b"
        )
        assert (vote.item, vote.label, vote.annotator, vote.task) == ("i-1", "crack & chip", "a@b", 3)
        assert vote.updated_at == datetime(2026, 11, 24, 19, 56, 29, 136182, tzinfo=UTC)

    @pytest.mark.parametrize(
        ("task", "ann", "why"),
        [
            ({"id": 3, "data": {}}, annotation(["ok"]), "selector_id"),
            ({"id": 3, "data": {"selector_id": "i"}}, annotation(["rust"]), "not one configured class"),
            (
                {"id": 3, "data": {"selector_id": "i"}},
                annotation(["ok", "crack & chip"]),
                "not one configured",
            ),
            ({"id": 3, "data": {"selector_id": "i"}}, annotation(["ok"], was_cancelled=True), "skipped"),
        ],
    )
    def test_what_is_not_a_label_of_ours(self, task: dict[str, Any], ann: dict[str, Any], why: str) -> None:
        """No selector_id, a choice outside the classes, two choices, or a skip: no label, and why."""
        vote = read_vote(task, ann, "label", CLASSES, "a")
        assert vote.label is None and why in vote.why

    def test_label_messages_are_what_the_label_loop_reads(self) -> None:
        """A label and a retraction parse as label events with the annotation's time to the microsecond."""
        at = datetime(2026, 11, 24, 19, 56, 29, 136182, tzinfo=UTC)
        for label in ("<dent>", None):
            raw = label_message("i-1", label, "a@b", at)
            assert orjson.loads(raw) == {
                "id": "i-1",
                "label": label,
                "annotator": "a@b",
                "ts": "2026-11-24T19:56:29.136182Z",
            }
            event = parse_label(raw, CLASSES, 0.0)
            assert isinstance(event, LabelEvent) and event.label == label and event.ts == at.timestamp()


class TestClient:
    def test_a_server_that_is_not_there_is_named(self) -> None:
        """Connection errors are retried with exponential backoff, then reported with the URL and what to
        check, without the token."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        slept: list[float] = []
        token = "t" * 40
        client = LabelStudioClient(f"http://127.0.0.1:{port}", token, attempts=3, sleep=slept.append)
        with pytest.raises(
            LabelStudioUnavailableError, match="unavailable for GET /api/projects/ after 3"
        ) as err:
            client.call("GET", "/api/projects/")
        assert slept == [0.5, 1.0] and token not in str(err.value) and "label_studio.url" in str(err.value)


class FakeStudio:
    """Label Studio's import endpoint: records every task imported and gives each the next id."""

    def __init__(self) -> None:
        self.imported: list[dict[str, Any]] = []

    def call(self, method: str, path: str, body: Any = None, query: Any = None, retry: bool = True) -> Any:
        assert (method, path) == ("POST", "/api/projects/1/import")
        orjson.dumps(body)  # the client sends it as JSON: a task that cannot be encoded fails the batch
        first = len(self.imported)
        self.imported += body
        return {"task_ids": list(range(first, len(self.imported)))}

    def secrets(self) -> list[str]:
        return []


class TestImportIsolation:
    def test_a_record_whose_task_fails_is_dead_lettered_and_the_batch_imported(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """One to-label record makes the task builder raise, another yields a task JSON cannot carry: each
        is dead-lettered (stage encode, reason encode_error, its original bytes) and the three others
        become tasks."""
        real = task_for

        def fragile(record: dict[str, Any], classes: list[str], names: tuple[str, str]) -> dict[str, Any]:
            if record["id"] == "boom":
                raise RecursionError("payload too deep")
            task = real(record, classes, names)
            if record["id"] == "odd":
                task["data"]["meta"] = {1j}  # not JSON
            return task

        monkeypatch.setattr("connectors.label_studio.bridge.task_for", fragile)
        cfg = parse_config({"classes": CLASSES, "label_studio": {"token": "x" * 40}})
        studio = FakeStudio()
        bridge = LabelStudioBridge(cfg, "127.0.0.1:9", client=studio)  # type: ignore[arg-type]
        bridge.project_id = 1
        bridge._producer = producer = FakeProducer(refuse_over=10**9)
        ids = ["a", "boom", "b", "odd", "c"]
        values = [orjson.dumps({"id": i, "route": "query", "predicted": "ok"}) for i in ids]
        recs = [
            ConsumerRecord("to-label", 0, -1, 5 + k, 0, 0, i.encode(), v, [], None, -1, -1, -1)
            for k, (i, v) in enumerate(zip(ids, values, strict=True))
        ]
        bridge.import_records(recs)
        assert [t["data"]["selector_id"] for t in studio.imported] == ["a", "b", "c"]
        dead = {k: (v, dict(h or [])) for _, k, v, h in producer.delivered}
        assert set(dead) == {b"boom", b"odd"} and bridge.dead_letters == 2
        for key, value in ((b"boom", values[1]), (b"odd", values[3])):
            got, headers = dead[key]
            assert got == value
            assert (headers["x-dlq-stage"], headers["x-dlq-reason"]) == (b"encode", b"encode_error")
        assert b"RecursionError: payload too deep" in dead[b"boom"][1]["x-dlq-exception-message"]

    def test_a_record_that_is_not_a_to_label_record_is_dead_lettered(self) -> None:
        """Records that are not JSON or tombstones (reason malformed_json), not objects or without a string
        id (reason missing_id) become dead letters of stage label-studio with their original bytes;
        the records around them become tasks."""
        cfg = parse_config({"classes": CLASSES, "label_studio": {"token": "x" * 40}})
        studio = FakeStudio()
        bridge = LabelStudioBridge(cfg, "127.0.0.1:9", client=studio)  # type: ignore[arg-type]
        bridge.project_id = 1
        bridge._producer = producer = FakeProducer(refuse_over=10**9)
        values = [
            orjson.dumps({"id": "a", "route": "query", "predicted": "ok"}),
            b"{not json",
            b"[1]",
            orjson.dumps({"id": 7, "route": "query"}),
            None,
            orjson.dumps({"id": "b", "route": "audit"}),
        ]
        recs = [
            ConsumerRecord("to-label", 0, -1, k, 0, 0, str(k).encode(), v, [], None, -1, -1, -1)
            for k, v in enumerate(values)
        ]
        bridge.import_records(recs)
        assert [t["data"]["selector_id"] for t in studio.imported] == ["a", "b"]
        dead = {k: (v, dict(h or [])) for _, k, v, h in producer.delivered}
        reasons = {k: (h["x-dlq-stage"], h["x-dlq-reason"]) for k, (_, h) in dead.items()}
        assert reasons == {
            b"1": (b"label-studio", b"malformed_json"),
            b"2": (b"label-studio", b"missing_id"),
            b"3": (b"label-studio", b"missing_id"),
            b"4": (b"label-studio", b"malformed_json"),
        }
        assert [dead[str(k).encode()][0] for k in (1, 2, 3)] == values[1:4] and bridge.dead_letters == 4
