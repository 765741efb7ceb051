"""The promotion gate on the demo's digits (issue 14): a holdout like the demo's (forty held-out labels, two
of them audits at pi = 0.002) on which the old point-macro-F1 rule promoted a candidate that is worse on every
digit nobody labeled is now refused, with the differences, intervals and effective size in the reason; a
clearly better candidate judged on enough labels is promoted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from connectors.demo.line import CLASSES, RARE, Digits
from connectors.model.dataset import Example
from connectors.model.registry import ModelRegistry
from connectors.model.trainer import Ensemble, TrainSettings, onnx_model, retrain, train_ensemble
from selector.quality.evaluation import holdout_mask, weighted_macro_f1

FAST = TrainSettings(members=3, hidden=32, epochs=30, seed=0)
SHARE = 0.2
DEFECTS = [c == RARE for c in CLASSES]


def labeled(
    ids: list[str], x: np.ndarray, y: np.ndarray, pi: np.ndarray, route: str = "query"
) -> list[Example]:
    return [
        Example(i, CLASSES[int(y[j])], 1, 1.0, "audit" if pi[j] < 0.01 else route, "0", [],
                [float(v) for v in x[j]], float(pi[j]), 1.0 / float(pi[j]), "v1", "2026-01-01T00:00:00Z",
                None)
        for j, i in enumerate(ids)
    ]  # fmt: skip


def ids_where(prefix: str, held: bool, n: int) -> list[str]:
    """The first ``n`` ids ``prefix0, prefix1, ...`` that the hash holds out (or keeps for training)."""
    names = [f"{prefix}{k}" for k in range(20 * n)]
    mask = holdout_mask(names, SHARE)
    return [name for name, m in zip(names, mask, strict=True) if m == held][:n]


def promote_first(registry: ModelRegistry, model: Ensemble) -> None:
    registry.add(
        onnx_model(model).SerializeToString(),
        {"created_at": 0.0, "classes": CLASSES, "embedding_dim": 64, "members": model.members},
        promote=True,
    )


@pytest.fixture(scope="module")
def digits() -> tuple[Digits, np.ndarray]:
    data = Digits.load()
    return data, np.random.default_rng(14).permutation(len(data.y))


class TestDemoHoldout:
    def test_a_worse_candidate_the_old_rule_promoted_is_refused(
        self, digits: tuple[Digits, np.ndarray], tmp_path: Path
    ) -> None:
        """v1 learned from 400 digits; the candidate from 60. Forty held-out labels: 38 queries (pi 0.1..1)
        and two audits at pi = 0.002 on digits only the candidate gets right. Weighted by raw 1/pi the audits
        decide, and the old rule (point macro-F1 above the current one's) promotes; on the
        1,300 digits nobody labeled the candidate is far worse. The gate refuses it, saying why."""
        data, order = digits
        v1 = train_ensemble(data.x[order[:400]], data.y[order[:400]], np.ones(400), CLASSES, FAST)
        registry = ModelRegistry(tmp_path)
        promote_first(registry, v1)
        train_ids = ids_where("t", held=False, n=60)
        train = order[400:460]
        rng = np.random.default_rng(0)
        train_pi = rng.uniform(0.1, 1.0, 60)
        # The candidate retrain() will train (same data, settings and order): to choose the audits.
        candidate = train_ensemble(data.x[train], data.y[train], 1 / train_pi, CLASSES, FAST)
        pool = order[460:]
        right_only = pool[
            (candidate.predict(data.x[pool])[0].argmax(1) == data.y[pool])
            & (v1.predict(data.x[pool])[0].argmax(1) != data.y[pool])
        ][:2]
        assert len(right_only) == 2
        held = np.concatenate([right_only, pool[~np.isin(pool, right_only)][:38]])
        held_pi = np.concatenate([[0.002, 0.002], rng.uniform(0.1, 1.0, 38)])
        examples = labeled(train_ids, data.x[train], data.y[train], train_pi)
        examples += labeled(ids_where("h", held=True, n=40), data.x[held], data.y[held], held_pi)

        def f1(model: Ensemble, items: np.ndarray, w: np.ndarray) -> float:
            return weighted_macro_f1(data.y[items], model.predict(data.x[items])[0].argmax(1), w, 10)

        assert f1(candidate, held, 1 / held_pi) > f1(v1, held, 1 / held_pi)  # the old rule: promote
        rest = pool[~np.isin(pool, held)]
        assert f1(candidate, rest, np.ones(len(rest))) < f1(v1, rest, np.ones(len(rest))) - 0.1

        result = retrain(examples, CLASSES, registry, FAST, min_examples=40, defects=DEFECTS, now=1.0)
        assert not result.promoted and registry.current() == "v1"
        m = result.metrics
        assert m["holdout"] == 40 and m["holdout_effective"] < 30 and m["holdout_effective_raw"] < 3
        assert m["macro_f1_low"] < 0
        assert result.reason.startswith(
            f"rejected v2: macro-F1 {m['macro_f1_difference']:+.3f} [{m['macro_f1_low']:+.3f}, "
            f"{m['macro_f1_high']:+.3f}] vs v1 on 40 held-out labels "
            f"(effective {m['holdout_effective']:.1f} < 30)"
        )
        assert (
            "; not promoted: effective size below retrain.min_holdout_effective, lower bound "
            in result.reason
        )
        assert "beats" not in result.reason
        manifest = registry.manifest("v2")
        assert manifest["status"] == "rejected" and manifest["gate"] == result.reason
        assert manifest["settings"]["defect_classes"] == [RARE]

    def test_a_clearly_better_candidate_on_enough_labels_is_promoted(
        self, digits: tuple[Digits, np.ndarray], tmp_path: Path
    ) -> None:
        """v1 learned from 30 digits; the candidate from 500; 160 held-out query labels."""
        data, order = digits
        v1 = train_ensemble(data.x[order[:30]], data.y[order[:30]], np.ones(30), CLASSES, FAST)
        registry = ModelRegistry(tmp_path)
        promote_first(registry, v1)
        rng = np.random.default_rng(1)
        train, held = order[30:530], order[530:690]
        examples = labeled(ids_where("t", False, 500), data.x[train], data.y[train], rng.uniform(0.2, 1, 500))
        examples += labeled(ids_where("h", True, 160), data.x[held], data.y[held], rng.uniform(0.2, 1, 160))
        result = retrain(examples, CLASSES, registry, FAST, defects=DEFECTS, now=1.0)
        assert result.promoted and registry.current() == "v2"
        m = result.metrics
        assert m["macro_f1_low"] > 0.05 and m["holdout"] == 160 and m["holdout_effective"] >= 30
        assert result.reason.startswith(
            f"promoted v2: macro-F1 {m['macro_f1_difference']:+.3f} [{m['macro_f1_low']:+.3f}, "
            f"{m['macro_f1_high']:+.3f}] vs v1 on 160 held-out labels "
            f"(effective {m['holdout_effective']:.1f} >= 30); "
            f"recall 8 {m['recall_8_difference']:+.3f} ["
        )
        assert "not promoted" not in result.reason
