"""The built-in trainer: a deep ensemble on the labeled embeddings, exported to ONNX, gated and registered.

The labeled examples are a probability sample of the stream: item ``i`` was labeled with inclusion
probability ``pi_i``, so weighting it by ``w_i = 1 / pi_i`` makes sums over the labeled items unbiased for
sums over the stream (Horvitz & Thompson 1952). Training minimizes the importance-weighted cross-entropy
``sum_i w_i CE(f(x_i), y_i) / n``, so a model is fitted to the stream it will serve rather than to the
uncertain items that were queried. The promotion gate judges a candidate and the current model paired, on
the same held-out labels, by the interval of their weighted macro-F1 difference, the holdout's effective size
and each defect class's recall (:func:`selector.quality.evaluation.promotion_gate`; docs/estimates.md).

The model is a deep ensemble (Lakshminarayanan, Pritzel & Blundell 2017): ``K`` one-hidden-layer ReLU MLPs,
each from its own random initialization and visiting the examples in its own order, trained with Adam. All
members train at once as one batched computation over stacked weights (``torch.baddbmm``). Members see all
examples, not bootstraps: the paper found bootstrapping hurt accuracy, and labeled sets here are small.
The member softmaxes' mean is the prediction; their spread feeds the monitor's committee scores.

Weights are normalized to mean 1 and clipped at ``max_weight`` (the clipped ones are not renormalized, so
no weight exceeds ``max_weight`` times the mean of the unclipped weights): a few items labeled with a tiny
``pi`` would otherwise dominate every gradient step. Clipping trades a little bias for much less variance;
evaluation uses the unclipped weights.

Inputs are standardized during training, and the standardization is folded into the first layer, so the
exported graph takes the raw embeddings.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 4)).astype(np.float32)
    >>> y = (x[:, 0] > 0).astype(np.int64)
    >>> model = train_ensemble(x, y, np.ones(200), ["neg", "pos"], TrainSettings(members=2, epochs=20))
    >>> probs, members = model.predict(x)
    >>> probs.shape, members.shape, bool((probs.argmax(1) == y).mean() > 0.9)
    ((200, 2), (200, 2, 2), True)
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper

from connectors.model.dataset import Example
from connectors.model.registry import ModelRegistry
from selector.config import RetrainConfig
from selector.errors import SelectorError
from selector.quality.evaluation import holdout_mask, kish_effective_n, promotion_gate, trimmed_weights

OPSET = 17
"""ONNX opset of the exported graph (ReduceMean still takes ``axes`` as an attribute)."""
IR_VERSION = 8
"""ONNX IR version matching opset 17, loadable by every onnxruntime the ``train`` extra allows."""
PARITY_TOLERANCE = 1e-4
"""Largest absolute difference allowed between onnxruntime's and torch's probabilities."""


@dataclass(frozen=True)
class TrainSettings:
    """How the ensemble is trained."""

    members: int = 5
    hidden: int = 64
    epochs: int = 150
    learning_rate: float = 1e-2
    weight_decay: float = 1e-4
    batch_size: int = 256
    seed: int = 0
    max_weight: float = 10.0
    """clip the normalized importance weights (mean 1) at this value"""

    def __post_init__(self) -> None:
        for name in ("members", "hidden", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise SelectorError(f"train setting {name!r} must be >= 1: {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise SelectorError(f"train setting 'learning_rate' must be > 0: {self.learning_rate}")
        if not self.weight_decay >= 0:
            raise SelectorError(f"train setting 'weight_decay' must be >= 0: {self.weight_decay}")
        if not self.max_weight >= 1:
            raise SelectorError(f"train setting 'max_weight' must be >= 1 (the mean): {self.max_weight}")


def settings_of(r: RetrainConfig) -> TrainSettings:
    """The training settings of the ``retrain`` configuration section."""
    return TrainSettings(members=r.members, hidden=r.hidden, epochs=r.epochs, seed=r.seed)


@dataclass(frozen=True)
class Ensemble:
    """Trained members' weights, stacked over members (float32), taking raw embeddings."""

    w1: np.ndarray
    """(K, d, h)"""
    b1: np.ndarray
    """(K, h)"""
    w2: np.ndarray
    """(K, h, C)"""
    b2: np.ndarray
    """(K, C)"""
    classes: list[str]

    @property
    def members(self) -> int:
        return int(self.w1.shape[0])

    @property
    def embedding_dim(self) -> int:
        return int(self.w1.shape[1])

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean probabilities (n, C) and member probabilities (n, K, C), in float64 (the reference the
        exported graph is checked against)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.embedding_dim:
            raise SelectorError(f"embeddings must have shape (n, {self.embedding_dim}), got {x.shape}")
        h = np.einsum("nd,kdh->knh", x, self.w1.astype(np.float64)) + self.b1[:, None, :]
        logits = np.einsum("knh,khc->knc", np.maximum(h, 0.0), self.w2.astype(np.float64))
        logits += self.b2[:, None, :]
        logits -= logits.max(axis=-1, keepdims=True)
        e = np.exp(logits)
        members = (e / e.sum(axis=-1, keepdims=True)).transpose(1, 0, 2)
        return members.mean(axis=1), members


def training_weights(weights: np.ndarray, max_weight: float) -> np.ndarray:
    """Importance weights normalized to mean 1, clipped at ``max_weight`` (float32)."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or len(w) == 0 or not np.all(np.isfinite(w) & (w > 0)):
        raise SelectorError("importance weights must be a non-empty vector of positive finite numbers")
    clipped: np.ndarray = np.minimum(w / w.mean(), max_weight).astype(np.float32)
    return clipped


def _logits(
    x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor
) -> torch.Tensor:
    """Member logits (K, B, C) of per-member inputs ``x`` (K, B, d)."""
    h = torch.relu(torch.baddbmm(b1.unsqueeze(1), x, w1))
    return torch.baddbmm(b2.unsqueeze(1), h, w2)


def train_ensemble(
    x: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray,
    classes: list[str],
    settings: TrainSettings | None = None,
) -> Ensemble:
    """Train a deep ensemble on embeddings ``x`` (n, d), class indices ``y`` (n,) and importance weights.

    Deterministic for a given ``settings.seed`` (and torch's thread count).

    Raises:
        SelectorError: shapes disagree, a label is not a class index, or a weight is not positive.
    """
    settings = settings or TrainSettings()
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    if x.ndim != 2 or y.shape != (len(x),) or len(x) == 0:
        raise SelectorError(f"need x (n, d) and y (n,) with n > 0, got {x.shape} and {y.shape}")
    if len(classes) < 2 or y.min() < 0 or y.max() >= len(classes):
        raise SelectorError(f"labels must index {len(classes)} classes (at least 2): {y.min()}..{y.max()}")
    w = training_weights(weights, settings.max_weight)
    if len(w) != len(x):
        raise SelectorError(f"weights and x differ in length: {len(w)} != {len(x)}")
    n, d = x.shape
    k, hidden, c = settings.members, settings.hidden, len(classes)
    mu = x.mean(axis=0, dtype=np.float64)
    sd = x.std(axis=0, dtype=np.float64)
    sd = np.where(sd > 1e-8, sd, 1.0)  # constant features (blank pixels) stay unscaled
    z = torch.from_numpy(((x - mu) / sd).astype(np.float32))
    yt, wt = torch.from_numpy(y), torch.from_numpy(w)

    gen = torch.Generator().manual_seed(settings.seed)
    params = [
        torch.randn(k, d, hidden, generator=gen) * math.sqrt(2.0 / d),  # He initialization for ReLU
        torch.zeros(k, hidden),
        torch.randn(k, hidden, c, generator=gen) * math.sqrt(1.0 / hidden),
        torch.zeros(k, c),
    ]
    for p in params:
        p.requires_grad_()
    optimizer = torch.optim.Adam(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    batch = min(settings.batch_size, n)
    for _ in range(settings.epochs):
        order = torch.argsort(torch.rand(k, n, generator=gen), dim=1)  # each member its own shuffle
        for start in range(0, n, batch):
            idx = order[:, start : start + batch]
            logits = _logits(z[idx], *params)
            ce = torch.nn.functional.cross_entropy(
                logits.reshape(-1, c), yt[idx].reshape(-1), reduction="none"
            )
            # Each member's weighted mean over its batch, summed over members (their gradients are separate).
            loss = (wt[idx].reshape(-1) * ce).sum() / idx.shape[1]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()

    w1, b1, w2, b2 = (p.detach().numpy().astype(np.float64) for p in params)
    # (x - mu) / sd @ w1 + b1 == x @ (w1 / sd) + (b1 - (mu / sd) @ w1)
    folded_w1 = w1 / sd[None, :, None]
    folded_b1 = b1 - np.einsum("d,kdh->kh", mu / sd, w1)
    return Ensemble(
        folded_w1.astype(np.float32),
        folded_b1.astype(np.float32),
        w2.astype(np.float32),
        b2.astype(np.float32),
        list(classes),
    )


def onnx_model(ensemble: Ensemble) -> onnx.ModelProto:
    """The ensemble as an ONNX graph: input ``embedding`` [batch, d]; outputs ``probs`` [batch, C] (mean of
    the member softmaxes) and ``members`` [batch, K, C]."""
    k, d, _ = ensemble.w1.shape
    c = len(ensemble.classes)
    f32 = np.float32
    initializers = [
        numpy_helper.from_array(np.array([0], dtype=np.int64), "axis0"),
        numpy_helper.from_array(ensemble.w1.astype(f32), "w1"),
        numpy_helper.from_array(ensemble.b1[:, None, :].astype(f32), "b1"),
        numpy_helper.from_array(ensemble.w2.astype(f32), "w2"),
        numpy_helper.from_array(ensemble.b2[:, None, :].astype(f32), "b2"),
    ]
    nodes = [
        helper.make_node("Unsqueeze", ["embedding", "axis0"], ["x"]),  # (1, N, d)
        helper.make_node("MatMul", ["x", "w1"], ["xw1"]),  # broadcast over members: (K, N, h)
        helper.make_node("Add", ["xw1", "b1"], ["pre"]),
        helper.make_node("Relu", ["pre"], ["hidden"]),
        helper.make_node("MatMul", ["hidden", "w2"], ["hw2"]),  # (K, N, C)
        helper.make_node("Add", ["hw2", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["member_probs"], axis=-1),
        helper.make_node("Transpose", ["member_probs"], ["members"], perm=[1, 0, 2]),  # (N, K, C)
        helper.make_node("ReduceMean", ["members"], ["probs"], axes=[1], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "selector_deep_ensemble",
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", d])],
        [
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", c]),
            helper.make_tensor_value_info("members", TensorProto.FLOAT, ["batch", k, c]),
        ],
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="selector",
        ir_version=IR_VERSION,
    )
    helper.set_model_props(
        model,
        {
            "classes": json.dumps(ensemble.classes),
            "members": str(k),
            "embedding_dim": str(d),
            "producer": "selector",
        },
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def export_onnx(ensemble: Ensemble, path: str | Path) -> bytes:
    """Write the ensemble's ONNX graph to ``path`` (a temporary file renamed over it); returns its bytes."""
    data: bytes = onnx_model(ensemble).SerializeToString()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return data


def run_onnx(onnx_bytes: bytes, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """onnxruntime's ``probs`` (n, C) and ``members`` (n, K, C) for embeddings ``x``."""
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    probs, members = session.run(["probs", "members"], {"embedding": np.asarray(x, dtype=np.float32)})
    return probs, members


def parity(ensemble: Ensemble, onnx_bytes: bytes, x_sample: np.ndarray) -> float:
    """Largest absolute difference between onnxruntime's outputs (both) and torch's forward pass."""
    x = np.asarray(x_sample, dtype=np.float32)
    with torch.no_grad():
        weights = [torch.from_numpy(a) for a in (ensemble.w1, ensemble.b1, ensemble.w2, ensemble.b2)]
        xs = torch.from_numpy(x).expand(ensemble.members, -1, -1)
        members = torch.softmax(_logits(xs, *weights), dim=-1).permute(1, 0, 2).numpy()
    probs, onnx_members = run_onnx(onnx_bytes, x)
    return float(max(np.abs(probs - members.mean(axis=1)).max(), np.abs(onnx_members - members).max()))


@dataclass(frozen=True)
class RetrainResult:
    """One :func:`retrain` run: the registered version and why it was or was not promoted."""

    version: str
    promoted: bool
    reason: str
    """the gate's verdict in one line (:meth:`selector.quality.evaluation.GateVerdict.describe`)"""
    metrics: dict[str, float]
    """:meth:`selector.quality.evaluation.GateVerdict.metrics` (candidate_/current_ value, difference, low
    and high of macro_f1, accuracy and each defect class's recall; holdout and holdout_effective), plus
    holdout_effective_raw (of the untrimmed ``1 / pi``), train and parity"""
    path: Path


def retrain(
    examples: Sequence[Example],
    classes: list[str],
    registry: ModelRegistry,
    settings: TrainSettings | None = None,
    *,
    holdout_share: float = 0.2,
    min_examples: int = 50,
    min_improvement: float = 0.0,
    min_holdout_effective: float = 30.0,
    gate_weight_cap: float | None = 10.0,
    defects: Sequence[bool] | None = None,
    now: float,
) -> RetrainResult:
    """Train a candidate on the labeled examples, gate it against the current model, register it.

    1. Keep the examples with an embedding and a known label; split them by :func:`holdout_mask` (only
       human labels are ever held out: pseudo-labels and imported seed examples only train).
    2. Train an ensemble on the rest with importance weights; export it; check onnxruntime against torch.
    3. Predict the holdout with the candidate and the current model: the registry's promoted version run
       with onnxruntime or, before the first promotion, the deployed model as recorded (each example's
       ``predicted`` class).
    4. Judge them paired on the same held-out labels (:func:`selector.quality.evaluation.promotion_gate`),
       each weighted by ``1 / pi`` trimmed at ``gate_weight_cap`` times the median weight: promote only if
       the held-out labels' effective size is at least ``min_holdout_effective``, the lower bound of the
       macro-F1 difference exceeds ``min_improvement`` and no defect class (``defects``, one flag per class;
       default every class but the first) credibly loses recall. Register the candidate either way
       (``rejected`` ones keep their metrics and the verdict).

    Raises:
        SelectorError: fewer than ``min_examples`` training examples, an empty holdout, embeddings of
            different lengths, or a parity difference above :data:`PARITY_TOLERANCE`.
    """
    settings = settings or TrainSettings()
    flags = [False] + [True] * (len(classes) - 1) if defects is None else list(defects)
    if len(flags) != len(classes):
        raise SelectorError(f"defects needs one flag per class ({len(classes)}), got {len(flags)}")
    index = {name: i for i, name in enumerate(classes)}
    usable = [e for e in examples if e.embedding is not None and e.label in index]
    lengths = Counter(len(e.embedding or ()) for e in usable)
    if len(lengths) > 1:
        raise SelectorError(
            f"labeled embeddings differ in length ({dict(lengths)} examples by length); "
            "retrain on examples from one embedding model"
        )
    # pseudo-labels and seed examples only ever train: the gate judges on human labels
    human = np.array([e.source == "human" for e in usable], dtype=bool)
    held = holdout_mask([e.id for e in usable], holdout_share) & human
    n_train, n_holdout = int((~held).sum()), int(held.sum())
    if n_train < min_examples:
        raise SelectorError(
            f"retrain needs at least {min_examples} labeled examples with an embedding outside the holdout, "
            f"got {n_train} (of {len(examples)} labeled, {len(usable)} usable); "
            "label more items or lower 'retrain.min_examples'"
        )
    if n_holdout == 0:
        raise SelectorError(
            f"retrain: the holdout is empty ({len(usable)} usable examples, holdout_share {holdout_share}); "
            "label more items or raise 'retrain.holdout_share'"
        )
    x = np.asarray([e.embedding for e in usable], dtype=np.float32)
    y = np.asarray([index[e.label] for e in usable], dtype=np.int64)
    weight = np.asarray([e.weight for e in usable], dtype=np.float64)
    recorded = np.asarray([index.get(e.predicted, -1) for e in usable], dtype=np.int64)

    ensemble = train_ensemble(x[~held], y[~held], weight[~held], classes, settings)
    data = onnx_model(ensemble).SerializeToString()
    gap = parity(ensemble, data, np.concatenate([x[held][:256], x[~held][:256]]))
    if gap > PARITY_TOLERANCE:
        raise SelectorError(f"exported model differs from torch by {gap:.2e} (limit {PARITY_TOLERANCE:.0e})")

    current = registry.current()
    baseline, current_pred = _current_predictions(registry, current, classes, x[held], recorded[held])
    candidate_pred = run_onnx(data, x[held])[0].argmax(axis=1)
    verdict = promotion_gate(
        y[held],
        candidate_pred,
        current_pred,
        trimmed_weights(weight[held], gate_weight_cap),
        flags,
        min_improvement=min_improvement,
        min_effective=min_holdout_effective,
    )
    metrics = {
        **verdict.metrics(classes),
        "holdout_effective_raw": kish_effective_n(weight[held]),
        "train": float(n_train),
        "parity": gap,
    }
    by_label = Counter(e.label for e in usable)
    fields = {
        "parent": current,
        "created_at": now,
        "classes": list(classes),
        "embedding_dim": ensemble.embedding_dim,
        "members": ensemble.members,
        "metrics": metrics,
        "data": {
            "train": n_train,
            "holdout": n_holdout,
            "pseudo_labels": sum(e.source == "pseudo" for e in usable),
            "by_label": {name: by_label[name] for name in classes},
            "without_embedding": sum(e.embedding is None for e in examples),
            "unknown_label": sum(e.label not in index for e in examples),
        },
        "settings": {
            **asdict(settings),
            "holdout_share": holdout_share,
            "baseline": baseline,
            "min_improvement": min_improvement,
            "min_holdout_effective": min_holdout_effective,
            "gate_weight_cap": gate_weight_cap,
            "defect_classes": [c for c, f in zip(classes, flags, strict=True) if f],
        },
    }
    # The verdict names the version; another writer may take the expected number first, so it is redone.
    expected = registry.next_version()
    manifest = registry.add(
        data, {**fields, "gate": verdict.describe(expected, baseline, classes)}, promote=verdict.promote
    )
    version = manifest["version"]
    reason = verdict.describe(version, baseline, classes)
    return RetrainResult(version, verdict.promote, reason, metrics, registry.model_path(version))


def _current_predictions(
    registry: ModelRegistry, current: str | None, classes: list[str], x: np.ndarray, recorded: np.ndarray
) -> tuple[str, np.ndarray]:
    """The baseline's name and its predicted class indices on the holdout."""
    if current is None:
        return "the recorded predictions", recorded
    manifest = registry.manifest(current)
    if manifest.get("classes") != classes or manifest.get("embedding_dim") != x.shape[1]:
        # The current model cannot score these embeddings: compare with what production said instead.
        return f"the recorded predictions (current {current} takes other inputs)", recorded
    probs, _ = run_onnx(registry.verify(current), x)
    return current, probs.argmax(axis=1)
