"""Asking for another vote: which weak items are sent again, with what, how often, and that nothing is
remembered before the broker acknowledged it (a producer double stands in for Kafka; the real broker is in
tests/integration/test_revote.py)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from connectors.labels.revote import META_KEY, SPENT_KEY, label_consensus, request_votes, revote_consensus
from connectors.model.dataset import DatasetStore
from selector.config import Config, parse_config
from selector.errors import DeliveryError
from selector.quality.consensus import Consensus, consensus
from selector.quality.labels import LabelEvent
from tests.connectors.kafka.test_delivery import FakeProducer

CLASSES = ["ok", "scratch", "dent", "crack"]
NOW = 1_765_000_000.0


def decision(rid: str) -> dict[str, Any]:
    return {"id": rid, "route": "query", "predicted": "ok", "probs": [0.4, 0.3, 0.2, 0.1], "embedding": None,
            "query_probability": 0.5, "model": "v1", "decided_at": "2026-12-01T00:00:00Z",
            "payload": {"uri": f"s3://line/{rid}.png"}, "meta": {"camera": 2}}  # fmt: skip


def config(**dataset: Any) -> Config:
    """The tests' stores are small: every labeled item may be asked again unless a test says otherwise."""
    dataset = {"revote_share": 1.0, **dataset}
    return parse_config({"classes": CLASSES, "dataset": dataset, "topics": {"to_label": "to-label"}})


def store_with(votes: dict[str, dict[str, str]]) -> DatasetStore:
    store = DatasetStore(":memory:")
    store.add_decisions([decision(rid) for rid in votes])
    store.add_labels(LabelEvent(rid, label, a, 1.0) for rid, vs in votes.items() for a, label in vs.items())
    return store


def resolve(store: DatasetStore, cfg: Config) -> Consensus:
    d = cfg.dataset
    return consensus(
        store.book(), cfg.classes, method=d.consensus, weak_below=d.weak_below, max_votes=d.max_votes
    )


SPLIT = {"ann": "ok", "bob": "dent"}
AGREED = {"ann": "ok", "bob": "ok"}


class TestRequestVotes:
    def test_weak_items_are_sent_again_with_their_decision_and_a_revote_field(self) -> None:
        """A split item goes to the to-label topic keyed by id: the stored decision (payload and meta
        included) plus revote {votes, confidence, requested_at}; an agreed item is not sent."""
        cfg = config(consensus="majority")
        store = store_with({"split": SPLIT, "agreed": AGREED})
        producer = FakeProducer(refuse_over=10**6)
        assert request_votes(store, producer, cfg, resolve(store, cfg), NOW) == 1  # type: ignore[arg-type]
        ((topic, key, value, _),) = producer.delivered
        record = orjson.loads(value or b"")
        assert (topic, key) == ("to-label", b"split")
        assert record == decision("split") | {
            "accept_eligible": None,
            "segment": None,
            "revote": {"votes": 2, "confidence": 0.5, "requested_at": "2025-12-06T05:46:40.000Z"},
        }

    def test_an_item_is_asked_once_per_number_of_votes(self) -> None:
        """A second call sends nothing; a third vote that still ties (max_votes 4) asks again, once."""
        cfg = config(consensus="majority", max_votes=4)
        store = store_with({"split": SPLIT})
        producer = FakeProducer(refuse_over=10**6)
        send = lambda: request_votes(store, producer, cfg, resolve(store, cfg), NOW)  # type: ignore[arg-type]  # noqa: E731
        assert (send(), send()) == (1, 0)
        store.add_labels([LabelEvent("split", "ok", "cy", 2.0), LabelEvent("split", "dent", "dee", 2.0)])
        assert store.get_meta(META_KEY) == {"split": 2}
        assert (send(), send()) == (0, 0)  # four votes: max_votes reached, never asked again

    def test_a_new_vote_that_leaves_the_item_weak_asks_again(self) -> None:
        cfg = config(consensus="majority", max_votes=4)
        agreed = {f"a{k}": {"ann": "ok", "bob": "ok"} for k in range(3)}
        store = store_with({"split": SPLIT} | agreed)
        producer = FakeProducer(refuse_over=10**6)
        assert request_votes(store, producer, cfg, resolve(store, cfg), NOW) == 1  # type: ignore[arg-type]
        store.add_labels([LabelEvent("split", "crack", "cy", 2.0)])  # a three-way split
        assert request_votes(store, producer, cfg, resolve(store, cfg), NOW) == 1  # type: ignore[arg-type]
        assert [orjson.loads(v or b"")["revote"]["votes"] for _, _, v, _ in producer.delivered] == [2, 3]

    def test_revote_share_bounds_the_requests_in_all(self) -> None:
        """Another vote costs a label: with 20 items voted on and a share of 0.1, two requests in all, across
        calls and however many items are weak."""
        votes = {f"s{k:02d}": SPLIT for k in range(20)}
        store = store_with(votes)
        cfg = config(consensus="majority", revote_share=0.1, max_revotes_per_round=1)
        producer = FakeProducer(refuse_over=10**6)
        sent = [request_votes(store, producer, cfg, resolve(store, cfg), NOW) for _ in range(4)]  # type: ignore[arg-type]
        assert sent == [1, 1, 0, 0] and store.get_meta(SPENT_KEY) == 2

    def test_at_most_max_revotes_per_round_least_confident_first(self) -> None:
        """Five weak items, a cap of 2: the two least confident go (ties by id), the rest in later calls;
        a cap of 0 sends nothing at all."""
        votes = {f"s{k}": SPLIT for k in range(4)} | {"lone": {"cy": "dent"}}
        store = store_with(votes)
        cfg = config(consensus="majority", max_revotes_per_round=2, weak_below=0.9)
        producer = FakeProducer(refuse_over=10**6)
        sent = [request_votes(store, producer, cfg, resolve(store, cfg), NOW) for _ in range(4)]  # type: ignore[arg-type]
        assert sent == [2, 2, 1, 0]
        assert [k for _, k, _, _ in producer.delivered] == [b"s0", b"s1", b"s2", b"s3", b"lone"]
        off = config(consensus="majority", max_revotes_per_round=0)
        assert request_votes(store_with(votes), producer, off, resolve(store, off), NOW) == 0  # type: ignore[arg-type]

    def test_nothing_is_remembered_when_delivery_fails(self) -> None:
        """The broker never acknowledges: DeliveryError, the meta stays empty, and the next call (broker
        back) sends the item."""
        cfg = config(consensus="majority")
        store = store_with({"split": SPLIT})
        down = FakeProducer(refuse_over=10**6, transient=10**6)
        with pytest.raises(DeliveryError, match="revote requests undeliverable"):
            request_votes(store, down, cfg, resolve(store, cfg), NOW, deadline_s=0.2)  # type: ignore[arg-type]
        assert store.get_meta(META_KEY) is None
        up = FakeProducer(refuse_over=10**6)
        assert request_votes(store, up, cfg, resolve(store, cfg), NOW) == 1  # type: ignore[arg-type]


class TestRevoteConsensus:
    def test_a_lone_vote_the_stored_model_contradicts_is_asked_again(self) -> None:
        """One vote per item: the vote the model agrees with stands unasked; the one it is sure against is
        weak (with the votes alone neither would be), and its label is still the vote."""
        cfg = config()
        sure_ok = [0.97, 0.01, 0.01, 0.01]
        store = DatasetStore(":memory:")
        store.add_decisions(
            [decision("agrees") | {"probs": sure_ok}, decision("against") | {"probs": sure_ok}]
        )
        store.add_labels([LabelEvent("agrees", "ok", "ann", 1.0), LabelEvent("against", "dent", "ann", 1.0)])
        chosen = revote_consensus(store, cfg, store.book())
        assert chosen.weak_items() == ["against"] and chosen.items["against"].label == "dent"
        assert resolve(store, cfg).weak_items() == []
        producer = FakeProducer(refuse_over=10**6)
        assert request_votes(store, producer, cfg, chosen, NOW) == 1  # type: ignore[arg-type]
        assert [k for _, k, _, _ in producer.delivered] == [b"against"]


class TestLabelConsensus:
    """The labels the examples carry: the configured consensus over the votes alone."""

    def test_dawid_skene_outvotes_an_unreliable_majority_and_the_examples_carry_its_labels(self) -> None:
        # a1 and a2 agree with the truth on 40 calibration items where a3 and a4 say something else; on item
        # "x" the two reliable annotators are outvoted 2:2 by majority (a tie: unresolved), not by consensus
        votes = {f"c{i}": {"a1": "ok", "a2": "ok", "a3": "dent", "a4": "crack"} for i in range(40)}
        votes["x"] = {"a1": "scratch", "a2": "scratch", "a3": "dent", "a4": "dent"}
        store = store_with(votes)
        cfg = config(consensus="dawid_skene")
        c = label_consensus(cfg, store.book())
        assert c is not None
        labels = {e.id: e.label for e in store.examples(consensus=c.items)}
        assert labels["x"] == "scratch"
        assert "x" not in {e.id for e in store.examples()}  # quorum majority: a tie resolves nothing

    def test_majority_gives_the_stores_own_resolution(self) -> None:
        store = store_with({"a": {"p": "ok", "q": "dent", "r": "dent"}, "b": {"p": "crack"}})
        c = label_consensus(config(consensus="majority"), store.book())
        assert c is not None
        assert [(e.id, e.label, e.votes) for e in store.examples(consensus=c.items)] == [
            (e.id, e.label, e.votes) for e in store.examples()
        ]

    def test_a_vote_for_a_class_not_configured_falls_back_to_majority(self) -> None:
        store = store_with({"a": {"p": "ok"}})
        digits = parse_config({"classes": ["0", "1"]})
        assert label_consensus(digits, store.book()) is None
