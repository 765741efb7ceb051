"""Labeled streams with one rare class, from data shipped inside river (bundled files and generators).

Every stream is a sequence of ``n`` items (scaled features, a class index, a time in seconds) in which one
class (the *rare* class, the defect) makes up ``share`` of the items, a small seed set (two labels per class,
outside the stream and the budget) that the learner starts from, and a held-out test set for the final
learner's macro-F1:

- **bundled** (river's ImageSegments, Phishing, Bananas; stationary): each dataset is split per class,
  70% to a pool and 30% to the test set (every class at its natural frequency, so the rare class is
  measured on enough items); the stream draws ``share n`` rare items and the rest from the pool's other
  classes, with replacement, in a seeded random order. These files hold 1,250 to 5,300 items: a stream of
  10,000 repeats pool items, as a production line repeats near-identical parts.
- **synthetic** (river's generators): slot ``i`` is rare with probability ``share``; it takes the next
  generated item of the wanted kind from the concept in force (a rare slot takes the newest rare item,
  older ones are dropped, so the stream stays in time order). Concept drift: from concept A to concept B
  around the middle of the stream, B chosen with probability ``sigmoid(4 (i - n/2) / width)`` as river's
  ``ConceptDriftStream`` does (Agrawal function 1 -> 2; LED -> LEDDrift with its 7 relevant features
  swapped), or a continuous drift of every centroid (RandomRBFDrift). The test set comes from the last
  concept, at its natural class balance.

Features are standardized with the mean and deviation of the stream's own items (unlabeled data).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

ITEMS_PER_S = 1.0
"""Stream time: one item a second, so the shipped hourly cap (1,000) never binds at a 10% budget."""

SEED_PER_CLASS = 2
TEST_SHARE = 0.3
TEST_ITEMS = 3_000
"""Held-out items generated after a synthetic stream."""

DRIFT_WIDTH = 500
"""Items over which a synthetic concept change blends in (river's ``ConceptDriftStream`` ``width``)."""


@dataclass(frozen=True)
class Stream:
    """One labeled stream: the items in order, the seed set, the test set and what is rare."""

    name: str
    x: np.ndarray
    y: np.ndarray
    t: np.ndarray
    seed_x: np.ndarray
    seed_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    n_classes: int
    rare: int
    drift_at: int | None
    """first item of the new concept (None: stationary; the second half is reported instead)"""

    def __len__(self) -> int:
        return len(self.y)

    @property
    def after(self) -> int:
        """First item of the stretch reported as "after the drift"."""
        return self.drift_at if self.drift_at is not None else len(self) // 2


@dataclass(frozen=True)
class Spec:
    """How to build one stream: its builder, the rare class and its share, and whether it drifts."""

    build: Callable[[int, float, int, int], Stream]
    rare: int
    share: float
    drift: str


def _rows(pairs: Iterator[tuple[dict[str, Any], Any]]) -> tuple[np.ndarray, list[Any]]:
    xs, ys = [], []
    keys: list[str] | None = None
    for x, y in pairs:
        keys = keys or list(x)
        xs.append([float(x[k]) for k in keys])
        ys.append(y)
    return np.asarray(xs, dtype=np.float64), ys


def _scaled(stream: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mean = stream.mean(axis=0)
    std = stream.std(axis=0)
    std[std == 0] = 1.0
    return [(a - mean) / std for a in (stream, *others)]


def _seed_set(y: np.ndarray, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    return np.concatenate(
        [rng.choice(np.flatnonzero(y == c), SEED_PER_CLASS, replace=False) for c in range(n_classes)]
    )


def bundled(dataset: str) -> Callable[[int, float, int, int], Stream]:
    """A builder of streams from one of river's bundled datasets (a name in ``river.datasets``)."""

    def build(n: int, share: float, rare: int, seed: int) -> Stream:
        from river import datasets  # noqa: PLC0415 (bench extra; the harness and its test run without it)

        x_all, labels = _rows(iter(getattr(datasets, dataset)()))
        names = sorted(set(labels), key=str)
        y_all = np.asarray([names.index(v) for v in labels], dtype=np.int64)
        rng = np.random.default_rng(seed)
        test = np.concatenate(
            [
                (idx := rng.permutation(np.flatnonzero(y_all == c)))[: round(TEST_SHARE * len(idx))]
                for c in range(len(names))
            ]
        )
        pool = np.setdiff1d(np.arange(len(y_all)), test)
        n_rare = round(share * n)
        rare_pool, other_pool = pool[y_all[pool] == rare], pool[y_all[pool] != rare]
        drawn = np.concatenate([rng.choice(rare_pool, n_rare), rng.choice(other_pool, n - n_rare)])[
            rng.permutation(n)
        ]
        seed_idx = pool[_seed_set(y_all[pool], len(names), rng)]
        x, seed_x, test_x = _scaled(x_all[drawn], x_all[seed_idx], x_all[test])
        return Stream(
            dataset.lower(),
            x,
            y_all[drawn],
            np.arange(n) / ITEMS_PER_S,
            seed_x,
            y_all[seed_idx],
            test_x,
            y_all[test],
            len(names),
            rare,
            None,
        )

    return build


class _Source:
    """One concept's generated items, split by kind (rare or not), consumed in time order."""

    def __init__(self, generator: Iterator[tuple[dict[str, Any], Any]], rare: int) -> None:
        self._gen = generator
        self._rare = rare
        self._others: list[tuple[dict[str, Any], Any]] = []
        self._newest_rare: tuple[dict[str, Any], Any] | None = None

    def _pull(self) -> None:
        x, y = next(self._gen)
        if int(y) == self._rare:
            self._newest_rare = (x, y)
        else:
            self._others.append((x, y))

    def take(self, rare: bool) -> tuple[dict[str, Any], Any]:
        if rare:
            while self._newest_rare is None:
                self._pull()
            item, self._newest_rare = self._newest_rare, None
            return item
        while not self._others:
            self._pull()
        return self._others.pop(0)


def synthetic(
    name: str, concepts: Callable[[int], list[Iterator[tuple[dict[str, Any], Any]]]], n_classes: int
) -> Callable[[int, float, int, int], Stream]:
    """A builder of streams from river generators: ``concepts(seed)`` gives one (no switch) or two (A, B)
    fresh iterators; the first also yields the seed set, the last the test set."""

    def build(n: int, share: float, rare: int, seed: int) -> Stream:
        gens = concepts(seed)
        rng = np.random.default_rng(seed)
        seed_pairs: list[tuple[dict[str, Any], Any]] = []
        need = dict.fromkeys(range(n_classes), SEED_PER_CLASS)
        while any(need.values()):
            x, y = next(gens[0])
            if need[int(y)]:
                need[int(y)] -= 1
                seed_pairs.append((x, y))
        sources = [_Source(g, rare) for g in gens]
        pairs = []
        for i in range(n):
            c = 0
            if len(sources) > 1:
                c = int(rng.random() < 1.0 / (1.0 + math.exp(-4.0 * (i - n / 2) / DRIFT_WIDTH)))
            pairs.append(sources[c].take(bool(rng.random() < share)))
        x, labels = _rows(iter(pairs))
        seed_x, seed_labels = _rows(iter(seed_pairs))
        test_x, test_labels = _rows(itertools.islice(gens[-1], TEST_ITEMS))
        x, seed_x, test_x = _scaled(x, seed_x, test_x)
        return Stream(
            name,
            x,
            np.asarray(labels, dtype=np.int64),
            np.arange(n) / ITEMS_PER_S,
            seed_x,
            np.asarray(seed_labels, dtype=np.int64),
            test_x,
            np.asarray(test_labels, dtype=np.int64),
            n_classes,
            rare,
            n // 2 if len(sources) > 1 else None,
        )

    return build


def _agrawal(seed: int) -> list[Iterator[tuple[dict[str, Any], Any]]]:
    from river.datasets import synth  # noqa: PLC0415

    return [iter(synth.Agrawal(1, seed=seed)), iter(synth.Agrawal(2, seed=seed + 1000))]


def _rbf(seed: int) -> list[Iterator[tuple[dict[str, Any], Any]]]:
    from river.datasets import synth  # noqa: PLC0415

    gen = synth.RandomRBFDrift(
        seed_model=seed,
        seed_sample=seed,
        n_classes=4,
        n_features=10,
        n_centroids=20,
        change_speed=1e-4,
        n_drift_centroids=20,
    )
    return [iter(gen)]


def _led(seed: int) -> list[Iterator[tuple[dict[str, Any], Any]]]:
    from river.datasets import synth  # noqa: PLC0415

    before = synth.LEDDrift(seed=seed, noise_percentage=0.1, irrelevant_features=True, n_drift_features=0)
    after = synth.LEDDrift(
        seed=seed + 1000, noise_percentage=0.1, irrelevant_features=True, n_drift_features=7
    )
    return [iter(before), iter(after)]


STREAMS: dict[str, Spec] = {
    "imagesegments": Spec(bundled("ImageSegments"), 1, 0.02, "none"),  # cement, confused with others
    "phishing": Spec(bundled("Phishing"), 1, 0.03, "none"),  # phishing sites
    "bananas": Spec(bundled("Bananas"), 1, 0.01, "none"),
    "agrawal": Spec(synthetic("agrawal", _agrawal, 2), 1, 0.02, "concept: function 1 -> 2 at n/2"),
    "rbf": Spec(synthetic("rbf", _rbf, 4), 0, 0.03, "every centroid moves (1e-4 per item)"),
    "led": Spec(synthetic("led", _led, 10), 8, 0.01, "concept: 7 features swapped at n/2"),
}
"""Stream name -> how it is built (rare class index, its share of the stream, the drift)."""


def make(name: str, n: int, seed: int) -> Stream:
    """Stream ``name`` (a key of :data:`STREAMS`) of ``n`` items, seeded."""
    spec = STREAMS[name]
    return spec.build(n, spec.share, spec.rare, seed)
