"""`selector label-studio` against a real Label Studio server and the embedded broker: to-label records become
tasks with pre-annotations exactly once, annotations become label messages through the webhook, updates and
deletions follow, and polling catches what the webhook missed."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from connectors.kafka.broker import EmbeddedBroker
from connectors.label_studio.api import LabelStudioClient, LabelStudioError
from connectors.label_studio.bridge import LabelStudioBridge
from connectors.label_studio.tasks import parse_time
from selector.config import Config
from selector.quality.labels import LabelEvent, parse_label
from tests.integration.label_studio_server import EMAIL, LabelStudioServer, free_port
from tests.integration.streams import config_for, create_topics, produce, read_topic, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.usefixtures("kafka_client")]

CLASSES = ["ok", "scratch", "dent", "crack"]


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioServer]:
    server = LabelStudioServer(tmp_path_factory.mktemp("label-studio")).start()
    try:
        yield server
    finally:
        server.stop()


def to_label(rid: str, score: float, predicted: str) -> bytes:
    """A record of the to-label contract (docs/messages.md)."""
    return orjson.dumps(
        {
            "id": rid,
            "route": "query",
            "score": score,
            "scores": {"entropy": score},
            "threshold": 0.5,
            "selected_by": "entropy",
            "query_probability": 0.5,
            "priority": score,
            "predicted": predicted,
            "accept_eligible": False,
            "probs": [0.4, 0.3, 0.2, 0.1],
            "embedding": None,
            "segment": None,
            "payload": {"text": f"part {rid}", "line": 3},
            "meta": {"camera": "c1"},
            "model": "v7",
            "decided_at": "2026-11-24T00:00:00Z",
            "selector": {"version": "0.1.0", "config_hash": "abc"},
        }
    )


class Labels:
    """Every message of the labels topic so far, read by one group-less consumer."""

    def __init__(self, servers: str, topic: str) -> None:
        self._consumer = KafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False, group_id=None)
        parts = self._consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        self._consumer.assign(tps)
        self._consumer.seek_to_beginning(*tps)
        self.messages: list[dict[str, Any]] = []

    def until(
        self, predicate: Callable[[list[dict[str, Any]]], bool], what: str, timeout_s: float = 60
    ) -> None:
        def read() -> bool:
            for records in self._consumer.poll(timeout_ms=100).values():
                for r in records:
                    assert r.key == orjson.loads(r.value)["id"].encode()
                    assert isinstance(parse_label(r.value, CLASSES, 0.0), LabelEvent)  # the label loop's view
                    self.messages.append(orjson.loads(r.value))
            return predicate(self.messages)

        wait_for(read, timeout_s, what)

    def close(self) -> None:
        self._consumer.close()


class Running:
    """A bridge run in a thread; :meth:`stop` stops it and re-raises what it raised."""

    def __init__(self, bridge: LabelStudioBridge) -> None:
        self.bridge = bridge
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.bridge.run()
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        self.bridge.request_stop()
        self.thread.join(timeout=30)
        if self.error is not None:
            raise self.error


def choice(label: str) -> list[dict[str, Any]]:
    return [{"from_name": "label", "to_name": "item", "type": "choices", "value": {"choices": [label]}}]


def tasks_of(ls: LabelStudioServer, project: int) -> list[dict[str, Any]]:
    answer = ls.api("GET", f"/api/tasks/?project={project}&fields=all&page_size=100")
    assert isinstance(answer, dict)
    return list(answer["tasks"])


def webhooks(ls: LabelStudioServer, project: int | None) -> list[dict[str, Any]]:
    answer = ls.api("GET", f"/api/webhooks/?project={project}")
    assert isinstance(answer, list)
    return answer


def annotate(ls: LabelStudioServer, task: int, label: str) -> dict[str, Any]:
    answer = ls.api("POST", f"/api/tasks/{task}/annotations/", {"result": choice(label)})
    assert isinstance(answer, dict)
    return answer


def has(msgs: list[dict[str, Any]], item: str, label: str | None, ts: str | None = None) -> bool:
    return any(
        m["id"] == item
        and m["label"] == label
        and m["annotator"] == EMAIL
        and (ts is None or parse_time(m["ts"]) == parse_time(ts))
        for m in msgs
    )


def bridge_config(servers: str, unique: str, ls: LabelStudioServer, port: int, poll_s: float) -> Config:
    return config_for(
        servers,
        unique,
        label_studio={
            "url": ls.url,
            "token": ls.token,
            "project": f"selector {unique} <&>",
            "webhook_host": "127.0.0.1",
            "webhook_port": port,
            "poll_interval_s": poll_s,
        },
    )


def test_records_become_tasks_and_annotations_become_labels(
    broker: EmbeddedBroker, unique: str, label_studio: LabelStudioServer
) -> None:
    """Seven to-label records (six items, one twice) and one that is not JSON: six tasks, each with one
    pre-annotation (the model version, the informativeness as score, the predicted class), and a dead letter.
    Annotations reach the labels topic through the webhook (with the annotator's email and the annotation's
    updated_at), an update as a new label, a deletion as a retraction; an annotation made while the bridge is
    down arrives by the poll at restart, and with the webhook off, by the periodic poll (a deletion too). A
    restarted bridge imports nothing again."""
    ls = label_studio
    servers = broker.bootstrap_servers
    port = free_port()
    cfg = bridge_config(servers, unique, ls, port, poll_s=3600.0)  # the first bridge: only the webhook
    create_topics(cfg)
    items = {f"i-{k}": (round(0.1 * (k + 1), 2), CLASSES[k % 4]) for k in range(6)}
    records = [(rid.encode(), to_label(rid, s, p)) for rid, (s, p) in items.items()]
    produce(servers, cfg.topics.to_label, [*records[:3], records[1], *records[3:], (b"bad", b"{not json")])

    first = Running(LabelStudioBridge(cfg, servers))
    labels = Labels(servers, cfg.topics.labels)
    try:
        bridge = first.bridge
        wait_for(lambda: bridge.tasks_imported == 6 and bridge.dead_letters == 1, 120, "the import")
        assert bridge.duplicates_skipped == 1 and bridge.client.mode == "legacy"
        assert bridge.project_id is not None
        tasks = {t["data"]["selector_id"]: t for t in tasks_of(ls, bridge.project_id)}
        assert sorted(tasks) == sorted(items)
        for rid, task in tasks.items():
            score, predicted = items[rid]
            (prediction,) = task["predictions"]
            assert (prediction["model_version"], prediction["score"]) == ("v7", score)
            assert prediction["result"] == choice(predicted)
            assert task["data"]["text"] == f"part {rid}" and task["data"]["route"] == "query"
            assert task["data"]["payload"] == {"text": f"part {rid}", "line": 3}
        (dead,) = read_topic(servers, cfg.topics.dead_letter, expect=1)
        assert (dead.key, dead.headers["x-dlq-stage"], dead.headers["x-dlq-reason"]) == (
            b"bad",
            b"label-studio",
            b"malformed_json",
        )

        made = {
            rid: annotate(ls, tasks[rid]["id"], CLASSES[(k + 1) % 4]) for k, rid in enumerate(items) if k < 4
        }
        labels.until(lambda m: len(m) >= 4, "four labels")
        for k, rid in enumerate(list(items)[:4]):
            assert has(labels.messages, rid, CLASSES[(k + 1) % 4], made[rid]["updated_at"])

        updated = ls.api("PATCH", f"/api/annotations/{made['i-0']['id']}/", {"result": choice("crack")})
        assert isinstance(updated, dict)
        labels.until(lambda m: has(m, "i-0", "crack", updated["updated_at"]), "the updated label")
        ls.api("DELETE", f"/api/annotations/{made['i-1']['id']}/")
        labels.until(lambda m: has(m, "i-1", None), "the retraction")
        retraction = next(m for m in labels.messages if m["label"] is None)
        assert parse_time(retraction["ts"]) > parse_time(made["i-1"]["updated_at"])
        # the bridge counts a message once the broker acknowledged it: it may be read back a moment before
        wait_for(lambda: bridge.retractions == 1, 30, "the retraction counted")
        assert len(labels.messages) == 6 and bridge.polls == 1  # the webhook, not a poll, delivered them
        assert (bridge.labels_produced, bridge.retractions, bridge.ignored) == (5, 1, 0)
    finally:
        first.stop()

    late = annotate(ls, tasks["i-4"]["id"], "dent")  # the bridge is down: the webhook call fails
    second = Running(LabelStudioBridge(bridge_config(servers, unique, ls, port, poll_s=1.0), servers))
    try:
        bridge = second.bridge
        labels.until(lambda m: has(m, "i-4", "dent", late["updated_at"]), "the label made while down")
        (hook,) = webhooks(ls, bridge.project_id)
        ls.api("PATCH", f"/api/webhooks/{hook['id']}/", {"is_active": False})
        polls = bridge.polls  # before the annotation: a poll may pick it up before annotate() returns
        missed = annotate(ls, tasks["i-5"]["id"], "scratch")
        labels.until(lambda m: has(m, "i-5", "scratch", missed["updated_at"]), "the label the webhook missed")
        assert bridge.polls > polls
        ls.api("DELETE", f"/api/annotations/{missed['id']}/")
        labels.until(lambda m: has(m, "i-5", None), "the retraction the webhook missed")
        assert bridge.tasks_imported == 0 and bridge.duplicates_skipped == 0  # offsets were committed
    finally:
        second.stop()
        labels.close()
    assert bridge.project_id is not None and len(tasks_of(ls, bridge.project_id)) == 6
    (again,) = webhooks(ls, bridge.project_id)
    assert again["url"] == f"http://127.0.0.1:{port}/webhook"  # reused, not registered twice


def test_personal_access_tokens_are_refreshed_and_bad_tokens_named(label_studio: LabelStudioServer) -> None:
    """A personal access token is exchanged for an access token and refreshed when that one is refused; a
    token Label Studio refuses fails with its detail and the endpoint, and never shows the token."""
    pat = label_studio.personal_access_token()
    client = LabelStudioClient(label_studio.url, pat)
    assert isinstance(client.call("GET", "/api/projects/"), dict) and client.mode == "pat"
    client._access = "expired.access.token"
    assert isinstance(client.call("GET", "/api/projects/"), dict)
    assert client._access != "expired.access.token"

    bad = "0" * 40
    with pytest.raises(LabelStudioError) as refused:
        LabelStudioClient(label_studio.url, bad).call("GET", "/api/projects/")
    assert refused.value.status == 401 and "GET /api/projects/" in str(refused.value)
    assert "Invalid token" in str(refused.value) and bad not in str(refused.value)
