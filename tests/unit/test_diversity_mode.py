"""Specification of the windowed batch (diversity) mode of the controller: one uniformly drawn member per
cluster of over-selected candidates, inclusion probabilities that say so, coverage and budget on a stream."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from selector.config import Config, parse_config
from selector.decode import decode_batch
from selector.routing import AUDIT, QUERY, Router

CLASSES = ["ok", "defect"]
DIM = 8


def config(mode: str = "kcenter", **budget: Any) -> Config:
    b = {"rate": 0.02, "audit_rate": 0.0, "caps": {}, "max_burst": 10.0, **budget}
    return parse_config(
        {
            "classes": CLASSES,
            "input": {"embedding_dim": DIM},
            "scoring": {"measure": "predicted_loss"},
            "diversity": {"mode": mode, "oversample": 4.0},
            "budget": b,
        }
    )


def records(vectors: np.ndarray, losses: np.ndarray, prefix: str = "x") -> list[bytes]:
    return [
        orjson.dumps(
            {"id": f"{prefix}{k}", "probs": [0.6, 0.4], "embedding": v.tolist(), "predicted_loss": float(x)}
        )
        for k, (v, x) in enumerate(zip(vectors, losses, strict=False))
    ]


def run(cfg: Config, values: list[bytes], batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Routes and inclusion probabilities of the whole stream, decided batch by batch and committed."""
    router = Router(cfg)
    routes, inclusion = [], []
    for start in range(0, len(values), batch_size):
        chunk = values[start : start + batch_size]
        b = decode_batch(chunk, [0] * len(chunk), **cfg.decode_options())
        assert not b.rejects
        d = router.decide(0, b, np.arange(start, start + len(b), dtype=np.float64))
        router.commit(0, d)
        routes.append(d.route)
        inclusion.append(d.inclusion)
    return np.concatenate(routes), np.concatenate(inclusion)


class TestOneWindow:
    def test_one_member_per_cluster_with_inclusion_one_over_its_size(self) -> None:
        """12 eligible items in 3 tight groups (6, 4, 2), all picked by a cold pool at rate 0.25 x 4:
        k = 12 / 4 = 3 clusters, exactly one item of each group is sent, and each item's inclusion is
        1 / group size."""
        cfg = config(rate=0.25, max_burst=1000.0)
        rng = np.random.default_rng(1)
        centers = rng.standard_normal((3, DIM)) * 10
        group = np.repeat([0, 1, 2], [6, 4, 2])
        vectors = centers[group] + 0.001 * rng.standard_normal((12, DIM))
        values = records(vectors, rng.uniform(0.5, 1.0, 12))
        routes, inclusion = run(cfg, values)
        sent = routes == QUERY
        assert [int(np.count_nonzero(sent[group == g])) for g in range(3)] == [1, 1, 1]
        np.testing.assert_allclose(inclusion, 1.0 / np.array([6, 4, 2])[group])

    @pytest.mark.parametrize("mode", ["kcenter", "kmeanspp"])
    def test_gradient_space_and_both_seedings_send_one_per_group(self, mode: str) -> None:
        """The same holds with k-means++ seeding and in gradient-embedding space."""
        cfg = parse_config(
            {
                **config(mode, rate=0.25, max_burst=1000.0).model_dump(),
                "diversity": {"mode": mode, "space": "gradient"},
            }
        )
        rng = np.random.default_rng(2)
        centers = rng.standard_normal((3, DIM)) * 10
        group = np.repeat([0, 1, 2], 4)
        vectors = centers[group] + 0.001 * rng.standard_normal((12, DIM))
        routes, _ = run(cfg, records(vectors, rng.uniform(0.5, 1.0, 12)))
        assert [int(np.count_nonzero((routes == QUERY)[group == g])) for g in range(3)] == [1, 1, 1]


def clustered_stream(seed: int, n: int = 6000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Items from 200 spread-out clusters with losses U(0, 0.8), plus 6% near-duplicates of 3 'stuck' clusters
    with the highest losses U(0.9, 1) (a camera showing the same hard item over and over)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((203, DIM)) * 10
    stuck = rng.random(n) < 0.06
    cluster = np.where(stuck, 200 + rng.integers(0, 3, n), rng.integers(0, 200, n))
    vectors = centers[cluster] + 0.01 * rng.standard_normal((n, DIM))
    losses = np.where(stuck, rng.uniform(0.9, 1.0, n), rng.uniform(0.0, 0.8, n))
    return cluster, vectors, losses


class TestStream:
    @pytest.mark.parametrize("mode", ["kcenter", "kmeanspp"])
    def test_covers_more_clusters_than_top_uncertainty_at_the_same_budget(self, mode: str) -> None:
        """On near-duplicate bursts, top-k spends the budget on the 3 stuck clusters; the diversity mode
        covers at least 3x as many clusters, spending within 15% of the same number of labels."""
        for seed in (0, 1):
            cluster, vectors, losses = clustered_stream(seed)
            values = records(vectors, losses)
            plain, _ = run(config("none"), values)
            diverse, _ = run(config(mode), values)
            n_plain, n_div = int(np.count_nonzero(plain == QUERY)), int(np.count_nonzero(diverse == QUERY))
            cover_plain = len(set(cluster[plain == QUERY].tolist()))
            cover_div = len(set(cluster[diverse == QUERY].tolist()))
            assert abs(n_div - n_plain) <= 0.15 * n_plain, (n_div, n_plain)
            assert cover_div >= 3 * cover_plain, (cover_div, cover_plain)

    def test_holds_the_target_rate(self) -> None:
        """Over 20,000 items at a 2% budget with audits, the realized rate is within 10% of the target."""
        rng = np.random.default_rng(5)
        cluster, vectors, losses = clustered_stream(3, n=20_000)
        del cluster, rng
        routes, _ = run(config("kcenter", audit_rate=0.002), records(vectors, losses))
        realized = np.count_nonzero((routes == QUERY) | (routes == AUDIT)) / len(routes)
        assert realized == pytest.approx(0.02, rel=0.10)
