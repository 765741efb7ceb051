"""The selection policies of the learning-loop benchmark, each behind one small interface.

A policy sees one batch of items at a time (their scaled features, the shared learner's probabilities, their
times and ids) and says which it sends for labeling; it never sees a label except those it bought. Ours go
through the product's public path: a :class:`selector.routing.Router` built from a configuration,
``decide`` then ``commit``, and the labels reported back with ``labels_received``; an item is labeled when it
is routed ``query`` or ``audit``. scikit-activeml's stream strategies get the same learner's probabilities
through a decision-only adapter (:class:`FixedClassifier`); river's ``EntropySampler`` gets them through a
classifier that returns them. ``random, exact`` labels ``round(r n)`` items drawn uniformly: the reference
every macro-F1 gain is measured against.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from sklearn.linear_model import LogisticRegression

from selector.config import parse_config
from selector.messages.prediction import Batch
from selector.routing import AUDIT, QUERY, Router

SHARE_OF_RARE = 0.3
"""``budget.class_shares`` of the rare class in the reserved-share policy (the issue's example)."""


class Learner:
    """The shared learner: multinomial logistic regression, refit from scratch on every label so far, each
    class weighed inversely to its count among the labels (without it, a 1% class is never predicted)."""

    def __init__(self, n_classes: int) -> None:
        self.n_classes = n_classes
        self.model = LogisticRegression(max_iter=300, class_weight="balanced")

    def fit(self, x: np.ndarray, y: np.ndarray) -> None:
        self.model.fit(x, y)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Probabilities over every class (a class never labeled gets 0)."""
        out = np.zeros((len(x), self.n_classes))
        out[:, self.model.classes_] = self.model.predict_proba(x)
        return out

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(x))


@dataclass(frozen=True)
class Context:
    """What a policy may read about one batch."""

    x: np.ndarray
    probs: np.ndarray
    t: np.ndarray
    ids: list[str]
    learner: Learner
    labeled: Callable[[], tuple[np.ndarray, np.ndarray]]
    """every label bought so far (seed set included): features and classes"""


class Policy(Protocol):
    def decide(self, ctx: Context) -> np.ndarray:
        """Which items of the batch to label (a boolean mask)."""


@dataclass(frozen=True)
class Cell:
    """What a policy factory may know before the stream starts."""

    rate: float
    seed: int
    n_items: int
    n_classes: int
    dim: int
    rare: int


Factory = Callable[[Cell], Policy]


class SelectorPolicy:
    """The product: ``Router.decide`` + ``commit`` per batch, labels reported back at once."""

    def __init__(self, config: dict[str, Any], cell: Cell) -> None:
        self.config = parse_config(config)
        self.router = Router(self.config)
        self.vectors = self.config.input.embedding_dim is not None

    def decide(self, ctx: Context) -> np.ndarray:
        n = len(ctx.ids)
        batch = Batch(
            position=np.arange(n, dtype=np.int64),
            ids=ctx.ids,
            probs=ctx.probs,
            ts_s=ctx.t,
            model=[None] * n,
            segment=[None] * n,
            payload=[None] * n,
            meta=[None] * n,
            embedding=ctx.x.tolist() if self.vectors else [],
            vectors=ctx.x if self.vectors else None,
        )
        decisions = self.router.decide(0, batch, ctx.t)
        self.router.commit(0, decisions)
        labeled: np.ndarray = (decisions.route == QUERY) | (decisions.route == AUDIT)
        self.router.labels_received([i for i, b in zip(ctx.ids, labeled.tolist(), strict=True) if b])
        return labeled


def selector_config(cell: Cell, embeddings: bool = False, **sections: dict[str, Any]) -> dict[str, Any]:
    """The shipped defaults (config.yaml's measure and budget settings) with the cell's rate and classes,
    the scaled features as embeddings if asked; ``sections`` set keys of other config sections."""
    budget = {"rate": cell.rate, **sections.pop("budget", {})}
    out: dict[str, Any] = {"classes": [f"c{i}" for i in range(cell.n_classes)], "budget": budget}
    if embeddings:
        out["input"] = {"embedding_dim": cell.dim}
    return {**out, **sections}


def selector(embeddings: bool = False, **sections: dict[str, Any]) -> Factory:
    """A factory of our policy with the shipped defaults and ``sections`` (see :func:`selector_config`)."""
    return lambda cell: SelectorPolicy(selector_config(cell, embeddings, **dict(sections)), cell)


def rare_share(cell: Cell) -> Policy:
    config = selector_config(cell, budget={"class_shares": {f"c{cell.rare}": SHARE_OF_RARE}})
    return SelectorPolicy(config, cell)


class ExactRandom:
    """``round(r n)`` items of the stream, drawn uniformly without replacement before it starts."""

    def __init__(self, cell: Cell) -> None:
        rng = np.random.default_rng([cell.seed, 7])
        self.chosen = np.zeros(cell.n_items, dtype=bool)
        self.chosen[rng.choice(cell.n_items, round(cell.rate * cell.n_items), replace=False)] = True
        self.pos = 0

    def decide(self, ctx: Context) -> np.ndarray:
        out = self.chosen[self.pos : self.pos + len(ctx.ids)]
        self.pos += len(ctx.ids)
        return out


class EntropySampler:
    """river's ``active.EntropySampler`` deciding on the learner's probabilities (it has no budget: its
    ``discount_factor`` is left at river's default, 3)."""

    def __init__(self, cell: Cell) -> None:
        from river import active, base  # noqa: PLC0415 (bench extra)

        class Given(base.Classifier):  # type: ignore[misc]
            current: dict[int, float] = {}  # noqa: RUF012 (set per item below)

            def learn_one(self, x: Any, y: Any) -> None:
                return None

            def predict_proba_one(self, x: Any, **kwargs: Any) -> dict[int, float]:
                return self.current

        self.given = Given()
        self.sampler = active.EntropySampler(self.given, seed=cell.seed)

    def decide(self, ctx: Context) -> np.ndarray:
        out = np.zeros(len(ctx.ids), dtype=bool)
        for i, row in enumerate(ctx.probs.tolist()):
            self.given.current = dict(enumerate(row))
            out[i] = self.sampler.predict_proba_one({})[1]
        return out


def _skactiveml_adapter(learner: Learner) -> Any:
    from skactiveml.base import SkactivemlClassifier  # noqa: PLC0415 (bench extra)

    class FixedClassifier(SkactivemlClassifier):  # type: ignore[misc]
        """The shared learner as scikit-activeml's strategies read it (``fit_clf=False``: never refit)."""

        def __init__(self, classes: Any = None, missing_label: Any = -1) -> None:
            super().__init__(classes=classes, missing_label=missing_label)

        def fit(self, X: Any, y: Any, sample_weight: Any = None) -> FixedClassifier:  # noqa: N803
            raise NotImplementedError("the shared learner is refit by the harness only")

        def predict_proba(self, X: Any) -> np.ndarray:  # noqa: N803
            return learner.predict_proba(np.asarray(X))

    return FixedClassifier(classes=np.arange(learner.n_classes))


class SkactivemlStrategy:
    """One of scikit-activeml's stream strategies: ``query`` on the batch, then ``update`` (which commits)."""

    def __init__(self, name: str, cell: Cell) -> None:
        from skactiveml import stream  # noqa: PLC0415 (bench extra)

        self.name = name
        if name == "pal":
            self.qs: Any = stream.StreamProbabilisticAL(
                metric="rbf", budget=cell.rate, random_state=cell.seed
            )
        elif name == "variable":
            self.qs = stream.VariableUncertainty(budget=cell.rate, random_state=cell.seed)
        elif name == "split":
            self.qs = stream.Split(budget=cell.rate, random_state=cell.seed)
        else:
            self.qs = stream.StreamRandomSampling(budget=cell.rate, random_state=cell.seed)

    def decide(self, ctx: Context) -> np.ndarray:
        if self.name == "random":
            queried = self.qs.query(ctx.x)
            self.qs.update(ctx.x, queried)
            # its update does not advance the generator its query restores: without this every batch would
            # get the same draws
            self.qs.random_state_.random_sample(len(ctx.x))
        else:
            x_lab, y_lab = ctx.labeled() if self.name == "pal" else (None, None)
            clf = _skactiveml_adapter(ctx.learner)
            queried, utilities = self.qs.query(ctx.x, clf, X=x_lab, y=y_lab, return_utilities=True)
            self.qs.update(ctx.x, queried, budget_manager_param_dict={"utilities": utilities})
        out = np.zeros(len(ctx.ids), dtype=bool)
        out[np.asarray(queried, dtype=np.int64)] = True
        return out


class UncertaintyBIQF:
    """Least confidence ``1 - max_c p_c`` behind scikit-activeml's BalancedIncrementalQuantileFilter."""

    def __init__(self, cell: Cell) -> None:
        from skactiveml.stream.budgetmanager import BalancedIncrementalQuantileFilter  # noqa: PLC0415

        self.manager = BalancedIncrementalQuantileFilter(budget=cell.rate)

    def decide(self, ctx: Context) -> np.ndarray:
        utilities = 1.0 - ctx.probs.max(axis=1)
        queried = self.manager.query_by_utility(utilities)
        self.manager.update(ctx.x, queried, utilities=utilities)
        out = np.zeros(len(ctx.ids), dtype=bool)
        out[np.asarray(queried, dtype=np.int64)] = True
        return out


DEFAULT = "selector default (entropy)"
RESERVED = f"selector default + rare share {SHARE_OF_RARE}"
RANDOM = "random, exact rate"

OURS: dict[str, Factory] = {
    DEFAULT: selector(),
    "selector margin": selector(scoring={"measure": "margin"}),
    "selector least_confidence": selector(scoring={"measure": "least_confidence"}),
    "selector density": selector(scoring={"measure": "density"}, embeddings=True),
    "selector novelty": selector(scoring={"measure": "novelty"}, embeddings=True),
    "selector entropy + k-center": selector(diversity={"mode": "kcenter"}, embeddings=True),
    RESERVED: rare_share,
}
"""Our policies: the shipped default, the other measures, a diversity mode, a reserved share."""

ANCHORS: dict[str, Factory] = {
    "skactiveml PAL+BIQF": lambda cell: SkactivemlStrategy("pal", cell),
    "skactiveml Unc+BIQF": UncertaintyBIQF,
    "skactiveml VariableUncertainty": lambda cell: SkactivemlStrategy("variable", cell),
    "skactiveml Split": lambda cell: SkactivemlStrategy("split", cell),
}
"""scikit-activeml's stream strategies: the anchors the shipped default's macro-F1 gain is judged against."""

OTHERS: dict[str, Factory] = {
    "skactiveml random": lambda cell: SkactivemlStrategy("random", cell),
    "river EntropySampler (no budget)": EntropySampler,
    RANDOM: ExactRandom,
}


def all_policies() -> tuple[dict[str, Factory], str | None]:
    """Every policy by table name, and why the bench extra's are missing (None when present)."""
    try:
        import river  # noqa: F401, PLC0415
        import skactiveml  # noqa: F401, PLC0415
    except ImportError as exc:
        return {**OURS, RANDOM: ExactRandom}, f"the bench extra is not installed ({exc})"
    return {**OURS, **ANCHORS, **OTHERS}, None
