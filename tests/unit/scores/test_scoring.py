"""Specification of scoring beyond softmax: the configured measure or combination, online normalization,
cost, density weighting, cold start, detections, calibration and the committee guard, as the Router applies
them to decoded prediction records."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from selector.budget.controller import chunk_items
from selector.config import Config, parse_config
from selector.messages.prediction import Batch, decode_batch
from selector.routing import ACCEPT, QUERY, Decisions, Router, policy_of
from selector.scores import entropy, margin
from selector.scores.embedding import nearest_distance

CLASSES = ["ok", "scratch", "dent"]
RNG_SEED = 7
P = [0.5, 0.3, 0.2]
CHUNK = 256
"""Items per controller chunk at rate 1 and max_burst 1000 (the memory takes a chunk when it closes)."""


def cfg(**sections: Any) -> Config:
    """A config on CLASSES; rate 1 without caps or audits unless a section overrides it."""
    data: dict[str, Any] = {
        "classes": CLASSES,
        "budget": {"rate": 1.0, "max_burst": 1000.0, "caps": {}, "audit_rate": 0.0},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return parse_config(data)


def decode(config: Config, records: list[dict[str, Any]]) -> Batch:
    b = decode_batch([orjson.dumps(r) for r in records], [0] * len(records), **config.decode_options())
    assert not b.rejects, b.rejects
    return b


def decide(config: Config, records: list[dict[str, Any]], router: Router | None = None) -> Decisions:
    router = router or Router(config)
    b = decode(config, records)
    return router.decide(0, b, np.zeros(len(b)))


def warm_up(router: Router, config: Config, records: list[dict[str, Any]]) -> Decisions:
    """Decide and commit ``records`` (a whole number of chunks, so the memory holds them afterwards)."""
    d = decide(config, records, router)
    router.commit(0, d)
    return d


def dirichlet_rows(rng: np.random.Generator, n: int, c: int = 3, alpha: float = 0.7) -> list[list[float]]:
    p = rng.dirichlet([alpha] * c, size=n)
    return [[float(v) for v in row / row.sum()] for row in p]


class TestDetections:
    BOXES = ([0.5, 0.3, 0.2], [0.98, 0.01, 0.01], [0.4, 0.4, 0.2])

    @pytest.mark.parametrize("how", ["max", "mean", "sum"])
    def test_item_score_aggregates_its_boxes(self, how: str) -> None:
        """With boxes, the probability measures are the max / mean / capped sum of the per-box values."""
        c = cfg(scoring={"measure": "margin", "detections": how})
        d = decide(c, [{"id": "a", "probs": [0.9, 0.05, 0.05], "detections": self.BOXES}])
        per_box = margin(np.asarray(self.BOXES))
        expected = {"max": per_box.max(), "mean": per_box.mean(), "sum": min(1.0, per_box.sum())}[how]
        assert d.score[0] == pytest.approx(expected)
        assert d.scores["entropy"][0] == pytest.approx(
            {"max": np.max, "mean": np.mean, "sum": lambda v: min(1.0, v.sum())}[how](
                entropy(np.asarray(self.BOXES))
            )
        )

    def test_item_without_boxes_keeps_its_item_score(self) -> None:
        """An empty box list, or none, leaves the item-level score; boxes of other items do not leak."""
        c = cfg(scoring={"measure": "margin"})
        probs = [0.6, 0.3, 0.1]
        d = decide(
            c,
            [
                {"id": "a", "probs": probs, "detections": []},
                {"id": "b", "probs": probs},
                {"id": "c", "probs": probs, "detections": self.BOXES},
            ],
        )
        item = margin(np.asarray([probs]))[0]
        assert d.score[:2].tolist() == pytest.approx([item, item])
        assert d.score[2] == pytest.approx(margin(np.asarray(self.BOXES)).max())

    def test_accepted_only_if_every_box_is_confident(self) -> None:
        """A confident item with one unsure box is not auto-accepted; with all boxes sure it is."""
        c = cfg(accept={"default_threshold": 0.9}, budget={"rate": 0.01, "caps": {"hour": 0}})
        sure = [[0.97, 0.02, 0.01], [0.01, 0.98, 0.01]]
        d = decide(
            c,
            [
                {"id": "a", "probs": [0.97, 0.02, 0.01], "detections": sure},
                {"id": "b", "probs": [0.97, 0.02, 0.01], "detections": [*sure, [0.6, 0.3, 0.1]]},
                {"id": "c", "probs": [0.97, 0.02, 0.01], "detections": []},
            ],
        )
        assert d.route.tolist()[0] == ACCEPT
        assert d.route.tolist()[1] != ACCEPT
        assert d.route.tolist()[2] == ACCEPT

    def test_box_thresholds_are_per_predicted_class(self) -> None:
        """A box predicted as a stricter class needs that class's threshold."""
        c = cfg(accept={"default_threshold": 0.9, "thresholds": {"dent": 0.99}}, budget={"caps": {"hour": 0}})
        d = decide(c, [{"id": "a", "probs": [0.97, 0.02, 0.01], "detections": [[0.01, 0.04, 0.95]]}])
        assert d.route[0] != ACCEPT


class TestCalibrationAndCommittee:
    def test_temperature_softens_confidence_before_accept(self) -> None:
        """T = 2 turns a 0.96-confident prediction into a less confident one: no longer auto-accepted."""
        row = {"id": "a", "probs": [0.96, 0.03, 0.01]}
        plain = decide(cfg(accept={"default_threshold": 0.95}, budget={"caps": {"hour": 0}}), [row])
        hot = decide(
            cfg(
                accept={"default_threshold": 0.95},
                budget={"caps": {"hour": 0}},
                calibration={"temperature": 2.0},
            ),
            [row],
        )
        assert plain.route[0] == ACCEPT and plain.confidence[0] == pytest.approx(0.96)
        assert hot.route[0] != ACCEPT
        z = np.log([0.96, 0.03, 0.01]) / 2.0
        assert hot.confidence[0] == pytest.approx(np.exp(z).max() / np.exp(z).sum())
        assert hot.scores["entropy"][0] > plain.scores["entropy"][0]

    def test_committee_disagreement_holds_back_auto_accept(self) -> None:
        """With accept.committee_agreement 0.75, a confident item whose committee splits 2:2 is not accepted;
        a unanimous one is, and an item without committee is judged on confidence alone."""
        c = cfg(accept={"default_threshold": 0.9, "committee_agreement": 0.75}, budget={"caps": {"hour": 0}})
        yes, no = [0.95, 0.03, 0.02], [0.1, 0.85, 0.05]
        d = decide(
            c,
            [
                {"id": "split", "probs": [0.95, 0.03, 0.02], "committee": [yes, yes, no, no]},
                {"id": "agree", "probs": [0.95, 0.03, 0.02], "committee": [yes, yes, yes, yes]},
                {"id": "alone", "probs": [0.95, 0.03, 0.02]},
            ],
        )
        assert d.route.tolist() == [d.route[0], ACCEPT, ACCEPT]
        assert d.route[0] != ACCEPT


class TestConfiguredMeasures:
    def test_bald_decides_from_samples(self) -> None:
        """measure bald: agreeing samples score 0, disagreeing one-hot samples score high."""
        c = cfg(scoring={"measure": "bald"})
        agree = [[0.5, 0.3, 0.2]] * 4
        split = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
        d = decide(
            c,
            [
                {"id": "a", "probs": [0.5, 0.3, 0.2], "samples": agree},
                {"id": "b", "probs": [1 / 3, 1 / 3, 1 / 3], "samples": split},
            ],
        )
        assert d.score[0] == pytest.approx(0.0, abs=1e-12)
        assert d.score[1] == pytest.approx(1.0)
        assert set(d.scores) >= {"bald", "entropy", "margin"}

    def test_a_record_lacking_the_measures_field_is_rejected_with_a_reason(self) -> None:
        """Under measure vote_entropy a record without committee is a reject naming the measure."""
        c = cfg(scoring={"measure": "vote_entropy"})
        b = decode_batch([orjson.dumps({"id": "a", "probs": [0.5, 0.3, 0.2]})], [0], **c.decode_options())
        assert [(r.reason, r.message) for r in b.rejects] == [
            ("missing_field", "'committee' is required by measure 'vote_entropy' (scoring)")
        ]

    def test_predicted_loss_is_normalized_by_the_recent_high_quantile(self) -> None:
        """Scores are min(1, x / Q99) of the raw values of the chunks already closed; 0 stays 0; before any
        value is known, x / (1 + x)."""
        c = cfg(scoring={"measure": "predicted_loss"})
        router = Router(c)
        rng = np.random.default_rng(RNG_SEED)
        warm = rng.exponential(size=CHUNK)
        first = warm_up(
            router, c, [{"id": f"w{k}", "probs": P, "predicted_loss": float(x)} for k, x in enumerate(warm)]
        )
        np.testing.assert_allclose(first.score, warm / (1 + warm))
        probe = np.array([0.0, 0.5, 1.0, 2.0, 4.0, 100.0])
        d = decide(
            c, [{"id": f"p{k}", "probs": P, "predicted_loss": float(x)} for k, x in enumerate(probe)], router
        )
        np.testing.assert_allclose(d.score, np.minimum(1.0, probe / np.quantile(warm, 0.99)))
        assert d.score[0] == 0.0 and d.score[-1] == 1.0

    def test_combination_is_the_weighted_mean_of_online_ranks(self) -> None:
        """With weights {margin: 3, predicted_loss: 1} the score is (3 rank_margin + rank_loss) / 4, ranks
        among the values of the closed chunks (0.5 each while none is known)."""
        c = cfg(scoring={"measure": "combination", "weights": {"margin": 3.0, "predicted_loss": 1.0}})
        rng = np.random.default_rng(RNG_SEED)
        router = Router(c)

        def recs(prefix: str, n: int) -> list[dict[str, Any]]:
            rows, loss = dirichlet_rows(rng, n), rng.exponential(size=n)
            return [
                {"id": f"{prefix}{k}", "probs": p, "predicted_loss": float(x)}
                for k, (p, x) in enumerate(zip(rows, loss, strict=True))
            ]

        first = warm_up(router, c, recs("w", CHUNK))
        np.testing.assert_array_equal(first.score, np.full(CHUNK, 0.5))
        d = decide(c, recs("p", 40), router)

        def mid_rank(v: np.ndarray, known: np.ndarray) -> np.ndarray:
            return np.array([(np.sum(known < x) + np.sum(known <= x)) / (2 * len(known)) for x in v])

        expected = (
            3 * mid_rank(d.scores["margin"], first.scores["margin"])
            + mid_rank(d.scores["predicted_loss"], first.scores["predicted_loss"])
        ) / 4
        np.testing.assert_allclose(d.score, expected)

    def test_cost_aware_prefers_the_cheaper_of_equally_informative_items(self) -> None:
        """Same probabilities, cost 1 vs cost 4: the cheap item ranks higher."""
        c = cfg(scoring={"cost_aware": True})
        rng = np.random.default_rng(RNG_SEED)
        router = Router(c)
        warm_up(router, c, [{"id": f"r{k}", "probs": p} for k, p in enumerate(dirichlet_rows(rng, CHUNK))])
        recs = [{"id": "cheap", "probs": [0.5, 0.3, 0.2], "cost": 1.0}]
        recs += [{"id": "dear", "probs": [0.5, 0.3, 0.2], "cost": 4.0}]
        d = decide(c, recs, router)
        assert d.score[0] > d.score[1]
        assert d.scores["entropy"][0] == d.scores["entropy"][1]


def embedded(rng: np.random.Generator, centers: np.ndarray, n: int, spread: float = 0.01) -> np.ndarray:
    """n points around randomly chosen centers."""
    pick = rng.integers(0, len(centers), size=n)
    out: np.ndarray = centers[pick] + spread * rng.standard_normal((n, centers.shape[1]))
    return out


class TestEmbeddingMemory:
    DIM = 8

    def records(self, rng: np.random.Generator, vectors: np.ndarray, start: int = 0) -> list[dict[str, Any]]:
        rows = dirichlet_rows(rng, len(vectors))
        return [
            {"id": f"e{start + k}", "probs": p, "embedding": v.tolist()}
            for k, (p, v) in enumerate(zip(rows, vectors, strict=False))
        ]

    def test_density_weighting_lowers_an_outlier(self) -> None:
        """Two equally uncertain items: the one far from the recent stream scores lower (density_beta 1)."""
        c = cfg(scoring={"density_beta": 1.0, "reservoir_items": 64}, input={"embedding_dim": self.DIM})
        rng = np.random.default_rng(RNG_SEED)
        router = Router(c)
        crowd = np.abs(embedded(rng, np.eye(self.DIM)[:1] + 0.1, 400, spread=0.05))
        d0 = decide(c, self.records(rng, crowd), router)
        router.commit(0, d0)
        outlier = -np.ones(self.DIM)
        typical = crowd[0]
        probs = [0.4, 0.35, 0.25]
        d = decide(
            c,
            [
                {"id": "typical", "probs": probs, "embedding": typical.tolist()},
                {"id": "outlier", "probs": probs, "embedding": outlier.tolist()},
            ],
            router,
        )
        assert d.scores["density"][0] > 0.9 and d.scores["density"][1] == 0.0
        assert d.score[0] == pytest.approx(d.scores["entropy"][0] * d.scores["density"][0])
        assert d.score[1] == 0.0

    def test_cold_start_picks_novel_items_until_enough_were_sent(self) -> None:
        """With cold_start_labels 5 the deciding score is the novelty until a closed chunk brings the items
        sent to 5, and the configured measure afterwards."""
        c = cfg(
            scoring={"cold_start_labels": 5},
            input={"embedding_dim": self.DIM},
            budget={"rate": 0.1, "max_burst": 10.0},
        )
        chunk = chunk_items(policy_of(c))
        rng = np.random.default_rng(RNG_SEED)
        router = Router(c)
        vectors = embedded(rng, rng.standard_normal((6, self.DIM)) * 5, 4 * chunk)
        d = decide(c, self.records(rng, vectors), router)
        sent = np.cumsum(d.route == QUERY)
        cold_chunks = 1 + int(np.argmax(sent[chunk - 1 :: chunk] >= 5))
        assert 1 <= cold_chunks < 4
        cold = cold_chunks * chunk
        np.testing.assert_array_equal(d.score[:cold], d.scores["novelty"][:cold])
        np.testing.assert_array_equal(d.score[cold:], d.scores["entropy"][cold:])
        router.commit(0, d)
        assert router.scoring_state(0).sent == sent[-1]

    def test_novelty_is_the_distance_to_items_already_sent(self) -> None:
        """After a batch, novelty is min(1, d / Q) of the distance to the nearest item sent for labeling."""
        c = cfg(scoring={"measure": "novelty"}, input={"embedding_dim": self.DIM}, budget={"rate": 0.2})
        rng = np.random.default_rng(RNG_SEED)
        router = Router(c)
        first = decide(c, self.records(rng, rng.standard_normal((CHUNK, self.DIM))), router)
        router.commit(0, first)
        points = router.scoring_state(0).coreset.points  # type: ignore[union-attr]
        assert 0 < len(points) <= int(np.count_nonzero(first.route == QUERY))
        probe = rng.standard_normal((3, self.DIM))
        d = decide(c, self.records(rng, probe, CHUNK), router)
        raw = nearest_distance(probe, points)
        assert np.argsort(d.score).tolist() == np.argsort(raw).tolist()
        assert ((d.score >= 0) & (d.score <= 1)).all()


class TestStatefulScoringIsCutInvariantAndRestorable:
    DIM = 4

    def stream(self, n: int) -> list[dict[str, Any]]:
        rng = np.random.default_rng(RNG_SEED)
        rows = dirichlet_rows(rng, n)
        vec = rng.standard_normal((n, self.DIM))
        loss = rng.exponential(size=n)
        return [
            {
                "id": f"s{k}",
                "probs": p,
                "embedding": v.tolist(),
                "predicted_loss": float(x),
                "cost": 1.0 + k % 3,
            }
            for k, (p, v, x) in enumerate(zip(rows, vec, loss, strict=False))
        ]

    def config(self) -> Config:
        return cfg(
            scoring={
                "measure": "combination",
                "weights": {"margin": 1.0, "predicted_loss": 1.0, "novelty": 1.0, "egl": 0.5},
                "density_beta": 0.5,
                "cost_aware": True,
                "normalize_items": 64,
                "reservoir_items": 16,
                "coreset_items": 16,
                "cold_start_labels": 3,
            },
            input={"embedding_dim": self.DIM},
            budget={"rate": 0.1, "max_burst": 10.0},
        )

    def run(self, cuts: list[int], router: Router | None = None) -> tuple[Router, list[Decisions]]:
        c = self.config()
        recs = self.stream(cuts[-1])
        router = router or Router(c)
        out = []
        for a, b in zip([0, *cuts[:-1]], cuts, strict=False):
            batch = decode(c, recs[a:b])
            d = router.decide(0, batch, np.arange(a, b, dtype=np.float64))
            router.commit(0, d)
            out.append(d)
        return router, out

    def test_batch_cuts_change_no_score_and_no_route(self) -> None:
        """The same stream in one batch or cut anywhere gives the same scores and routes."""
        _, whole = self.run([700])
        _, cut = self.run([1, 37, 300, 301, 555, 700])
        np.testing.assert_array_equal(np.concatenate([d.route for d in cut]), whole[0].route)
        np.testing.assert_allclose(np.concatenate([d.score for d in cut]), whole[0].score, rtol=0, atol=0)

    def test_snapshot_restores_the_scoring_memory_exactly(self) -> None:
        """A router restored from a snapshot decides the rest of the stream exactly as the original."""
        c = self.config()
        recs = self.stream(500)
        original = Router(c)
        d = original.decide(0, decode(c, recs[:330]), np.arange(330.0))
        original.commit(0, d)
        snap = orjson.loads(orjson.dumps(original.snapshot(0)))
        assert set(snap["scoring"]) == {"windows", "reservoir", "coreset", "sent", "carry"}
        assert snap["scoring"]["carry"]["values"]  # 330 items: a chunk is open
        restored = Router(c)
        restored.restore(0, snap)
        rest = decode(c, recs[330:])
        a = original.decide(0, rest, np.arange(330.0, 500.0))
        b = restored.decide(0, rest, np.arange(330.0, 500.0))
        np.testing.assert_array_equal(a.route, b.route)
        np.testing.assert_array_equal(a.score, b.score)

    def test_decide_does_not_mutate_the_scoring_memory(self) -> None:
        """Deciding twice without commit gives the same result; commit moves the memory."""
        c = self.config()
        router = Router(c)
        b = decode(c, self.stream(100))
        before = orjson.dumps(router.scoring_state(0).to_dict())
        one = router.decide(0, b, np.zeros(100))
        two = router.decide(0, b, np.zeros(100))
        np.testing.assert_array_equal(one.score, two.score)
        assert orjson.dumps(router.scoring_state(0).to_dict()) == before
        router.commit(0, one)
        assert orjson.dumps(router.scoring_state(0).to_dict()) != before


class TestReconfigure:
    def test_a_reload_keeps_the_memory_that_still_applies(self) -> None:
        """Switching the measure from novelty to a combination that still uses novelty keeps the core-set
        and the items sent; a changed embedding length starts the memory afresh instead of mixing."""
        rng = np.random.default_rng(RNG_SEED)
        base = {"input": {"embedding_dim": 4}, "budget": {"rate": 0.5}}  # chunks of 256 items
        c1 = cfg(scoring={"measure": "novelty"}, **base)
        router = Router(c1)
        n = 2 * CHUNK + 40  # a chunk is open: its carry must survive the reload too
        vectors = rng.standard_normal((n, 4))
        recs = [
            {"id": f"r{k}", "probs": p, "embedding": v.tolist()}
            for k, (p, v) in enumerate(zip(dirichlet_rows(rng, n), vectors, strict=True))
        ]
        router.commit(0, decide(c1, recs, router))
        before = router.scoring_state(0)
        assert before.coreset is not None and len(before.coreset.points) > 0
        c2 = cfg(scoring={"measure": "combination", "weights": {"novelty": 1.0, "margin": 1.0}}, **base)
        router.configure(c2)
        after = router.scoring_state(0)
        assert after.coreset is not None
        np.testing.assert_array_equal(after.coreset.points, before.coreset.points)
        assert after.sent == before.sent and set(after.windows) == {
            "raw:novelty",
            "rank:novelty",
            "rank:margin",
        }
        assert before.carry.n_sent > 0 and after.carry.n_sent == before.carry.n_sent
        np.testing.assert_array_equal(after.carry.sent, before.carry.sent)  # type: ignore[arg-type]
        np.testing.assert_array_equal(
            after.windows["raw:novelty"].values(), before.windows["raw:novelty"].values()
        )
        router.configure(
            cfg(scoring={"measure": "novelty"}, input={"embedding_dim": 5}, budget={"rate": 0.2})
        )
        fresh = router.scoring_state(0)
        assert fresh.coreset is not None and fresh.coreset.points.shape == (0, 5)
        assert fresh.carry.sent is None
