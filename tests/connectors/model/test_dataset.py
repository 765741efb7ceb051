"""The dataset store on a real SQLite file: decisions stored once, label messages appended and joined, unknown
ids refused, quorum resolution, export, and an unbiased accuracy estimate from the stored examples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
from kafka.consumer.fetcher import ConsumerRecord

from connectors.cli.main import main
from connectors.model.dataset import DatasetStore, Ingested
from selector import __version__
from selector.config import parse_config
from selector.messages.outputs import encode_outputs
from selector.messages.prediction import decode_batch
from selector.quality.estimates import weighted_mean
from selector.quality.labels import LabelEvent
from selector.routing import Router

CLASSES = ["ok", "scratch", "dent", "crack"]


def decision(rid: str, pi: float = 0.5, embedding: list[float] | None = None) -> dict[str, object]:
    return {
        "id": rid,
        "route": "query",
        "predicted": "ok",
        "probs": [0.7, 0.1, 0.1, 0.1],
        "embedding": embedding,
        "query_probability": pi,
        "model": "v1",
        "decided_at": f"2026-11-24T00:00:{rid[-2:]}Z",
    }


class TestStore:
    def test_decisions_are_stored_once_and_survive_reopening(self, tmp_path: Path) -> None:
        """A repeated id keeps its first decision; a reopened file holds everything."""
        path = tmp_path / "dataset.sqlite"
        store = DatasetStore(path)
        assert store.add_decisions([decision("i-01", 0.5), decision("i-02")]) == 2
        assert store.add_decisions([decision("i-01", 0.9)]) == 0
        store.add_labels([LabelEvent("i-01", "dent", "ann", 1.0)])
        store.close()
        again = DatasetStore(path)
        (example,) = list(again.examples())
        assert (example.id, example.label, example.inclusion, example.weight) == ("i-01", "dent", 0.5, 2.0)
        assert example.probs == [0.7, 0.1, 0.1, 0.1] and example.model == "v1"

    def test_labels_for_unknown_items_are_refused_and_returned(self, tmp_path: Path) -> None:
        """Messages for ids never sent for labeling are not stored; their ids come back for dead-lettering."""
        store = DatasetStore(tmp_path / "d.sqlite")
        store.add_decisions([decision("i-01")])
        unknown = store.add_labels(
            [
                LabelEvent("i-01", "ok", "a", 1.0),
                LabelEvent("x-99", "ok", "a", 1.0),
                LabelEvent("x-98", None, "a", 2),
            ]
        )
        assert unknown == ["x-99", "x-98"]
        assert set(store.book().votes) == {"i-01"}

    def test_quorum_updates_retractions_and_duplicates(self, tmp_path: Path) -> None:
        """quorum 2: one vote is not an example; a second agreeing vote makes one; a retraction undoes it; a
        duplicated message changes nothing."""
        store = DatasetStore(tmp_path / "d.sqlite")
        store.add_decisions([decision("i-01", embedding=[1.0, 2.0])])
        store.add_labels([LabelEvent("i-01", "dent", "a", 1.0)])
        assert list(store.examples(quorum=2)) == []
        store.add_labels([LabelEvent("i-01", "dent", "b", 2.0), LabelEvent("i-01", "dent", "b", 2.0)])
        (e,) = list(store.examples(quorum=2))
        assert (e.label, e.votes, e.agreement, e.embedding) == ("dent", 2, 1.0, [1.0, 2.0])
        store.add_labels([LabelEvent("i-01", None, "b", 3.0)])
        assert list(store.examples(quorum=2)) == []

    def test_export_writes_one_json_line_per_example(self, tmp_path: Path) -> None:
        """The export holds exactly the examples, with their weights."""
        store = DatasetStore(tmp_path / "d.sqlite")
        store.add_decisions([decision(f"i-{k:02d}", pi=0.25) for k in range(5)])
        store.add_labels([LabelEvent(f"i-{k:02d}", "ok", "a", 1.0) for k in range(3)])
        out = tmp_path / "examples.jsonl"
        assert store.export_jsonl(out).total() == 3
        rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
        assert [r["id"] for r in rows] == ["i-00", "i-01", "i-02"]
        assert {r["weight"] for r in rows} == {4.0}

    def test_parquet_export_holds_the_same_examples_as_json_lines(self, tmp_path: Path) -> None:
        """Every column and value of the Parquet file equals the JSON-lines export; an empty export still
        has the columns, typed."""
        import pyarrow.parquet as pq  # noqa: PLC0415 (the optional dependency under test)

        store = DatasetStore(tmp_path / "d.sqlite")
        assert store.export_parquet(tmp_path / "empty.parquet").total() == 0
        empty = pq.read_table(tmp_path / "empty.parquet")
        assert empty.num_rows == 0 and empty.schema.field("embedding").type.value_type == "double"
        store.add_decisions([decision(f"i-{k:02d}", pi=0.5, embedding=[k, 1.5]) for k in range(3)])
        store.add_decisions([decision("i-03", pi=0.25)])
        store.add_labels([LabelEvent(f"i-{k:02d}", "dent", "a", 1.0) for k in range(4)])
        assert store.export_parquet(tmp_path / "x.parquet") == {"human": 4}
        store.export_jsonl(tmp_path / "x.jsonl")
        rows = [orjson.loads(line) for line in (tmp_path / "x.jsonl").read_bytes().splitlines()]
        assert pq.read_table(tmp_path / "x.parquet").to_pylist() == rows


def test_examples_from_the_routers_records_estimate_accuracy_without_bias(tmp_path: Path) -> None:
    """The Router decides 20,000 predictions; its to-label records go into the store and a simulated
    annotator labels every one of them with the truth; the store's examples, weighted by 1 / pi, estimate
    the accuracy of the whole stream within their interval; the unweighted labeled accuracy is far off."""
    rng = np.random.default_rng(5)
    n = 20_000
    label = rng.choice(4, size=n, p=[0.95, 0.02, 0.02, 0.01])
    logits = rng.normal(0, 1, (n, 4))
    logits[np.arange(n), label] += rng.uniform(0.5, 6.0, n)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    config = parse_config({"classes": CLASSES, "budget": {"rate": 0.05, "audit_rate": 0.01, "caps": {}}})
    values = [orjson.dumps({"id": f"p-{i}", "probs": probs[i].tolist()}) for i in range(n)]
    batch = decode_batch(values, [0] * n, **config.decode_options())
    decisions = Router(config).decide(0, batch, np.arange(n) * 0.01)
    info = {"version": __version__, "config_hash": config.config_hash()}
    out = encode_outputs(batch, decisions, CLASSES, "2026-11-24T00:00:00Z", info)
    store = DatasetStore(tmp_path / "d.sqlite")
    records = [orjson.loads(v) for _, v in out.to_label]
    assert store.add_decisions(records) == len(records) > 500
    truth_of = {f"p-{i}": CLASSES[label[i]] for i in range(n)}
    assert store.add_labels(LabelEvent(r["id"], truth_of[r["id"]], "sim", 1.0) for r in records) == []
    examples = list(store.examples())
    assert len(examples) == len(records)
    correct = np.array([float(e.label == e.predicted) for e in examples])
    estimate = weighted_mean(correct, np.array([e.inclusion for e in examples]))
    truth = float(np.mean(label == probs.argmax(axis=1)))
    assert estimate.low <= truth <= estimate.high
    assert abs(float(correct.mean()) - truth) > 0.1  # the labeled items alone are no estimate at all


def record(topic: str, partition: int, offset: int, value: object) -> ConsumerRecord:
    raw = value if isinstance(value, bytes) or value is None else orjson.dumps(value)
    return ConsumerRecord(topic, partition, -1, offset, 1_700_000_000_000, 0, None, raw, [], None, -1, -1, -1)


class TestIngest:
    def test_one_call_stores_decisions_then_labels_and_sorts_out_the_rest(self, tmp_path: Path) -> None:
        """A label whose to-label record arrives in the same call is joined; a label for an unknown id comes
        back as unknown; invalid messages come back with their reasons; the positions follow the offsets."""
        store = DatasetStore(tmp_path / "d.sqlite")
        to_label = [record("to-label", 0, 7, decision("i-01")), record("to-label", 1, 3, decision("i-02"))]
        labels = [
            record("labels", 0, 0, {"id": "i-01", "label": "dent", "annotator": "a"}),
            record("labels", 0, 1, {"id": "x-99", "label": "ok"}),
            record("labels", 1, 0, {"id": "i-02", "label": "rust"}),
            record("labels", 1, 1, b"{not json"),
            record("labels", 1, 2, {"id": "i-02", "label": None, "annotator": "b", "ts": "yesterday"}),
        ]
        done = store.ingest(to_label, labels, CLASSES)
        assert (done.decisions, done.labels) == (2, 1)
        assert [orjson.loads(r.value)["id"] for r in done.unknown] == ["x-99"]
        assert [(r.offset, reason) for r, reason, _ in done.invalid] == [
            (0, "unknown_label"),
            (1, "malformed_json"),
            (2, "bad_ts"),
        ]
        assert store.positions("to-label") == {0: 8, 1: 4}
        assert store.positions("labels") == {0: 2, 1: 3}
        (example,) = list(store.examples())
        assert (example.id, example.label) == ("i-01", "dent")
        assert store.book().votes["i-01"]["a"][1] == 1_700_000_000.0  # no ts: the Kafka timestamp

    def test_reading_the_topics_again_after_a_restart_stores_nothing_twice(self, tmp_path: Path) -> None:
        """The same records ingested again (a restarted reader starts over) are skipped by their offsets;
        new ones after them are taken."""
        path = tmp_path / "d.sqlite"
        to_label = [record("to-label", 0, k, decision(f"i-{k:02d}")) for k in range(3)]
        labels = [
            record("labels", 0, k, {"id": f"i-{k:02d}", "label": "ok", "annotator": "a"}) for k in range(3)
        ]
        DatasetStore(path).ingest(to_label, labels, CLASSES)
        again = DatasetStore(path)
        more = [record("labels", 0, 3, {"id": "i-00", "label": "dent", "annotator": "b", "ts": 5})]
        done = again.ingest(to_label, [*labels, more[0]], CLASSES)
        assert (done.decisions, done.labels, done.unknown, done.invalid) == (0, 1, [], [])
        assert again.counts() == {"decisions": 3, "label_messages": 4, "pseudo_labels": 0, "seeds": 0}
        assert again.positions("labels") == {0: 4}

    def test_a_failing_before_commit_stores_nothing(self, tmp_path: Path) -> None:
        """If the dead letters cannot be delivered, the round rolls back: no decision, no label message and
        no position is stored, so the same records are judged again on the next read."""
        store = DatasetStore(tmp_path / "d.sqlite")
        to_label = [record("to-label", 0, 0, decision("i-01"))]
        labels = [record("labels", 0, 0, {"id": "x-99", "label": "ok"})]

        def undeliverable(done: Ingested) -> None:
            assert [orjson.loads(r.value)["id"] for r in done.unknown] == ["x-99"]
            raise RuntimeError("dead-letter topic unreachable")

        with pytest.raises(RuntimeError, match="unreachable"):
            store.ingest(to_label, labels, CLASSES, before_commit=undeliverable)
        assert store.counts() == {"decisions": 0, "label_messages": 0, "pseudo_labels": 0, "seeds": 0}
        assert store.positions("to-label") == {} and store.positions("labels") == {}
        done = store.ingest(to_label, labels, CLASSES)
        assert (done.decisions, len(done.unknown)) == (1, 1)


class TestExportCommand:
    def test_selector_dataset_export_writes_the_examples(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`selector dataset export` writes every example resolved under dataset.quorum (or --quorum)."""
        db = tmp_path / "d.sqlite"
        store = DatasetStore(db)
        store.add_decisions([decision("i-01"), decision("i-02")])
        store.add_labels([LabelEvent("i-01", "dent", "a", 1.0), LabelEvent("i-02", "ok", "a", 1.0)])
        store.add_labels([LabelEvent("i-02", "ok", "b", 1.0)])
        store.close()
        config = tmp_path / "config.yaml"
        config.write_text(f"classes: {CLASSES}\ndataset: {{path: '{db}', quorum: 1}}\n")
        out = tmp_path / "examples.jsonl"
        assert main(["dataset", "export", "-c", str(config), "--output", str(out)]) == 0
        assert [orjson.loads(line)["id"] for line in out.read_bytes().splitlines()] == ["i-01", "i-02"]
        assert "2 labeled examples written" in capsys.readouterr().out
        assert main(["dataset", "export", "-c", str(config), "--output", str(out), "--quorum", "2"]) == 0
        assert [orjson.loads(line)["id"] for line in out.read_bytes().splitlines()] == ["i-02"]

    def test_a_missing_store_is_an_error_that_says_what_to_run(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Exporting before any ingestion fails with exit 1 and names the command that creates the store."""
        config = tmp_path / "config.yaml"
        config.write_text(f"dataset: {{path: '{tmp_path / 'none.sqlite'}'}}\n")
        assert main(["dataset", "export", "-c", str(config), "--output", str(tmp_path / "x.jsonl")]) == 1
        assert "run 'selector labels' first" in caplog.text


class TestPseudoLabels:
    def test_accepted_records_with_an_embedding_become_pseudo_labels_for_training_only(
        self, tmp_path: Path
    ) -> None:
        """Of 4 accepted records, the 2 carrying an embedding are stored (once, however often read); the one
        a human also labeled yields the human example only; pseudo examples carry the configured weight,
        source 'pseudo', and appear only when asked for (never in estimates)."""
        store = DatasetStore(tmp_path / "d.sqlite")

        def accepted(rid: str, embedding: list[float] | None) -> dict[str, object]:
            value: dict[str, object] = {"id": rid, "label": "ok", "confidence": 0.99, "model": "v1"}
            value.update(payload=None, meta=None, decided_at="2026-11-24T00:00:01Z")
            if embedding is not None:
                value["embedding"] = embedding
            return value

        records = [
            record("accepted", 0, 0, accepted("a-1", [1.0, 2.0])),
            record("accepted", 0, 1, accepted("a-2", None)),
            record("accepted", 1, 0, accepted("i-01", [3.0, 4.0])),
            record("accepted", 1, 1, b"not json"),
        ]
        done = store.ingest([record("to-label", 0, 0, decision("i-01"))], [], CLASSES, accepted=records)
        assert done.pseudo_labels == 2 and store.positions("accepted") == {0: 2, 1: 2}
        assert store.ingest([], [], CLASSES, accepted=records).pseudo_labels == 0  # already read
        store.add_labels([LabelEvent("i-01", "dent", "ann", 1.0)])
        assert [(e.id, e.source) for e in store.examples()] == [("i-01", "human")]
        mixed = list(store.examples(pseudo_weight=0.1))
        assert [(e.id, e.label, e.source, e.weight, e.embedding) for e in mixed] == [
            ("i-01", "dent", "human", 2.0, None),
            ("a-1", "ok", "pseudo", 0.1, [1.0, 2.0]),
        ]
        assert store.counts()["pseudo_labels"] == 2


class TestParkedLabels:
    """A label whose decision was not read yet waits in the store: joined when the decision comes,
    dead-lettered as unknown only after ``dataset.unknown_label_ttl_s`` (time injected as ``now``)."""

    def test_a_label_read_before_its_decision_is_joined_when_the_decision_arrives(
        self, tmp_path: Path
    ) -> None:
        """Labels first, decisions a round later: nothing is dead-lettered, the votes are stored once, with
        their latency from the decision, and the parked count goes back to zero."""
        store = DatasetStore(tmp_path / "d.sqlite")
        labels = [
            record("labels", 0, 0, {"id": "i-01", "label": "dent", "annotator": "a", "ts": 100_000}),
            record("labels", 0, 1, {"id": "i-02", "label": "ok", "annotator": "a", "ts": 101_000}),
        ]
        first = store.ingest([], labels, CLASSES, now=1000.0, unknown_label_ttl_s=60.0)
        assert (first.labels, first.unknown, first.parked) == (0, [], 2)
        assert store.positions("labels") == {0: 2} and store.book().votes == {}
        late = {**decision("i-01"), "decided_at": "1970-01-01T00:01:00Z"}
        second = store.ingest([record("to-label", 0, 0, late)], labels, CLASSES, now=1030.0,
                              unknown_label_ttl_s=60.0)  # fmt: skip
        assert (second.decisions, second.labels, second.unknown, second.parked) == (1, 1, [], 1)
        assert second.latencies == [40.0]
        assert store.book().votes == {"i-01": {"a": ("dent", 100.0)}}

    def test_a_label_still_unknown_after_the_wait_comes_back_with_its_original_bytes(
        self, tmp_path: Path
    ) -> None:
        """Before the wait is over the label stays parked; at ``parked_at + ttl`` it leaves the store as the
        record it was read as (topic, partition, offset, key and value unchanged), once."""
        store = DatasetStore(tmp_path / "d.sqlite")
        raw = orjson.dumps({"id": "x-99", "label": "ok", "annotator": "a"})
        label = record("labels", 3, 41, raw)._replace(key=b"x-99")
        assert store.ingest([], [label], CLASSES, now=1000.0, unknown_label_ttl_s=60.0).parked == 1
        assert store.ingest([], [], CLASSES, now=1059.9, unknown_label_ttl_s=60.0).unknown == []
        done = store.ingest([], [], CLASSES, now=1060.0, unknown_label_ttl_s=60.0)
        (dead,) = done.unknown
        where = (dead.topic, dead.partition, dead.offset)
        assert where == ("labels", 3, 41) and (dead.key, dead.value) == (b"x-99", raw)
        assert dead.timestamp == label.timestamp and done.parked == 0
        assert store.ingest([], [], CLASSES, now=5000.0, unknown_label_ttl_s=60.0).unknown == []

    def test_parked_labels_survive_a_restart_and_join_afterwards(self, tmp_path: Path) -> None:
        """A loop stopped between a label and its decision: the reopened store still holds the parked label
        (its wait counted from when it was parked) and joins it when the decision is read."""
        path = tmp_path / "d.sqlite"
        before = DatasetStore(path)
        label = record("labels", 0, 0, {"id": "i-01", "label": "dent", "annotator": "a"})
        before.ingest([], [label], CLASSES, now=1000.0, unknown_label_ttl_s=600.0)
        before.close()
        after = DatasetStore(path)
        assert after.parked_count() == 1
        done = after.ingest([record("to-label", 0, 0, decision("i-01"))], [label], CLASSES, now=1500.0,
                            unknown_label_ttl_s=600.0)  # fmt: skip
        assert (done.labels, done.unknown, done.parked) == (1, [], 0)
        assert after.counts()["label_messages"] == 1

    def test_a_wait_of_zero_dead_letters_in_the_round_that_read_the_label(self, tmp_path: Path) -> None:
        """``unknown_label_ttl_s: 0``: a label without a stored or same-round decision is unknown at once; one
        whose decision comes in the same call is joined."""
        store = DatasetStore(tmp_path / "d.sqlite")
        labels = [
            record("labels", 0, 0, {"id": "i-01", "label": "dent", "annotator": "a"}),
            record("labels", 0, 1, {"id": "x-99", "label": "ok"}),
        ]
        done = store.ingest([record("to-label", 0, 0, decision("i-01"))], labels, CLASSES, now=7.0)
        assert done.labels == 1 and [r.offset for r in done.unknown] == [1] and done.parked == 0

    def test_a_failed_dead_letter_delivery_keeps_the_label_parked(self, tmp_path: Path) -> None:
        """Expiry happens in the round's transaction: if its dead letter cannot be delivered, the label stays
        parked and expires again in the next round."""
        store = DatasetStore(tmp_path / "d.sqlite")
        store.ingest([], [record("labels", 0, 0, {"id": "x-99", "label": "ok"})], CLASSES, now=0.0,
                     unknown_label_ttl_s=10.0)  # fmt: skip

        def undeliverable(done: Ingested) -> None:
            assert len(done.unknown) == 1
            raise RuntimeError("dead-letter topic unreachable")

        with pytest.raises(RuntimeError, match="unreachable"):
            store.ingest([], [], CLASSES, undeliverable, now=20.0, unknown_label_ttl_s=10.0)
        assert store.parked_count() == 1
        assert len(store.ingest([], [], CLASSES, now=21.0, unknown_label_ttl_s=10.0).unknown) == 1


class TestNotADecision:
    @pytest.mark.parametrize(
        "value",
        [
            b"{not json",
            b"[1, 2]",
            {"route": "query"},
            {**decision("i-09"), "probs": "0.7"},
            {**decision("i-09"), "decided_at": "yesterday"},
            {**decision("i-09"), "query_probability": True},
        ],
    )
    def test_a_to_label_record_that_is_not_a_decision_is_skipped_and_the_round_goes_on(
        self, tmp_path: Path, value: object, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A to-label record that is not one of ours (not JSON, no id, a field of a wrong type, a decision
        time no label latency can be measured from) is skipped with a log line; the decisions around it are
        stored, their labels joined, and the positions move past it."""
        store = DatasetStore(tmp_path / "d.sqlite")
        to_label = [
            record("to-label", 0, 0, decision("i-01")),
            record("to-label", 0, 1, value),
            record("to-label", 0, 2, decision("i-02")),
        ]
        labels = [record("labels", 0, 0, {"id": "i-02", "label": "dent", "annotator": "a"})]
        done = store.ingest(to_label, labels, CLASSES)
        assert (done.decisions, done.labels, done.unknown, done.invalid) == (2, 1, [], [])
        assert store.positions("to-label") == {0: 3}
        assert "skipped to-label[0]@1: not a decision" in caplog.text


def test_decisions_of_returns_what_a_revote_needs_and_leaves_unknown_ids_out() -> None:
    store = DatasetStore(":memory:")
    store.add_decisions([{"id": "a", "route": "query", "predicted": "ok", "probs": [0.6, 0.4],
        "embedding": [1.0, 2.0], "query_probability": 0.5, "model": "v1", "segment": "line-2",
        "payload": {"uri": "s3://x/a.png"}, "meta": {"cam": 3},
        "decided_at": "2026-11-24T00:00:00Z"}])  # fmt: skip
    got = store.decisions_of(["a", "nope", "a"])
    assert list(got) == ["a"]
    assert got["a"]["payload"] == {"uri": "s3://x/a.png"} and got["a"]["meta"] == {"cam": 3}
    assert got["a"]["segment"] == "line-2" and got["a"]["query_probability"] == 0.5
