"""`selector retrain` from seeds: the first model when nothing can judge it, the promotion gate otherwise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from connectors.cli.main import main
from connectors.model.dataset import DatasetStore
from connectors.model.registry import ModelRegistry
from selector.quality.labels import LabelEvent

CLASSES = ["ok", "dent"]
WHY = "no current model and no human labels to judge it against"


def separable(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    return rng.normal(size=(n, 4)) + 2.0 * (2 * y[:, None] - 1), y


@pytest.fixture
def config(tmp_path: Path) -> Path:
    x, y = separable(40, 0)
    seeds = b"".join(
        orjson.dumps({"label": CLASSES[c], "embedding": v.tolist()}) + b"\n"
        for v, c in zip(x, y, strict=True)
    )
    (tmp_path / "seed.jsonl").write_bytes(seeds)
    path = tmp_path / "config.yaml"
    path.write_text(
        f"classes: {CLASSES}\n"
        f"dataset: {{path: '{tmp_path / 'd.sqlite'}'}}\n"
        f"retrain: {{registry: '{tmp_path / 'models'}', members: 2, hidden: 8, epochs: 5, min_examples: 10,"
        " holdout_share: 0.5}\n"
    )
    assert main(["dataset", "import", str(tmp_path / "seed.jsonl"), "-c", str(path)]) == 0
    return path


class TestFirstModel:
    def test_seeds_alone_train_v1_and_promote_it_saying_why(
        self, tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """No promoted model and no human label: v1 is trained on the 40 seeds and promoted, parent null,
        its manifest counting the seeds and the parity checked."""
        capsys.readouterr()
        assert main(["retrain", "-c", str(config)]) == 0
        first_line = capsys.readouterr().out.splitlines()[0]
        assert first_line == (
            f"selector retrain: v1 promoted as the first model ({WHY}): trained on 40 seed examples; "
            f"registry {tmp_path / 'models'}"
        )
        registry = ModelRegistry(tmp_path / "models")
        manifest = registry.manifest("v1")
        assert registry.current() == "v1" and manifest["status"] == "promoted" and manifest["parent"] is None
        assert manifest["data"]["seeds"] == manifest["data"]["train"] == 40
        assert manifest["data"]["holdout"] == 0 and manifest["data"]["by_label"] == {"ok": 20, "dent": 20}
        assert manifest["embedding_dim"] == 4 and manifest["members"] == 2
        assert 0 <= manifest["metrics"]["parity"] <= 1e-4
        registry.verify("v1")

    def test_too_few_seeds_are_refused_with_what_to_do(
        self, tmp_path: Path, config: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Fewer seeds than retrain.min_examples: exit 1, nothing registered."""
        strict = tmp_path / "strict.yaml"
        strict.write_text(config.read_text().replace("min_examples: 10", "min_examples: 41"))
        assert main(["retrain", "-c", str(strict)]) == 1
        assert "the first model needs at least 41 labeled examples with an embedding, got 40" in caplog.text
        assert "'selector dataset import'" in caplog.text
        assert ModelRegistry(tmp_path / "models").versions() == []

    def test_with_human_labels_the_candidate_goes_through_the_gate(
        self, tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Once v1 exists and humans have labeled, retrain trains a candidate (seeds included) and the gate
        judges it against v1: no first-model path."""
        assert main(["retrain", "-c", str(config)]) == 0
        x, y = separable(60, 1)
        store = DatasetStore(tmp_path / "d.sqlite")
        store.add_decisions(
            [{"id": f"h-{k:02d}", "route": "query", "predicted": "ok", "probs": [0.6, 0.4],
              "embedding": v.tolist(), "query_probability": 0.5, "model": "v1",
              "decided_at": f"2026-11-24T00:00:{k:02d}Z"} for k, v in enumerate(x)]
        )  # fmt: skip
        store.add_labels([LabelEvent(f"h-{k:02d}", CLASSES[c], "ann", 1.0) for k, c in enumerate(y)])
        store.close()
        capsys.readouterr()
        assert main(["retrain", "-c", str(config)]) == 0
        out = capsys.readouterr().out
        assert out.startswith(("selector retrain: promoted v2: ", "selector retrain: rejected v2: "))
        assert "first model" not in out
        manifest = ModelRegistry(tmp_path / "models").manifest("v2")
        assert manifest["parent"] == "v1" and manifest["status"] in ("promoted", "rejected")
