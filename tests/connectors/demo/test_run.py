"""The demo starts as a new deployment would, and leaves a work directory the commands can inspect."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from connectors.cli.main import main
from connectors.demo.line import CLASSES, Digits
from connectors.demo.run import SEED_ITEMS, demo_config, inspect_lines, prepare
from connectors.model.dataset import DatasetStore
from connectors.model.registry import ModelRegistry
from connectors.settings.configfile import load_config
from selector.config import parse_config
from selector.quality.labels import LabelEvent


class TestPrepare:
    def test_seeds_are_imported_v1_trained_and_the_config_left_to_inspect_the_store(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """prepare() writes seed.jsonl, imports it (40 seed examples), promotes v1 trained on them as
        `selector retrain` would, and writes config.yaml (the effective configuration, password masked):
        `selector status -c` and `selector dataset export -c` that file then read the demo's store, digits
        and all."""
        base = parse_config(
            {
                "kafka": {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN",
                          "sasl_plain_username": "demo", "sasl_plain_password": "hunter2-secret"},
                "retrain": {"members": 2, "hidden": 8, "epochs": 5},
            }
        )  # fmt: skip
        config = demo_config(base, tmp_path)
        seed, _pool, _test = Digits.load().split(0, SEED_ITEMS)
        assert prepare(config, seed, time.time()) == "v1"

        lines = (tmp_path / "seed.jsonl").read_bytes().splitlines()
        assert len(lines) == SEED_ITEMS and set(orjson.loads(lines[0])) == {"label", "embedding"}
        manifest = ModelRegistry(tmp_path / "models").manifest("v1")
        assert manifest["parent"] is None and manifest["data"]["seeds"] == SEED_ITEMS
        text = (tmp_path / "config.yaml").read_text()
        assert "hunter2-secret" not in text and "sasl_plain_password: '**********'" in text
        written = load_config(tmp_path / "config.yaml")
        assert written.classes == CLASSES and written.dataset.path == str(tmp_path / "dataset.sqlite")
        assert written.model_dump(exclude={"kafka"}) == config.model_dump(exclude={"kafka"})

        store = DatasetStore(config.dataset.path)  # a few labeled digits, as the label loop would store them
        store.add_decisions(
            [{"id": f"i-{k}", "route": "audit", "predicted": str(k), "probs": [0.1] * 10,
              "embedding": None, "query_probability": 0.5, "model": "v1",
              "decided_at": "2026-11-24T00:00:00Z"} for k in range(3)]
        )  # fmt: skip
        store.add_labels([LabelEvent(f"i-{k}", str(k), "ann", 1.0) for k in range(3)])
        store.close()
        assert f"inspect: selector status -c {tmp_path / 'config.yaml'}" in inspect_lines(tmp_path)
        capsys.readouterr()
        assert main(["status", "-c", str(tmp_path / "config.yaml")]) == 0
        out = capsys.readouterr().out
        assert "decisions sent for labeling  3" in out and "3 resolved" in out
        export = tmp_path / "examples.jsonl"
        assert main(["dataset", "export", "-c", str(tmp_path / "config.yaml"), "--output", str(export)]) == 0
        assert capsys.readouterr().out.strip().endswith(f"(3 human, {SEED_ITEMS} seed)")
