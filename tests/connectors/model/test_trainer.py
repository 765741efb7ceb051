"""The built-in trainer: the hand-built ONNX graph computes the ensemble exactly, importance weights correct
the selection bias in metrics and in training, training is reproducible, and retrain() gates and registers
candidates. One end-to-end check on scikit-learn's digits with a rare class shows retraining on selectively
labeled items fixes a weak model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from sklearn.datasets import load_digits
from sklearn.metrics import f1_score

from connectors.model.dataset import Example
from connectors.model.registry import ModelRegistry
from connectors.model.serving import LoadedModel
from connectors.model.trainer import (
    Ensemble,
    RetrainResult,
    TrainSettings,
    export_onnx,
    onnx_model,
    parity,
    retrain,
    run_onnx,
    train_ensemble,
    training_weights,
)
from selector.errors import SelectorError
from selector.quality.evaluation import holdout_mask, weighted_accuracy, weighted_macro_f1

CLASSES = ["ok", "scratch", "dent", "crack"]
FAST = TrainSettings(members=3, hidden=16, epochs=30, seed=0)


def random_ensemble(k: int = 3, d: int = 7, h: int = 5, c: int = 4, seed: int = 0) -> Ensemble:
    rng = np.random.default_rng(seed)
    f32 = np.float32
    return Ensemble(
        rng.normal(size=(k, d, h)).astype(f32),
        rng.normal(size=(k, h)).astype(f32),
        rng.normal(size=(k, h, c)).astype(f32),
        rng.normal(size=(k, c)).astype(f32),
        CLASSES[:c],
    )


def blobs(n: int, d: int = 6, seed: int = 0, spread: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Four Gaussian classes in ``d`` dimensions."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(99).normal(scale=2.0, size=(len(CLASSES), d))
    y = rng.integers(0, len(CLASSES), n)
    return (centers[y] + rng.normal(scale=spread, size=(n, d))).astype(np.float32), y


def examples(
    x: np.ndarray,
    y: np.ndarray,
    pi: np.ndarray,
    predicted: list[str],
    prefix: str = "i",
    classes: list[str] = CLASSES,
) -> list[Example]:
    return [
        Example(
            f"{prefix}{j}",
            classes[int(y[j])],
            1,
            1.0,
            "query",
            predicted[j],
            [],
            [float(v) for v in x[j]],
            float(pi[j]),
            1.0 / float(pi[j]),
            "v0",
            "2026-01-01T00:00:00Z",
            None,
        )
        for j in range(len(y))
    ]


class TestOnnxExport:
    def test_onnxruntime_computes_the_reference_prediction(self) -> None:
        """Mean and member probabilities from onnxruntime equal Ensemble.predict; rows are distributions."""
        ensemble = random_ensemble()
        x = np.random.default_rng(1).normal(size=(50, 7)).astype(np.float32)
        probs, members = run_onnx(onnx_model(ensemble).SerializeToString(), x)
        ref_probs, ref_members = ensemble.predict(x)
        assert probs.shape == (50, 4) and members.shape == (50, 3, 4)
        np.testing.assert_allclose(probs, ref_probs, atol=1e-5)
        np.testing.assert_allclose(members, ref_members, atol=1e-5)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(members.sum(axis=2), 1.0, atol=1e-5)
        assert not np.allclose(members[:, 0], members[:, 1])  # members really are different models

    @pytest.mark.parametrize("n", [1, 1000])
    def test_the_batch_dimension_is_dynamic(self, n: int) -> None:
        ensemble = random_ensemble()
        x = np.random.default_rng(n).normal(size=(n, 7)).astype(np.float32)
        probs, members = run_onnx(onnx_model(ensemble).SerializeToString(), x)
        assert probs.shape == (n, 4) and members.shape == (n, 3, 4)
        np.testing.assert_allclose(probs, ensemble.predict(x)[0], atol=1e-5)

    def test_parity_is_tiny_for_the_export_and_large_for_another_model(self) -> None:
        ensemble = random_ensemble()
        x = np.random.default_rng(2).normal(size=(64, 7)).astype(np.float32)
        assert parity(ensemble, onnx_model(ensemble).SerializeToString(), x) < 1e-5
        other = onnx_model(random_ensemble(seed=5)).SerializeToString()
        assert parity(ensemble, other, x) > 1e-2

    def test_graph_declares_its_interface_and_metadata(self) -> None:
        """Input [batch, d], outputs [batch, C] and [batch, K, C], and the metadata serving reads."""
        data = onnx_model(random_ensemble()).SerializeToString()
        model = onnx.load_from_string(data)
        onnx.checker.check_model(model)
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        (inp,) = session.get_inputs()
        assert (inp.name, inp.shape) == ("embedding", ["batch", 7])
        assert {o.name: o.shape for o in session.get_outputs()} == {
            "probs": ["batch", 4],
            "members": ["batch", 3, 4],
        }
        meta = session.get_modelmeta().custom_metadata_map
        assert meta == {"classes": '["ok", "scratch", "dent", "crack"]', "members": "3", "embedding_dim": "7",
                        "producer": "selector"}  # fmt: skip

    def test_the_inference_connector_accepts_the_export(self) -> None:
        """serving.LoadedModel's probe (shapes, classes, probabilities) passes and sees the members."""
        loaded = LoadedModel.from_bytes(onnx_model(random_ensemble()).SerializeToString(), "v1", CLASSES)
        assert (loaded.embedding_dim, loaded.members) == (7, 3)

    def test_export_writes_the_returned_bytes_and_no_temporary_file(self, tmp_path: Path) -> None:
        path = tmp_path / "out" / "model.onnx"
        data = export_onnx(random_ensemble(), path)
        assert path.read_bytes() == data
        assert [p.name for p in path.parent.iterdir()] == ["model.onnx"]


class TestMetrics:
    def test_weighted_macro_f1_is_scikit_learns_with_sample_weights(self) -> None:
        """Same value as sklearn's macro F1 over the classes present, for random labels and weights."""
        rng = np.random.default_rng(3)
        for _ in range(20):
            y_true, y_pred = rng.integers(0, 5, 60), rng.integers(0, 5, 60)
            y_pred[y_pred == 4] = 3  # class 4 only in y_true: F1 0, counted
            w = rng.uniform(0.1, 5.0, 60)
            expected = f1_score(y_true, y_pred, average="macro", sample_weight=w)
            assert weighted_macro_f1(y_true, y_pred, w, 7) == pytest.approx(expected, abs=1e-12)

    def test_integer_weights_count_like_duplicates(self) -> None:
        y_true, y_pred = np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2])
        w = np.array([1.0, 3.0, 2.0, 1.0])
        dup_t, dup_p = np.repeat(y_true, [1, 3, 2, 1]), np.repeat(y_pred, [1, 3, 2, 1])
        ones = np.ones(7)
        assert weighted_macro_f1(y_true, y_pred, w, 3) == pytest.approx(
            weighted_macro_f1(dup_t, dup_p, ones, 3)
        )
        assert weighted_accuracy(y_true, y_pred, w) == pytest.approx(5 / 7)

    def test_absent_classes_are_skipped_and_unknown_predictions_are_wrong(self) -> None:
        ones = np.ones(3)
        assert weighted_macro_f1(np.array([0, 0, 1]), np.array([0, 0, 1]), ones, 5) == 1.0
        # class 1: TP 0, FN 1 -> F1 0; class 0: 2 / (2 + 0 + 0) = 1; -1 is no class
        assert weighted_macro_f1(np.array([0, 0, 1]), np.array([0, 0, -1]), ones, 5) == pytest.approx(0.5)

    def test_weighted_accuracy_recovers_the_stream_accuracy_from_a_biased_sample(self) -> None:
        """Uncertain items are labeled more often and are wrong more often: the plain accuracy of the
        labeled items is far too low; weighting each by 1 / pi recovers the stream's accuracy."""
        rng = np.random.default_rng(4)
        n = 40_000
        uncertainty = rng.uniform(0.0, 1.0, n)
        correct = rng.random(n) > 0.6 * uncertainty  # P(wrong) = 0.6 u
        pi = np.clip(uncertainty, 0.05, 1.0)
        labeled = rng.random(n) < pi
        y_true = np.zeros(n, dtype=np.int64)
        y_pred = np.where(correct, 0, 1)
        truth = correct.mean()
        plain = weighted_accuracy(y_true[labeled], y_pred[labeled], np.ones(labeled.sum()))
        weighted = weighted_accuracy(y_true[labeled], y_pred[labeled], 1.0 / pi[labeled])
        assert truth - plain > 0.08
        assert abs(weighted - truth) < 0.015

    def test_training_weights_are_normalized_and_clipped(self) -> None:
        w = np.array([1.0, 2.0, 1.0, 1000.0])
        got = training_weights(w, max_weight=3.0)
        mean = w.mean()
        np.testing.assert_allclose(got, [1 / mean, 2 / mean, 1 / mean, 3.0], rtol=1e-6)
        np.testing.assert_allclose(training_weights(np.full(5, 7.0), 10.0), 1.0)
        with pytest.raises(SelectorError, match="positive finite"):
            training_weights(np.array([1.0, 0.0]), 10.0)


class TestHoldout:
    def test_the_split_is_pinned_by_sha256_of_the_id(self) -> None:
        """The same ids fall in the holdout in every process and release (a recorded split)."""
        ids = [f"item-{i}" for i in range(20)]
        held = [i for i, h in zip(ids, holdout_mask(ids, 0.3), strict=True) if h]
        assert held == ["item-1", "item-9", "item-12", "item-14", "item-17", "item-18"]

    def test_membership_depends_on_the_id_alone(self) -> None:
        """An item's side does not depend on which other items are labeled or in what order; a larger share
        only adds items; the share is met; another salt gives another split."""
        ids = [f"x{i}" for i in range(5000)]
        mask = holdout_mask(ids, 0.2)
        assert abs(mask.mean() - 0.2) < 0.02
        order = np.random.default_rng(0).permutation(5000)
        assert np.array_equal(holdout_mask([ids[i] for i in order], 0.2), mask[order])
        assert np.all(holdout_mask(ids, 0.3)[mask])
        assert not np.array_equal(holdout_mask(ids, 0.2, salt="other"), mask)
        assert holdout_mask([], 0.2).shape == (0,)


class TestTraining:
    def test_a_heavier_class_dominates_where_classes_overlap(self) -> None:
        """With inputs that carry no information, the model predicts the weighted class frequencies:
        weight 5 on class 1 moves its probability from 1/2 to 5/6."""
        rng = np.random.default_rng(5)
        x = rng.normal(size=(1000, 2)).astype(np.float32)
        y = rng.integers(0, 2, 1000)
        settings = TrainSettings(members=3, hidden=8, epochs=20)
        fresh = rng.normal(size=(500, 2)).astype(np.float32)
        plain = train_ensemble(x, y, np.ones(1000), ["a", "b"], settings).predict(fresh)[0][:, 1].mean()
        weighted = train_ensemble(x, y, np.where(y == 1, 5.0, 1.0), ["a", "b"], settings)
        heavy = weighted.predict(fresh)[0][:, 1].mean()
        assert 0.4 < plain < 0.6
        assert 0.75 < heavy < 0.9

    def test_the_same_seed_gives_the_same_onnx_bytes(self) -> None:
        x, y = blobs(300)
        w = np.random.default_rng(6).uniform(1.0, 4.0, 300)
        first = onnx_model(train_ensemble(x, y, w, CLASSES, FAST)).SerializeToString()
        again = onnx_model(train_ensemble(x, y, w, CLASSES, FAST)).SerializeToString()
        other = TrainSettings(members=3, hidden=16, epochs=30, seed=1)
        assert first == again
        assert onnx_model(train_ensemble(x, y, w, CLASSES, other)).SerializeToString() != first

    def test_the_model_takes_raw_embeddings_whatever_their_scale(self) -> None:
        """Standardization is folded into the first layer: a model trained on rescaled, shifted features
        predicts their raw values as the model trained on the originals predicts the originals."""
        x, y = blobs(400, seed=7)
        scale = np.linspace(0.01, 1000.0, x.shape[1]).astype(np.float32)
        shifted = x * scale + 500.0
        a = train_ensemble(x, y, np.ones(400), CLASSES, FAST).predict(x)[0]
        b = train_ensemble(shifted, y, np.ones(400), CLASSES, FAST).predict(shifted)[0]
        assert np.abs(a - b).max() < 1e-2
        assert (b.argmax(axis=1) == y).mean() > 0.9

    def test_bad_inputs_are_refused(self) -> None:
        x, y = blobs(20)
        with pytest.raises(SelectorError, match="labels must index 2 classes"):
            train_ensemble(x, y, np.ones(20), ["a", "b"], FAST)
        with pytest.raises(SelectorError, match="weights and x differ"):
            train_ensemble(x, y, np.ones(19), CLASSES, FAST)
        with pytest.raises(SelectorError, match="'members' must be >= 1: 0"):
            TrainSettings(members=0)
        with pytest.raises(SelectorError, match=r"'max_weight' must be >= 1 \(the mean\): 0.5"):
            TrainSettings(max_weight=0.5)


class TestRetrain:
    @staticmethod
    def labeled(n: int = 400, seed: int = 8, predicted: str = "ok") -> list[Example]:
        x, y = blobs(n, seed=seed, spread=1.5)
        pi = np.random.default_rng(seed).uniform(0.2, 1.0, n)
        return examples(x, y, pi, [predicted] * n)

    def test_a_better_candidate_is_promoted_over_the_recorded_predictions(self, tmp_path: Path) -> None:
        """Before any promotion the baseline is what production predicted (here always 'ok')."""
        registry = ModelRegistry(tmp_path)
        labeled = [
            *self.labeled(),
            *examples(np.zeros((3, 6)), np.zeros(3, int), np.ones(3), ["ok"] * 3, "e"),
        ]
        labeled[-1] = Example(**{**labeled[-1].__dict__, "embedding": None})
        result = retrain(labeled, CLASSES, registry, FAST, now=1_764_000_000.0)
        assert isinstance(result, RetrainResult) and result.promoted
        assert result.version == "v1" and registry.current() == "v1"
        assert result.metrics["candidate_macro_f1"] > 0.8
        assert result.metrics["current_macro_f1"] < 0.3
        assert (
            result.reason.startswith("promoted v1: macro-F1 +")
            and "vs the recorded predictions" in result.reason
        )
        manifest = registry.manifest("v1")
        assert manifest["status"] == "promoted" and manifest["parent"] is None
        assert manifest["metrics"] == result.metrics and manifest["gate"] == result.reason
        assert manifest["data"]["train"] + manifest["data"]["holdout"] == 402
        assert manifest["data"]["without_embedding"] == 1
        assert sum(manifest["data"]["by_label"].values()) == 402
        assert (manifest["embedding_dim"], manifest["members"], manifest["classes"]) == (6, 3, CLASSES)
        assert result.path == registry.model_path("v1") and registry.verify("v1") == result.path.read_bytes()
        assert result.metrics["parity"] <= 1e-4

    def test_pseudo_labels_train_but_are_never_held_out(self, tmp_path: Path) -> None:
        """Adding 300 pseudo-labels leaves the holdout (human labels only) as it was and adds them all to
        training, where they count in the manifest."""
        human = self.labeled()
        x, y = blobs(300, seed=9, spread=1.5)
        pseudo = [Example(**{**e.__dict__, "id": f"p{k}", "source": "pseudo", "weight": 0.1})
                  for k, e in enumerate(examples(x, y, np.ones(300), ["ok"] * 300))]  # fmt: skip
        alone = retrain(human, CLASSES, ModelRegistry(tmp_path / "a"), FAST, now=1_764_000_000.0)
        both = retrain(human + pseudo, CLASSES, ModelRegistry(tmp_path / "b"), FAST, now=1_764_000_000.0)
        assert both.metrics["holdout"] == alone.metrics["holdout"]
        assert both.metrics["train"] == alone.metrics["train"] + 300
        assert ModelRegistry(tmp_path / "b").manifest("v1")["data"]["pseudo_labels"] == 300

    def test_the_current_model_is_the_baseline_once_one_is_promoted(self, tmp_path: Path) -> None:
        """A second run on the same data trains the same model: it ties with v1 (run from its ONNX file),
        difference 0 [0, 0], so it is kept as rejected, descends from v1, and CURRENT stays."""
        registry = ModelRegistry(tmp_path)
        labeled = self.labeled()
        first = retrain(labeled, CLASSES, registry, FAST, now=0.0)
        second = retrain(labeled, CLASSES, registry, FAST, now=1.0)
        assert not second.promoted and second.version == "v2"
        assert second.metrics["current_macro_f1"] == first.metrics["candidate_macro_f1"]
        assert second.reason.startswith("rejected v2: macro-F1 +0.000 [+0.000, +0.000] vs v1 on ")
        assert second.reason.endswith(
            "; not promoted: lower bound +0.000 not above retrain.min_improvement 0"
        )
        assert registry.current() == "v1"
        assert registry.manifest("v2")["status"] == "rejected" and registry.manifest("v2")["parent"] == "v1"

    def test_a_huge_required_improvement_rejects_and_keeps_current(self, tmp_path: Path) -> None:
        registry = ModelRegistry(tmp_path)
        retrain(self.labeled(), CLASSES, registry, FAST, now=0.0)
        result = retrain(self.labeled(seed=9), CLASSES, registry, FAST, min_improvement=1.0, now=1.0)
        assert not result.promoted and registry.current() == "v1"
        assert registry.versions() == ["v1", "v2"] and registry.manifest("v2")["status"] == "rejected"
        assert result.metrics["candidate_macro_f1"] > 0.8

    def test_too_few_examples_are_refused_with_what_to_do(self, tmp_path: Path) -> None:
        registry = ModelRegistry(tmp_path)
        with pytest.raises(SelectorError) as info:
            retrain(self.labeled(n=40), CLASSES, registry, FAST, min_examples=50, now=0.0)
        held = int(holdout_mask([f"i{j}" for j in range(40)], 0.2).sum())
        assert str(info.value) == (
            "retrain needs at least 50 labeled examples with an embedding outside the holdout, "
            f"got {40 - held} (of 40 labeled, 40 usable); label more items or lower 'retrain.min_examples'"
        )
        assert registry.versions() == []
        with pytest.raises(SelectorError, match=r"^retrain needs at least 50 .* got 0 \(of 0 labeled"):
            retrain([], CLASSES, registry, FAST, min_examples=50, now=0.0)

    def test_an_empty_holdout_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(SelectorError, match=r"the holdout is empty .* raise 'retrain.holdout_share'"):
            retrain(self.labeled(n=60), CLASSES, ModelRegistry(tmp_path), FAST, holdout_share=1e-9, now=0.0)


DIGITS = [str(d) for d in range(10)]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    """A weak model from 30 items; the stream's items labeled with probability proportional to its
    uncertainty (clipped to [0.05, 1]); a retrain on those labels, gated against the weak model's recorded
    predictions. Digit 8 is the rare defect (5% of the 8s kept)."""
    data = load_digits()
    x, y = (data.data / 16.0).astype(np.float32), data.target.astype(np.int64)
    eights = np.flatnonzero(y == 8)
    keep = np.ones(len(y), dtype=bool)
    keep[eights[len(eights) // 20 :]] = False
    x, y = x[keep], y[keep]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    seed, stream = order[:30], order[30:]
    weak = train_ensemble(x[seed], y[seed], np.ones(30), DIGITS, TrainSettings(members=3))
    probs = weak.predict(x[stream])[0]
    uncertainty = 1.0 - probs.max(axis=1)
    pi = np.clip(0.25 * uncertainty / uncertainty.mean(), 0.05, 1.0)
    labeled = rng.random(len(stream)) < pi
    items = stream[labeled]
    predicted = [DIGITS[p] for p in probs.argmax(axis=1)[labeled]]
    result = retrain(
        examples(x[items], y[items], pi[labeled], predicted, "d", DIGITS),
        DIGITS,
        ModelRegistry(tmp_path_factory.mktemp("digits")),
        TrainSettings(),
        now=0.0,
    )
    unlabeled = stream[~labeled]
    new = run_onnx(result.path.read_bytes(), x[unlabeled])[0].argmax(axis=1)
    ones = np.ones(len(unlabeled))
    return {
        **result.metrics,
        "promoted": float(result.promoted),
        "labeled": float(labeled.sum()),
        "true_f1_new": weighted_macro_f1(y[unlabeled], new, ones, 10),
        "true_f1_weak": weighted_macro_f1(y[unlabeled], probs.argmax(axis=1)[~labeled], ones, 10),
    }


class TestDigits:
    def test_retraining_on_selected_labels_beats_the_weak_model_on_the_holdout(
        self, digits_run: dict[str, float]
    ) -> None:
        """The importance-weighted held-out macro-F1 rises clearly (measured: 0.51 -> 0.81) and the
        candidate is promoted."""
        assert 300 < digits_run["labeled"] < 550
        assert digits_run["promoted"] == 1.0
        assert digits_run["candidate_macro_f1"] > digits_run["current_macro_f1"] + 0.1
        assert digits_run["candidate_accuracy"] > 0.85

    def test_the_gain_is_real_on_the_items_nobody_labeled(self, digits_run: dict[str, float]) -> None:
        """On the unlabeled rest of the stream the retrained model is also clearly better."""
        assert digits_run["true_f1_new"] > digits_run["true_f1_weak"] + 0.05
