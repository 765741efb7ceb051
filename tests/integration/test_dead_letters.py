"""`selector dead-letters list` and `redrive` on the real embedded broker, on dead letters made by the
product's own dead-letter path (:func:`connectors.kafka.delivery.dead_letter` and ``deliver``) from records
read back from their topics."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord

from connectors.cli.main import main
from connectors.kafka.broker import EmbeddedBroker
from connectors.kafka.delivery import Outgoing, dead_letter, deliver, refused_to_dead_letter
from connectors.kafka.redrive import redriven_topic
from connectors.kafka.topic_reader import TopicReader
from selector.config import Config
from tests.integration.streams import Message, config_for, create_topics, produce, read_topic

pytestmark = pytest.mark.broker

AT = "2026-12-06T01:00:00.000Z"
LATER = "2026-12-06T03:00:00.000Z"
WRONG = b'{"id": "%s", "probs": [0.5, 0.3, 0.2]}'


def records_of(cfg: Config, topic: str) -> list[ConsumerRecord]:
    reader = TopicReader(cfg, cfg.kafka.bootstrap_servers, topic)
    try:
        return sorted(reader.read_all(), key=lambda r: (r.partition, r.offset))
    finally:
        reader.close()


def dead_letter_them(cfg: Config, letters: list[Outgoing]) -> None:
    producer = KafkaProducer(bootstrap_servers=cfg.kafka.bootstrap_servers, acks="all")
    try:
        deliver(producer, letters, 30, str, refused_to_dead_letter(cfg.topics.dead_letter, AT))
    finally:
        producer.close()


def by_value(records: list[ConsumerRecord]) -> dict[bytes, ConsumerRecord]:
    return {r.value: r for r in records}


@pytest.fixture
def cfg(broker: EmbeddedBroker, unique: str) -> Config:
    """Dead letters of 8 records: 3 malformed predictions, 2 with the wrong class count (one dead-lettered
    twice), 1 too large to keep whole (truncated), 1 unknown label (id w1, like a prediction)."""
    servers = broker.bootstrap_servers
    cfg = config_for(servers, unique)
    create_topics(cfg)
    t = cfg.topics
    malformed = [b'{"id": "m%d", "probs": [0.9, 0.1' % i for i in range(3)]
    wrong = [WRONG % b"w1", WRONG % b"w2", b'{"id": "big", "probs": [1], "payload": "%s"}' % (b"x" * 5000)]
    produce(servers, t.predictions, [(b"m%d" % i, v) for i, v in enumerate(malformed)])
    produce(servers, t.predictions, [(b"w1", wrong[0]), (b"w2", wrong[1]), (b"big", wrong[2])])
    produce(servers, t.labels, [(b"w1", b'{"id": "w1", "label": "ok", "annotator": "a"}')])
    predictions, (label,) = by_value(records_of(cfg, t.predictions)), records_of(cfg, t.labels)

    def dl(rec: ConsumerRecord, stage: str, reason: str, size: int = 1_048_576) -> Outgoing:
        return dead_letter(t.dead_letter, rec, stage, reason, "why", AT, [], size)

    dead_letter_them(
        cfg,
        [dl(predictions[v], "decode", "malformed_json") for v in malformed]
        + [dl(predictions[v], "decode", "wrong_class_count") for v in wrong[:2]]
        + [dl(predictions[wrong[0]], "decode", "wrong_class_count")]  # a copy: the same record again
        + [dl(predictions[wrong[2]], "decode", "wrong_class_count", size=2000)]
        + [dl(label, "labels", "unknown_id")],
    )
    return cfg


def config_file(cfg: Config, tmp_path: Path, **sections: dict[str, object]) -> str:
    path = tmp_path / "config.yaml"
    data = {
        "kafka": {"bootstrap_servers": cfg.kafka.bootstrap_servers, "client": cfg.kafka.client},
        "topics": cfg.topics.model_dump(),
        "metrics": {"enabled": False},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    path.write_text(json.dumps(data))
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["dead-letters", *argv])
    return code, capsys.readouterr().out


def groups(cfg: Config) -> list[str]:
    """The consumer groups the broker knows (other tests' too: the broker is shared by the session)."""
    admin = KafkaAdminClient(bootstrap_servers=cfg.kafka.bootstrap_servers)
    try:
        return sorted(g["group_id"] if isinstance(g, dict) else str(g[0]) for g in admin.list_groups())
    finally:
        admin.close()


def redriven(cfg: Config, topic: str) -> list[Message]:
    return [
        m for m in read_topic(cfg.kafka.bootstrap_servers, topic, idle_s=0.3) if "x-redriven-at" in m.headers
    ]


class TestList:
    def test_counts_by_original_topic_stage_and_reason_and_commits_nothing(
        self, cfg: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Exact counts per group, truncated ones counted, the time range from x-dlq-failed-at; the text
        table says the same; no consumer group is left behind."""
        path, before = config_file(cfg, tmp_path), groups(cfg)
        code, out = run(capsys, "list", "-c", path, "--json")
        assert code == 0
        listing = json.loads(out)
        t = cfg.topics
        assert listing["total"] == 8
        assert [
            (g["original_topic"], g["stage"], g["reason"], g["count"], g["truncated"], g["redriven"])
            for g in listing["groups"]
        ] == [
            (t.labels, "labels", "unknown_id", 1, 0, 0),
            (t.predictions, "decode", "malformed_json", 3, 0, 0),
            (t.predictions, "decode", "wrong_class_count", 4, 1, 0),
        ]
        assert {(g["first"], g["last"]) for g in listing["groups"]} == {(AT, AT)}
        code, out = run(capsys, "list", "-c", path)
        assert code == 0
        lines = out.splitlines()
        assert lines[0] == f"8 dead letters in {t.dead_letter!r}"
        assert lines[1].split() == ["original", "topic", "stage", "reason", "count", "truncated", "re-driven",
                                    "first", "last"]  # fmt: skip
        assert lines[4].split() == [t.predictions, "decode", "wrong_class_count", "4", "1", "0", AT, AT]
        assert groups(cfg) == before


class TestRedrive:
    def test_dry_run_sends_nothing_and_says_what_it_would(
        self, cfg: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Two records would go back (the copy and the truncated one skipped); nothing is produced and no
        marker topic is created."""
        code, out = run(capsys, "redrive", "-c", config_file(cfg, tmp_path), "--reason", "wrong_class_count",
                        "--dry-run")  # fmt: skip
        assert code == 0
        lines = out.splitlines()
        assert lines[1] in ("  ids: w1, w2", "  ids: w2, w1")  # in the order the partitions were fetched
        assert lines[:1] + lines[2:] == [
            "selector dead-letters redrive --dry-run: 4 of 8 dead letters match (reason wrong_class_count); "
            f"would re-send 2 (2 to {cfg.topics.predictions!r})",
            "  skipped 1: a copy of a record re-driven in this run",
            "  skipped 1: truncated: only part of the original bytes were kept",
        ]
        assert redriven(cfg, cfg.topics.predictions) == []
        consumer = KafkaConsumer(bootstrap_servers=cfg.kafka.bootstrap_servers)
        try:
            assert redriven_topic(cfg) not in consumer.topics()
        finally:
            consumer.close()

    def test_re_sends_exactly_the_chosen_records_once_and_again_after_they_fail_again(
        self, kafka_client: str, cfg: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The two chosen records go back to their original topic with their key and bytes and where they
        came from; a second run sends nothing; a re-driven record dead-lettered again can be re-driven
        (with either client library)."""
        path, t = config_file(cfg, tmp_path), cfg.topics
        argv = ("redrive", "-c", path, "--reason", "wrong_class_count", "--json")
        code, out = run(capsys, *argv)
        assert code == 0
        done = json.loads(out)
        assert (done["chosen"], done["sent"], done["skipped"]) == (4, 2, {"copy": 1, "truncated": 1})
        back = sorted(redriven(cfg, t.predictions), key=lambda m: m.key or b"")
        assert [(m.key, m.value) for m in back] == [(b"w1", WRONG % b"w1"), (b"w2", WRONG % b"w2")]
        letters = {(m.partition, m.offset): m for m in read_topic(cfg.kafka.bootstrap_servers, t.dead_letter)}
        for m in back:
            source = letters[
                int(m.headers["x-redriven-from-partition"]), int(m.headers["x-redriven-from-offset"])
            ]
            assert m.headers["x-redriven-from-topic"] == t.dead_letter.encode()
            assert (source.key, source.value) == (m.key, m.value)
            assert not any(name.startswith("x-dlq-") for name in m.headers)
        assert redriven(cfg, t.labels) == []

        code, out = run(capsys, *argv)
        assert code == 0
        assert (json.loads(out)["sent"], json.loads(out)["skipped"]) == (0, {"redriven": 3, "truncated": 1})
        assert len(redriven(cfg, t.predictions)) == 2

        w1 = next(r for r in records_of(cfg, t.predictions) if r.headers and r.key == b"w1")
        dead_letter_them(
            cfg, [dead_letter(t.dead_letter, w1, "decode", "wrong_class_count", "again", LATER, [])]
        )
        code, out = run(capsys, *argv)
        assert (code, json.loads(out)["sent"], json.loads(out)["ids"]) == (0, 1, ["w1"])
        code, out = run(capsys, "list", "-c", path, "--json")
        (group,) = [g for g in json.loads(out)["groups"] if g["reason"] == "wrong_class_count"]
        assert (group["count"], group["redriven"], group["last"]) == (5, 4, LATER)

    def test_a_label_goes_back_to_the_labels_topic(
        self, cfg: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Chosen by stage and original topic, the label with a prediction's id goes back whole to labels."""
        t = cfg.topics
        code, out = run(capsys, "redrive", "-c", config_file(cfg, tmp_path), "--stage", "labels", "--topic",
                        t.labels, "--json")  # fmt: skip
        assert (code, json.loads(out)["sent_by_topic"]) == (0, {t.labels: 1})
        (label,) = redriven(cfg, t.labels)
        assert orjson.loads(label.value or b"") == {"id": "w1", "label": "ok", "annotator": "a"}

    def test_a_filter_matching_nothing_is_said_and_exits_0(
        self, cfg: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = config_file(cfg, tmp_path)
        code, out = run(capsys, "redrive", "-c", path, "--reason", "nope", "--offsets", "0:0-3")
        assert code == 0
        assert out.strip() == (
            "selector dead-letters redrive: no dead letter matches (reason nope; offsets 0:0-3) among 8 in "
            f"{cfg.topics.dead_letter!r}"
        )
        assert redriven(cfg, cfg.topics.predictions) == []

    def test_a_record_the_producer_refuses_is_counted_not_marked_and_exits_1(
        self, broker: EmbeddedBroker, unique: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A 40 kB record with kafka.max_request_size at 32 KiB: refused, exit 1, nothing marked; once the
        limit is raised it goes back."""
        cfg = config_for(broker.bootstrap_servers, unique)
        create_topics(cfg)
        big = b'{"id": "big", "payload": "%s"}' % (b"x" * 40_000)
        produce(cfg.kafka.bootstrap_servers, cfg.topics.predictions, [(b"big", big)])
        (rec,) = records_of(cfg, cfg.topics.predictions)
        dead_letter_them(
            cfg, [dead_letter(cfg.topics.dead_letter, rec, "produce", "output_too_large", "", AT, [])]
        )
        small = config_file(
            cfg, tmp_path, kafka={"max_request_size": 32_768}, input={"max_record_bytes": 16_384}
        )
        code, out = run(capsys, "redrive", "-c", small, "--reason", "output_too_large")
        assert code == 1
        assert out.splitlines()[1:] == [
            "  ids: big",
            "  skipped 1: refused for good by the producer or the broker (too large?); not marked",
        ]
        assert redriven(cfg, cfg.topics.predictions) == []
        code, out = run(
            capsys, "redrive", "-c", config_file(cfg, tmp_path), "--reason", "output_too_large", "--json"
        )
        assert (code, json.loads(out)["sent"]) == (0, 1)
        assert [m.value for m in redriven(cfg, cfg.topics.predictions)] == [big]


class TestNothingThere:
    def test_an_empty_or_absent_dead_letter_topic_is_said_and_exits_0(
        self, broker: EmbeddedBroker, unique: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """No topic yet: both commands say so; an empty one (4 empty partitions) lists no dead letters."""
        cfg = config_for(broker.bootstrap_servers, unique)
        path = config_file(cfg, tmp_path)
        dlq = cfg.topics.dead_letter
        assert run(capsys, "list", "-c", path) == (0, f"no dead-letter topic {dlq!r} (topics.dead_letter): "
                                                       "nothing was dead-lettered yet\n")  # fmt: skip
        code, out = run(capsys, "redrive", "-c", path, "--all")
        assert (code, out) == (0, f"no dead-letter topic {dlq!r} (topics.dead_letter): nothing to re-drive\n")
        create_topics(cfg)
        assert run(capsys, "list", "-c", path) == (0, f"no dead letters in {dlq!r}\n")
        code, out = run(capsys, "list", "-c", path, "--json")
        assert json.loads(out) == {"topic": dlq, "exists": True, "total": 0, "groups": []}
