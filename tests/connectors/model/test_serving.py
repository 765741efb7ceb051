"""The inference connector's model checks: a model is served only if it loads, takes the configured
embedding, knows the configured classes and returns probabilities; anything else is refused, saying why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from connectors.model.registry import ModelRegistry
from connectors.model.serving import LoadedModel, ModelError, ModelServer, load_version
from connectors.model.trainer import Ensemble, onnx_model
from selector.config import parse_config

CLASSES = ["ok", "scratch", "dent", "crack"]


def ensemble(
    seed: int = 0, d: int = 6, k: int = 3, classes: list[str] = CLASSES, scale: float = 1.0
) -> Ensemble:
    rng = np.random.default_rng(seed)
    c, h = len(classes), 8
    return Ensemble(
        (rng.normal(size=(k, d, h)) * scale).astype(np.float32),
        rng.normal(size=(k, h)).astype(np.float32),
        rng.normal(size=(k, h, c)).astype(np.float32),
        rng.normal(size=(k, c)).astype(np.float32),
        list(classes),
    )


def graph(e: Ensemble) -> bytes:
    return onnx_model(e).SerializeToString()


class TestLoadedModel:
    def test_a_good_model_scores_like_the_reference(self) -> None:
        e = ensemble()
        model = LoadedModel.from_bytes(graph(e), "v1", CLASSES, embedding_dim=6)
        assert (model.embedding_dim, model.members) == (6, 3)
        x = np.random.default_rng(1).normal(size=(50, 6)).astype(np.float32)
        probs, members = model.predict(x)
        ref_probs, ref_members = e.predict(x)
        assert members is not None
        assert np.abs(probs - ref_probs).max() < 1e-5 and np.abs(members - ref_members).max() < 1e-5

    @pytest.mark.parametrize(
        ("data", "dim", "message"),
        [
            (b"\x08\x07garbage", None, "model v9: not a loadable ONNX model"),
            (graph(ensemble(classes=["ok", "scratch", "dent", "rust"])), None,
             "model v9: classes ['ok', 'scratch', 'dent', 'rust'] differ from the configured "
             "['ok', 'scratch', 'dent', 'crack']"),
            (graph(ensemble(classes=["ok", "scratch"])), None, "model v9: classes ['ok', 'scratch'] differ"),
            (graph(ensemble()), 7, "model v9: takes embeddings of 6 numbers, 'input.embedding_dim' is 7"),
            (graph(ensemble(scale=np.nan)), None,
             "model v9: 'probs' rows are not finite probabilities summing to 1"),
        ],
    )  # fmt: skip
    def test_a_bad_model_is_refused_with_the_reason(self, data: bytes, dim: int | None, message: str) -> None:
        with pytest.raises(ModelError) as err:
            LoadedModel.from_bytes(data, "v9", CLASSES, embedding_dim=dim)
        assert str(err.value).startswith(message)


class TestSwap:
    def test_a_tampered_or_bad_version_never_replaces_the_served_one(self, tmp_path: Path) -> None:
        """v1 is served; v2 whose file was altered after registration, v3 with other classes and a v4 event
        whose sha256 is not the manifest's are refused (counted, v1 kept); v5 is swapped in."""
        registry = ModelRegistry(tmp_path / "models")
        good = {"created_at": 0.0, "classes": CLASSES}
        registry.add(graph(ensemble(1)), good, promote=True)
        registry.add(graph(ensemble(2)), good, promote=False)
        registry.model_path("v2").write_bytes(graph(ensemble(9)))
        registry.add(graph(ensemble(3, classes=["a", "b", "c", "d"])), good, promote=False)
        registry.add(graph(ensemble(4)), good, promote=False)
        registry.add(graph(ensemble(5)), good, promote=False)
        cfg = parse_config({"classes": CLASSES, "kafka": {"bootstrap_servers": "127.0.0.1:9"}})
        server = ModelServer(cfg, "127.0.0.1:9", registry)
        assert server.swap("v1") and server.model is not None and server.model.version == "v1"
        assert not server.swap("v2")
        assert not server.swap("v3")
        assert not server.swap("v4", sha256="0" * 64)
        assert not server.swap("v77")
        assert server.model.version == "v1" and server.stats.loads == {"loaded": 1, "refused": 4}
        assert server.swap("v5", sha256=registry.manifest("v5")["sha256"])
        assert server.model.version == "v5" and server.stats.loads == {"loaded": 2, "refused": 4}

    def test_load_version_names_the_sha256_mismatch(self, tmp_path: Path) -> None:
        registry = ModelRegistry(tmp_path)
        registry.add(graph(ensemble()), {"created_at": 0.0}, promote=True)
        registry.model_path("v1").write_bytes(b"truncated")
        with pytest.raises(ModelError, match=r"^model v1: sha256 mismatch \(manifest [0-9a-f]{64}, file"):
            load_version(registry, "v1", CLASSES)
