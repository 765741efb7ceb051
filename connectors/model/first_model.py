"""The first model: trained on the seed examples when there is nothing yet to judge a candidate against.

The promotion gate (:func:`connectors.model.trainer.retrain`) promotes a candidate only if it beats the
current model on held-out human labels. A new deployment that imported the labeled set it already had
(``selector dataset import``) has neither: no promoted model and no human label. Then ``selector retrain``
(and the demo) call :func:`train_first_model`, which trains the ensemble on every usable example (the seeds,
and pseudo-labels if any), exports it, checks onnxruntime against torch as the trainer does, and promotes it
as ``v1`` with parent null: the model the label loop will then judge every candidate against. In every
other case it returns None and the gate decides as always.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from connectors.model.dataset import DatasetStore, Example
from connectors.model.registry import ModelRegistry
from selector.config import Config
from selector.errors import SelectorError
from selector.messages.timestamps import rfc3339

WHY = "no current model and no human labels to judge it against"


@dataclass(frozen=True)
class FirstModel:
    """The promoted first model: its version, what it learned from, and its models-topic event."""

    version: str
    seeds: int
    pseudo_labels: int
    event: dict[str, Any]
    """as :func:`connectors.labels.retraining.retrain_once` returns it (``type: promoted``, parent null)"""

    def summary(self) -> str:
        """``v1 promoted as the first model (...): trained on N seed examples``."""
        return f"{self.version} promoted as {self.event['reason']}"


def train_first_model(config: Config, now: float) -> FirstModel | None:
    """Train and promote the first model on the store's seed examples when the registry has no promoted
    model and the store no human-labeled example with an embedding; else None (nothing changed).

    Imports torch: call it from a command or a trainer process, never from a poll loop.

    Raises:
        SelectorError: fewer usable examples than ``retrain.min_examples``, embeddings of different
            lengths, or a parity difference above the trainer's tolerance.
    """
    r, d = config.retrain, config.dataset
    registry = ModelRegistry(r.registry)
    if registry.current() is not None:
        return None
    store = DatasetStore(d.path)
    try:
        pseudo = d.pseudo_label_weight if d.pseudo_label_share > 0 else None
        examples = list(store.examples(d.quorum, pseudo_weight=pseudo))
    finally:
        store.close()
    index = {name: k for k, name in enumerate(config.classes)}
    usable = [e for e in examples if e.embedding is not None and e.label in index]
    by_source = Counter(e.source for e in usable)
    if by_source["human"] or not by_source["seed"]:
        return None
    return _train(config, registry, usable, by_source, examples, now)


def _train(
    config: Config,
    registry: ModelRegistry,
    usable: list[Example],
    by_source: Counter[str],
    examples: list[Example],
    now: float,
) -> FirstModel:
    from connectors.model.trainer import (  # noqa: PLC0415 (imports torch)
        PARITY_TOLERANCE,
        onnx_model,
        parity,
        settings_of,
        train_ensemble,
    )

    r, classes = config.retrain, config.classes
    if len(usable) < r.min_examples:
        raise SelectorError(
            f"the first model needs at least {r.min_examples} labeled examples with an embedding, got "
            f"{len(usable)} (seed examples: {by_source['seed']}); import more with 'selector dataset import' "
            "or lower 'retrain.min_examples'"
        )
    lengths = Counter(len(e.embedding or ()) for e in usable)
    if len(lengths) > 1:
        raise SelectorError(
            f"labeled embeddings differ in length ({dict(lengths)} examples by length); "
            "train on examples from one embedding model"
        )
    index = {name: k for k, name in enumerate(classes)}
    x = np.asarray([e.embedding for e in usable], dtype=np.float32)
    y = np.asarray([index[e.label] for e in usable], dtype=np.int64)
    w = np.asarray([e.weight for e in usable], dtype=np.float64)
    settings = settings_of(r)
    ensemble = train_ensemble(x, y, w, classes, settings)
    data = onnx_model(ensemble).SerializeToString()
    gap = parity(ensemble, data, x[:512])
    if gap > PARITY_TOLERANCE:
        raise SelectorError(f"exported model differs from torch by {gap:.2e} (limit {PARITY_TOLERANCE:.0e})")
    by_label = Counter(e.label for e in usable)
    metrics = {"train": float(len(usable)), "holdout": 0.0, "parity": gap}
    manifest = registry.add(
        data,
        {
            "parent": None,
            "created_at": now,
            "classes": list(classes),
            "embedding_dim": ensemble.embedding_dim,
            "members": ensemble.members,
            "metrics": metrics,
            "data": {
                "train": len(usable),
                "holdout": 0,
                "seeds": by_source["seed"],
                "pseudo_labels": by_source["pseudo"],
                "by_label": {name: by_label[name] for name in classes},
                "without_embedding": sum(e.embedding is None for e in examples),
                "unknown_label": sum(e.label not in index for e in examples),
            },
            "settings": {**asdict(settings), "first_model": True},
        },
        promote=True,
    )
    version = str(manifest["version"])
    pseudo = f" and {by_source['pseudo']:,} pseudo-labels" if by_source["pseudo"] else ""
    event = {
        "type": "promoted",
        "version": version,
        "parent": None,
        "sha256": manifest["sha256"],
        "reason": f"the first model ({WHY}): trained on {by_source['seed']:,} seed examples{pseudo}",
        "metrics": metrics,
        "at": rfc3339(now),
    }
    return FirstModel(version, by_source["seed"], by_source["pseudo"], event)
