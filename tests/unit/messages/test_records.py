"""Specification of the output records: every value matches its published contract and is keyed by the id."""

from __future__ import annotations

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from selector import __version__
from selector.config import Config, parse_config
from selector.messages.contracts import Accepted, ToLabel
from selector.messages.outputs import Outputs, encode_outputs
from selector.messages.prediction import Batch, decode_batch
from selector.routing import ACCEPT, AUDIT, QUERY, Decisions, Router

CLASSES = ["ok", "scratch", "dent", "crack"]
DECIDED_AT = "2026-01-02T03:04:05.678Z"


def cfg(audit_rate: float = 0.3, **budget: object) -> Config:
    b = {"rate": 0.6, "audit_rate": audit_rate, "query_threshold": 0.4, "caps": {"hour": 50}, **budget}
    return parse_config(
        {"classes": CLASSES, "accept": {"default_threshold": 0.8, "thresholds": {"crack": 0.6}}, "budget": b}
    )


def decided(values: list[bytes], config: Config) -> tuple[Batch, Decisions, Outputs]:
    batch = decode_batch(values, [1_700_000_000_000] * len(values), n_classes=len(CLASSES))
    decisions = Router(config).decide(0, batch, batch.ts_s)
    info = {"version": __version__, "config_hash": config.config_hash()}
    return batch, decisions, encode_outputs(batch, decisions, config.classes, DECIDED_AT, info)


probs_rows = st.lists(st.floats(0, 1), min_size=4, max_size=4).filter(lambda r: sum(r) > 0)
predictions = st.builds(
    lambda i, row, model, segment, payload: orjson.dumps(
        {
            "id": f"item-{i}",
            "probs": [x / sum(row) for x in row],
            "model": model,
            "segment": segment,
            "payload": payload,
            "meta": {"n": i},
        }
    ),
    st.integers(0, 10**9),
    probs_rows,
    st.none() | st.text(max_size=6),
    st.none() | st.sampled_from(["line-1", "cam-2"]),
    st.none() | st.just({"uri": "s3://bucket/img.png"}),
)


class TestEncodeOutputs:
    @settings(max_examples=60, deadline=None)
    @given(st.lists(predictions, max_size=40))
    def test_every_to_label_record_validates_and_is_keyed_by_id(self, values: list[bytes]) -> None:
        """Each to-label value is a valid ToLabel whose id is the record key."""
        _, _, out = decided(values, cfg())
        for key, value in out.to_label:
            rec = ToLabel.model_validate_json(value)
            assert key == rec.id.encode()

    @settings(max_examples=60, deadline=None)
    @given(st.lists(predictions, max_size=40))
    def test_every_accepted_record_validates_and_is_keyed_by_id(self, values: list[bytes]) -> None:
        """Each accepted value is a valid Accepted whose id is the record key."""
        _, _, out = decided(values, cfg())
        for key, value in out.accepted:
            rec = Accepted.model_validate_json(value)
            assert key == rec.id.encode()

    @settings(max_examples=60, deadline=None)
    @given(st.lists(predictions, max_size=40))
    def test_one_record_per_labeled_or_accepted_item_none_for_skips(self, values: list[bytes]) -> None:
        """Queries and audits give one to-label record each, accepts one accepted record, skips nothing."""
        batch, d, out = decided(values, cfg())
        route = d.route
        assert [k.decode() for k, _ in out.to_label] == [
            batch.ids[i] for i in np.flatnonzero((route == QUERY) | (route == AUDIT))
        ]
        assert [k.decode() for k, _ in out.accepted] == [
            batch.ids[i] for i in np.flatnonzero(route == ACCEPT)
        ]

    def test_to_label_fields_carry_the_decision(self) -> None:
        """A query record carries route, scores, threshold, selector, inclusion, prediction, the pass-through
        fields and the embedding.

        The threshold controller selects every item at or above 'budget.query_threshold' (0.4 here) and the
        token gate has room, so the item was certain to be sent: probability 1.
        """
        raw = orjson.dumps(
            {
                "id": "x1",
                "probs": [0.3, 0.3, 0.2, 0.2],
                "model": "v7",
                "segment": "line-1",
                "payload": {"uri": "s3://b/x1.png"},
                "meta": [1],
                "embedding": [0.5, -1.25, 3.0],
            }
        )
        config = cfg(audit_rate=0.0, controller="threshold")
        batch, d, out = decided([raw], config)
        ((key, value),) = out.to_label
        rec = ToLabel.model_validate_json(value)
        assert key == b"x1"
        assert rec.route == "query"
        assert rec.score == d.score[0] == rec.scores["entropy"] == rec.priority
        assert set(rec.scores) == {"least_confidence", "margin", "ratio", "entropy"}
        assert rec.threshold == 0.4
        assert rec.selected_by == "uncertainty"
        assert rec.query_probability == 1.0
        assert rec.predicted == "ok"
        assert rec.probs == batch.probs[0].tolist()
        assert rec.embedding == [0.5, -1.25, 3.0]  # passed through for retraining
        assert (rec.segment, rec.model, rec.payload, rec.meta) == (
            "line-1",
            "v7",
            {"uri": "s3://b/x1.png"},
            [1],
        )
        assert rec.decided_at == DECIDED_AT
        assert rec.selector.version == __version__
        assert rec.selector.config_hash == config.config_hash()
        assert out.accepted == []

    def test_to_label_carries_the_prediction_time(self) -> None:
        """'ts' is the prediction's own time when it has one, else the Kafka timestamp, as RFC 3339."""
        own = orjson.dumps({"id": "t1", "probs": [0.3, 0.3, 0.2, 0.2], "ts": "2024-05-01T10:00:00.250+02:00"})
        kafka = orjson.dumps({"id": "t2", "probs": [0.3, 0.3, 0.2, 0.2]})
        _, _, out = decided([own, kafka], cfg(audit_rate=0.0, controller="threshold"))
        times = {k: ToLabel.model_validate_json(v).ts for k, v in out.to_label}
        assert times == {b"t1": "2024-05-01T08:00:00.250Z", b"t2": "2023-11-14T22:13:20.000Z"}

    def test_cold_quantile_threshold_is_null_and_the_probability_is_the_pool_rate(self) -> None:
        """On a fresh partition the quantile pool has no threshold yet (null) and selects with its share.

        Rate 1 without audits: the common pool's cold-start rule selects every uncertain item with
        probability 1, so the record says threshold null, probability 1, chosen by 'cold_start'.
        """
        raw = orjson.dumps({"id": "x2", "probs": [0.3, 0.3, 0.2, 0.2]})
        _, d, out = decided([raw], cfg(audit_rate=0.0, rate=1.0))
        ((_, value),) = out.to_label
        rec = ToLabel.model_validate_json(value)
        assert np.isnan(d.threshold).all()
        assert (rec.route, rec.threshold, rec.query_probability, rec.selected_by) == (
            "query",
            None,
            1.0,
            "cold_start",
        )

    def test_accepted_fields_carry_the_pseudo_label(self) -> None:
        """An accepted record names the predicted class by name with its confidence."""
        raw = orjson.dumps({"id": "a1", "probs": [0.05, 0.05, 0.2, 0.7], "model": "v7", "payload": "p"})
        # under the floor: a confident item is a query candidate like any other, so keep it out of the pools
        _, _, out = decided([raw], cfg(audit_rate=0.0, query_threshold=0.9))
        ((key, value),) = out.accepted
        rec = Accepted.model_validate_json(value)
        assert key == b"a1"
        assert (rec.label, rec.confidence, rec.model, rec.payload, rec.meta) == (
            "crack",
            0.7,
            "v7",
            "p",
            None,
        )
        assert rec.decided_at == DECIDED_AT
        assert out.to_label == []

    def test_skip_produces_no_record(self) -> None:
        """A skipped item is counted but never published."""
        raw = orjson.dumps(
            {"id": "s1", "probs": [0.7, 0.3, 0.0, 0.0]}
        )  # below accept 0.95 and entropy 0.44 < 0.9
        config = parse_config(
            {"classes": CLASSES, "budget": {"rate": 0.5, "audit_rate": 0.0, "query_threshold": 0.9}}
        )
        _, d, out = decided([raw], config)
        assert d.counts()["skip"] == 1
        assert out == Outputs([], [])


class TestPseudoLabelSample:
    def test_the_share_of_accepted_records_drawn_by_id_carries_the_embedding(self) -> None:
        """With pseudo_label_share 0.25, about a quarter of 4,000 accepted records carry their embedding
        (within 5 sigma); the same ids are drawn on every run and for any batch cut; with no share, none."""
        config = parse_config({"classes": CLASSES, "input": {"embedding_dim": 2}, "budget": {"rate": 0.01}})
        values = [
            orjson.dumps({"id": f"i-{k}", "probs": [0.97, 0.01, 0.01, 0.01], "embedding": [k, 1.0]})
            for k in range(4_000)
        ]
        batch = decode_batch(values, [1_700_000_000_000] * len(values), n_classes=4, embedding_dim=2)
        decisions = Router(config).decide(0, batch, batch.ts_s)
        info = {"version": __version__, "config_hash": config.config_hash()}

        def carried(b: Batch, d: Decisions, share: float) -> set[str]:
            out = encode_outputs(b, d, CLASSES, DECIDED_AT, info, (share, 7))
            records = [orjson.loads(v) for _, v in out.accepted]
            for r in records:
                Accepted.model_validate(r)
                assert "embedding" not in r or r["embedding"] == [float(r["id"][2:]), 1.0]
            return {r["id"] for r in records if "embedding" in r}

        accepted = int((decisions.route == ACCEPT).sum())
        drawn = carried(batch, decisions, 0.25)
        assert abs(len(drawn) - 0.25 * accepted) < 5 * (accepted * 0.25 * 0.75) ** 0.5
        assert carried(batch, decisions, 0.25) == drawn
        assert carried(batch, decisions, 0.0) == set()
        half = decode_batch(values[:1_000], [1_700_000_000_000] * 1_000, n_classes=4, embedding_dim=2)
        first = carried(half, Router(config).decide(0, half, half.ts_s), 0.25)
        assert first == {i for i in drawn if int(i[2:]) < 1_000}
