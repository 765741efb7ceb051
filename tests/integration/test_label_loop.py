"""`selector labels` on the real broker: decisions and labels ingested into the dataset store, unknown and
invalid label messages dead-lettered with their reasons, and a restart that stores nothing twice."""

from __future__ import annotations

import threading
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer
from prometheus_client import CollectorRegistry

from connectors.cli.main import main
from connectors.kafka.broker import EmbeddedBroker
from connectors.kafka.clients import make_producer
from connectors.labels import loop as label_loop
from connectors.labels.loop import LabelLoop
from connectors.labels.metrics import LabelLoopCollector, labels_part
from connectors.model.dataset import DatasetStore
from selector.config import Config
from tests.connectors.labels.line import T0, line
from tests.integration.streams import config_for, create_topics, produce, read_topic, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.usefixtures("kafka_client")]

CLASSES = ["ok", "scratch", "dent", "crack"]


def to_label(rid: str, pi: float) -> bytes:
    return orjson.dumps(
        {
            "id": rid,
            "route": "query",
            "predicted": "ok",
            "probs": [0.4, 0.3, 0.2, 0.1],
            "embedding": None,
            "query_probability": pi,
            "model": "v1",
            "decided_at": "2026-11-24T00:00:00Z",
        }
    )


def run_for_a_while(loop: LabelLoop, until: object) -> None:
    thread = threading.Thread(target=loop.run, kwargs={"poll_s": 0.2}, daemon=True)
    thread.start()
    try:
        # a liveness bound: the built-in trainer's spawned process alone takes ~5 s idle, far more when loaded
        wait_for(until, 120, "the label loop to ingest")  # type: ignore[arg-type]
    finally:
        loop.request_stop()
        thread.join(timeout=30)


def test_labels_are_joined_dead_lettered_and_never_stored_twice(
    broker: EmbeddedBroker, unique: str, tmp_path: Path
) -> None:
    """40 decisions and 45 label messages (40 valid, 3 for unknown ids, 2 invalid): the store holds 40
    examples, the dead-letter topic the 5 others with stage 'labels' and their reasons, the retrain topic one
    request for the 40 new labels (every 20, one round), and the built-in trainer's run on examples without
    embeddings counts as failed; a second loop over the same topics adds nothing and requests nothing (the
    trigger state is kept in the store)."""
    servers = broker.bootstrap_servers
    cfg = config_for(
        servers,
        unique,
        dataset={"path": str(tmp_path / "d.sqlite"), "unknown_label_ttl_s": 0},
        retrain={
            "every_labels": 20,
            "min_interval_s": 0.0,
            "registry": str(tmp_path / "models"),
            "builtin": True,  # the decisions carry no embedding: the trainer process fails, and says why
        },
    )
    create_topics(cfg)
    produce(servers, cfg.topics.to_label, [(f"i-{k}".encode(), to_label(f"i-{k}", 0.25)) for k in range(40)])
    good = [
        (f"i-{k}".encode(), orjson.dumps({"id": f"i-{k}", "label": "dent", "annotator": "a"}))
        for k in range(40)
    ]
    unknown = [(f"u-{k}".encode(), orjson.dumps({"id": f"u-{k}", "label": "ok"})) for k in range(3)]
    invalid = [(b"bad-1", b"{not json"), (b"bad-2", orjson.dumps({"id": "i-1", "label": "rust"}))]
    produce(servers, cfg.topics.labels, good + unknown + invalid)

    store = DatasetStore(cfg.dataset.path)
    first = LabelLoop(cfg, servers, store)
    run_for_a_while(
        first,
        lambda: (
            first.totals["labels"] >= 40
            and first.totals["unknown"] >= 3
            and first.retrainer is not None
            and first.retrainer.outcomes["failed"] == 1
        ),
    )
    assert first.totals == {"decisions": 40, "labels": 40, "unknown": 3, "invalid": 2, "pseudo_labels": 0}
    assert int(first.latency_counts.sum()) == 40 and first.latency_sum > 0  # one latency per stored vote
    examples = list(store.examples())
    assert (
        len(examples) == 40
        and {e.label for e in examples} == {"dent"}
        and {e.weight for e in examples} == {4.0}
    )

    dead = read_topic(servers, cfg.topics.dead_letter, expect=5)
    reasons = sorted((m.key.decode(), m.headers["x-dlq-reason"].decode()) for m in dead)
    assert reasons == [
        ("bad-1", "malformed_json"),
        ("bad-2", "unknown_label"),
        ("u-0", "unknown_id"),
        ("u-1", "unknown_id"),
        ("u-2", "unknown_id"),
    ]
    assert {m.headers["x-dlq-stage"] for m in dead} == {b"labels"}
    assert all(m.value in {v for _, v in unknown + invalid} for m in dead)

    (request,) = read_topic(servers, cfg.topics.retrain, expect=1)
    event = orjson.loads(request.value)
    assert (request.key, event["type"], event["request"], event["reasons"], event["labels"]) == (
        b"1",
        "retrain_request",
        1,
        ["labels"],
        40,
    )
    assert first.retrainer is not None and first.retrainer.requests["labels"] == 1
    assert first.retrainer.outcomes == {"promoted": 0, "rejected": 0, "failed": 1}
    assert read_topic(servers, cfg.topics.models, timeout_s=2) == []  # nothing was trained, nothing announced

    counts = store.counts()
    again = LabelLoop(cfg, servers, store)
    run_for_a_while(again, lambda: again.rounds >= 2)  # both topics read to their end, twice
    assert again.totals == {"decisions": 0, "labels": 0, "unknown": 0, "invalid": 0, "pseudo_labels": 0}
    assert store.counts() == counts == {"decisions": 40, "label_messages": 40, "pseudo_labels": 0, "seeds": 0}
    assert len(read_topic(servers, cfg.topics.retrain, expect=2, timeout_s=3)) == 1
    assert again.retrainer is not None and again.retrainer.triggers.requests == 1


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_labels_before_their_decisions_wait_across_a_restart_and_unknown_ones_expire(
    broker: EmbeddedBroker, unique: str, tmp_path: Path
) -> None:
    """Labels produced before any decision (20 real, 3 for ids never decided) are parked, not dead-lettered;
    the loop is stopped and a new one started; then the 20 decisions arrive and every label is joined once.
    The 3 unknown ones are dead-lettered (``unknown_id``, original bytes) only once the injected clock passes
    ``dataset.unknown_label_ttl_s``; the parked count is exported all along."""
    servers = broker.bootstrap_servers
    cfg = config_for(
        servers,
        unique,
        dataset={"path": str(tmp_path / "d.sqlite"), "unknown_label_ttl_s": 600},
        retrain={"every_labels": None, "registry": str(tmp_path / "models")},
    )
    create_topics(cfg)
    good = [
        (f"i-{k}".encode(), orjson.dumps({"id": f"i-{k}", "label": "dent", "annotator": "a"}))
        for k in range(20)
    ]
    unknown = [(f"u-{k}".encode(), orjson.dumps({"id": f"u-{k}", "label": "ok"})) for k in range(3)]
    produce(servers, cfg.topics.labels, good + unknown)
    clock = Clock(1_000_000.0)
    store = DatasetStore(cfg.dataset.path)
    first = LabelLoop(cfg, servers, store, clock=clock)
    run_for_a_while(first, lambda: first.rounds >= 2 and first.parked == 23)
    assert first.totals["labels"] == first.totals["unknown"] == 0

    clock.now += 300  # the loop was down for five minutes; the decisions were produced meanwhile
    produce(servers, cfg.topics.to_label, [(f"i-{k}".encode(), to_label(f"i-{k}", 0.5)) for k in range(20)])
    second = LabelLoop(cfg, servers, store, clock=clock)
    assert second.parked == 23  # read back from the store
    thread = threading.Thread(target=second.run, kwargs={"poll_s": 0.2}, daemon=True)
    thread.start()
    try:
        joined = lambda: second.totals["labels"] == 20 and second.parked == 3  # noqa: E731
        wait_for(joined, 30, "the parked labels to join")
        assert second.totals["unknown"] == 0
        assert read_topic(servers, cfg.topics.dead_letter, timeout_s=1) == []
        registry = CollectorRegistry()
        registry.register(LabelLoopCollector(second))
        assert registry.get_sample_value("selector_labels_parked") == 3.0
        assert labels_part(second).status()["parked_labels"] == 3
        clock.now += 300  # 600 s after the unknown labels were parked
        wait_for(lambda: second.totals["unknown"] == 3, 30, "the unknown labels to expire")
        assert second.parked == 0
    finally:
        second.request_stop()
        thread.join(timeout=30)
    second.refresh_status()
    assert second.status.parked_labels == 0
    examples = list(store.examples())
    assert sorted(e.id for e in examples) == sorted(f"i-{k}" for k in range(20))
    assert store.counts()["label_messages"] == 20
    dead = read_topic(servers, cfg.topics.dead_letter, expect=3)
    assert sorted((m.key, m.headers["x-dlq-reason"]) for m in dead) == [
        (f"u-{k}".encode(), b"unknown_id") for k in range(3)
    ]
    assert {m.value for m in dead} == {v for _, v in unknown}
    assert b"dataset.unknown_label_ttl_s" in dead[0].headers["x-dlq-exception-message"]


def test_the_loop_produces_with_the_kafka_producer_keys(
    broker: EmbeddedBroker, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop's producer takes ``kafka.compression_type``, ``batch_size``, ``linger_ms`` and
    ``max_request_size``: an invalid label message of 150 kB under a 64 kB limit is dead-lettered cut to fit
    (with its original size), not refused, and the producer carries every configured setting."""
    servers = broker.bootstrap_servers
    limit = 64 * 1024
    cfg = config_for(
        servers,
        unique,
        dataset={"path": str(tmp_path / "d.sqlite")},
        retrain={"every_labels": None, "registry": str(tmp_path / "models")},
        kafka={"max_request_size": limit, "compression_type": "gzip", "batch_size": 32768, "linger_ms": 7},
        input={"max_record_bytes": 32 * 1024},
    )
    create_topics(cfg)
    big = orjson.dumps({"id": "i-1", "label": "rust", "note": "x" * 150_000})
    produce(servers, cfg.topics.labels, [(b"big", big)])
    built: list[KafkaProducer] = []

    def spy(config: Config, at: str) -> KafkaProducer:
        built.append(make_producer(config, at))
        return built[-1]

    monkeypatch.setattr(label_loop, "make_producer", spy)
    loop = LabelLoop(cfg, servers, DatasetStore(cfg.dataset.path))
    run_for_a_while(loop, lambda: loop.totals["invalid"] == 1)
    (producer,) = built
    names = {k: k for k in ("compression_type", "batch_size", "linger_ms", "max_request_size")}
    if cfg.kafka.client == "confluent-kafka":  # librdkafka's names
        names |= {
            "compression_type": "compression.type",
            "batch_size": "batch.size",
            "linger_ms": "linger.ms",
        }
        names |= {"max_request_size": "message.max.bytes"}
    settings = {k: producer.config[name] for k, name in names.items()}
    assert settings == {
        "compression_type": "gzip",
        "batch_size": 32768,
        "linger_ms": 7,
        "max_request_size": limit,
    }
    (dead,) = read_topic(servers, cfg.topics.dead_letter, expect=1)
    assert dead.headers["x-dlq-reason"] == b"unknown_label"
    assert dead.headers["x-dlq-original-size"] == str(len(big)).encode()
    assert 0 < len(dead.value) < limit and big.startswith(dead.value)


def test_the_population_is_counted_once_and_powers_the_estimates(
    broker: EmbeddedBroker, unique: str, tmp_path: Path
) -> None:
    """300 predictions (and 2 records that are not), the decisions among them sent for labeling and their
    labels, through the broker: the label loop counts 300 items in the population (the 2 others by reason),
    its status shows the prediction-powered estimates over them with every label; a second loop over the
    same topics and store counts nothing again and estimates the same."""
    servers = broker.bootstrap_servers
    cfg = config_for(
        servers,
        unique,
        dataset={"path": str(tmp_path / "d.sqlite")},
        retrain={"every_labels": None, "registry": str(tmp_path / "models")},
    )
    create_topics(cfg)
    li = line(300, seed=7)
    bad = [(b"bad-1", b"{not json"), (b"bad-2", orjson.dumps({"id": "x", "probs": [0.5, 0.5]}))]
    produce(
        servers,
        cfg.topics.predictions,
        [(f"p-{k}".encode(), r.value) for k, r in enumerate(li.records())] + bad,
    )
    produce(servers, cfg.topics.to_label, [(str(d["id"]).encode(), orjson.dumps(d)) for d in li.decisions()])
    votes = [{"id": e.id, "label": e.label, "annotator": e.annotator} for e in li.labels()]
    produce(servers, cfg.topics.labels, [(str(v["id"]).encode(), orjson.dumps(v)) for v in votes])
    m = int(li.sampled.sum())

    store = DatasetStore(cfg.dataset.path)
    first = LabelLoop(cfg, servers, store, status_interval_s=0.0, clock=lambda: T0)
    run_for_a_while(first, lambda: first.predictions["counted"] == 300 and first.totals["labels"] == m)
    first.refresh_status()
    st = first.status
    since = st.estimates["since_start"]
    assert (since.items, since.labels) == (300, m) and first.predictions == {"counted": 300, "undecodable": 2}
    assert since.prediction_powered is not None and since.prediction_powered.accuracy.n == m
    assert 0.0 < since.prediction_powered.accuracy.estimate < 1.0
    assert st.rejected_predictions == {"malformed_json": 1, "wrong_class_count": 1}
    assert st.estimates["sliding"].items == int((li.ts >= st.window_start).sum())

    again = LabelLoop(cfg, servers, store, status_interval_s=0.0, clock=lambda: T0)
    run_for_a_while(again, lambda: again.rounds >= 2)  # every topic read to its end, twice
    again.refresh_status()
    assert again.predictions == {"counted": 0, "undecodable": 0}
    keys = ("estimates", "models", "segments", "confusion", "rejected_predictions")
    assert {k: again.status.as_dict()[k] for k in keys} == {k: st.as_dict()[k] for k in keys}


def test_the_command_refuses_the_embedded_broker(tmp_path: Path) -> None:
    """An embedded broker lives inside one process: `selector labels` needs a cluster, and says so."""
    config = tmp_path / "config.yaml"
    config.write_text("kafka: {bootstrap_servers: embedded}\n")
    assert main(["labels", "-c", str(config), "--duration", "1"]) == 2
