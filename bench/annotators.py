"""Consensus of annotators of unequal quality: majority vote beside Dawid-Skene, with and without the model.

A simulated labeling desk (:func:`simulate`): 10 classes, one of them rare (1%); seven annotators, five with
symmetric errors at accuracies 0.95, 0.9, 0.8, 0.65 and 0.55, a spammer who answers at random, and a careful
annotator (0.95) who calls 70% of the rare defects ``ok``. Each item gets ``m`` votes from distinct
annotators drawn at random (``m`` fixed at 1, 2, 3 or 5, or drawn from 1-5). The model's probabilities are
the exact Bayes posterior of a Gaussian class-conditional model (so calibrated by construction, top-1
accuracy about 0.85), or those sharpened by temperature 0.5 (overconfident).

Contenders, all through :func:`selector.quality.consensus.consensus` with ``quorum`` 1:

- **majority**: ``method="majority"`` (what the store does today);
- **Dawid-Skene**: ``method="dawid_skene"``;
- **DS + model**: Dawid-Skene with the calibrated model's probabilities as the item prior;
- **DS + overconfident model**: the same with the sharpened probabilities.

Measured per scenario and contender, over seeds: the accuracy of the consensus labels (items with a label;
``coverage`` is their share: a tie leaves an item without one), the share of all items labeled correctly,
the accuracy on the items majority vote labels (the same items for every contender), the recall of the rare
class, how weak flags (``weak_below`` 0.8, ``max_votes`` high so every item can be flagged) concentrate the
errors (the error rate
among flagged and unflagged items, and the share of all errors that are flagged), the bias the consensus
puts into the model's measured accuracy (model accuracy against the consensus minus against the truth: a
consensus that leans on the model flatters it), and for Dawid-Skene the mean absolute error of the
annotators' estimated accuracies. Then the time to resolve 100,000 items voted on by 20 annotators.

Run: ``.venv/bin/python -m bench.annotators`` (``--quick``: fewer items and seeds).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bench.markdown import table
from selector.arrays import FloatArray, IntArray
from selector.quality.consensus import Consensus, consensus
from selector.quality.labels import LabelBook, Vote

CLASSES = ["ok", "scratch", "dent", "crack", "stain", "chip", "burr", "warp", "pit", "void"]
CLASS_PRIOR = np.array([0.5, 0.1, 0.08, 0.07, 0.06, 0.05, 0.05, 0.04, 0.04, 0.01])
RARE = len(CLASSES) - 1
"""``void``, 1% of items: the rare defect."""

ACCURACIES = {"a95": 0.95, "a90": 0.9, "a80": 0.8, "a65": 0.65, "a55": 0.55}
"""Annotators with symmetric errors (a wrong answer is any other class, evenly)."""
MISSER = "misser"
MISSER_ACCURACY, MISSER_MISSES = 0.95, 0.7
"""Accurate, except that 70% of rare defects are called ``ok``."""
SPAMMER = "spammer"
"""Answers uniformly at random."""

SCENARIOS: dict[str, tuple[int, int]] = {"1 vote": (1, 1), "2 votes": (2, 2), "3 votes": (3, 3),
                                         "5 votes": (5, 5), "1-5 votes": (1, 5)}  # fmt: skip
"""Votes per item: (fewest, most), drawn uniformly."""

MODEL_DIM, MODEL_SPREAD = 8, 1.45
"""The model's features: class means at distance about 2 x MODEL_SPREAD in 8 dimensions, unit noise."""
OVERCONFIDENT_TEMPERATURE = 0.5
WEAK_BELOW = 0.8


@dataclass(frozen=True)
class Desk:
    """One simulated set: true classes, the votes (as a book), the model's probabilities, the annotators'
    true accuracies (on this class mix)."""

    truth: IntArray
    book: LabelBook
    model: dict[str, FloatArray]
    overconfident: dict[str, FloatArray]
    accuracy: dict[str, float]


def confusions(k: int) -> dict[str, FloatArray]:
    """Every annotator's true confusion matrix (rows: true class)."""
    out = {}
    for name, acc in ACCURACIES.items():
        out[name] = np.full((k, k), (1 - acc) / (k - 1))
        np.fill_diagonal(out[name], acc)
    out[SPAMMER] = np.full((k, k), 1.0 / k)
    misser = np.full((k, k), (1 - MISSER_ACCURACY) / (k - 1))
    np.fill_diagonal(misser, MISSER_ACCURACY)
    hit = MISSER_ACCURACY * (1 - MISSER_MISSES)  # on a rare defect: 70% of the right answers become ok
    misser[RARE] = (1 - hit - MISSER_MISSES) / (k - 2)
    misser[RARE, RARE], misser[RARE, 0] = hit, MISSER_MISSES
    out[MISSER] = misser
    for name, m in out.items():  # every row a distribution over what the annotator says
        assert np.all(m >= 0) and np.allclose(m.sum(axis=1), 1.0), name
    return out


def simulate(n: int, votes: tuple[int, int], seed: int) -> Desk:
    """``n`` items, each voted on by ``votes`` (fewest, most) distinct annotators drawn at random."""
    rng = np.random.default_rng(seed)
    k = len(CLASSES)
    truth = rng.choice(k, size=n, p=CLASS_PRIOR)
    conf = confusions(k)
    names = sorted(conf)
    cum = {name: np.cumsum(m, axis=1) for name, m in conf.items()}
    m = rng.integers(votes[0], votes[1] + 1, size=n)
    pick = np.argsort(rng.random((n, len(names))), axis=1)  # a random order of annotators per item
    u = rng.random((n, len(names)))
    said = np.empty((n, len(names)), dtype=np.int64)
    for j, name in enumerate(names):
        said[:, j] = (u[:, j, None] > cum[name][truth]).sum(axis=1)
    said = np.minimum(said, k - 1)
    ids = [f"i{i}" for i in range(n)]
    book: dict[str, dict[str, Vote]] = {}
    for i, rid in enumerate(ids):
        book[rid] = {names[j]: (CLASSES[said[i, j]], 0.0) for j in pick[i, : m[i]]}
    means = rng.normal(size=(k, MODEL_DIM))
    means *= MODEL_SPREAD / np.linalg.norm(means, axis=1, keepdims=True) * np.sqrt(2)
    x = means[truth] + rng.normal(size=(n, MODEL_DIM))
    logp = np.log(CLASS_PRIOR) - 0.5 * ((x[:, None, :] - means[None]) ** 2).sum(axis=2)
    model = softmax(logp)
    sharp = softmax(logp / OVERCONFIDENT_TEMPERATURE)
    accuracy = {name: float(CLASS_PRIOR @ np.diag(c)) for name, c in conf.items()}
    return Desk(truth, LabelBook(book), dict(zip(ids, model, strict=True)),
                dict(zip(ids, sharp, strict=True)), accuracy)  # fmt: skip


def softmax(logits: FloatArray) -> FloatArray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    out: FloatArray = z / z.sum(axis=1, keepdims=True)
    return out


def scores(desk: Desk, c: Consensus, majority: Consensus) -> dict[str, float]:
    """What one contender got on one set (``majority``: which items majority vote labels)."""
    n = len(desk.truth)
    index = {name: k for k, name in enumerate(CLASSES)}
    got = np.array([index.get(c.items[f"i{i}"].label or "", -1) for i in range(n)])
    weak = np.array([c.items[f"i{i}"].weak for i in range(n)])
    labeled = got >= 0
    by_majority = np.array([majority.items[f"i{i}"].label is not None for i in range(n)])
    wrong = labeled & (got != desk.truth)
    model_pred = np.array([int(np.argmax(desk.model[f"i{i}"])) for i in range(n)])
    rare = desk.truth == RARE
    out = {
        "accuracy": float((got == desk.truth)[labeled].mean()),
        "coverage": float(labeled.mean()),
        "correct": float((got == desk.truth).mean()),
        "on_majority": float((got == desk.truth)[by_majority].mean()),
        "rare_recall": float((got[rare] == RARE).mean()) if rare.any() else float("nan"),
        "flagged": float(weak.mean()),
        "err_flagged": float(wrong[weak].sum() / max(1, (labeled & weak).sum())),
        "err_unflagged": float(wrong[~weak].sum() / max(1, (labeled & ~weak).sum())),
        "errors_caught": float(wrong[weak].sum() / max(1, wrong.sum())),
        "model_bias": float((model_pred == got)[labeled].mean() - (model_pred == desk.truth)[labeled].mean()),
    }
    if c.method == "dawid_skene":
        est = [abs(r.estimated_accuracy - desk.accuracy[name]) for name, r in c.annotators.items()]
        out["accuracy_mae"] = float(np.mean(est))
    return out


def contenders(desk: Desk) -> dict[str, Consensus]:
    common = {"weak_below": WEAK_BELOW, "max_votes": 100}
    return {
        "majority": consensus(desk.book, CLASSES, method="majority", **common),
        "Dawid-Skene": consensus(desk.book, CLASSES, **common),
        "DS + model": consensus(desk.book, CLASSES, model_probs=desk.model, **common),
        "DS + overconfident model": consensus(desk.book, CLASSES, model_probs=desk.overconfident, **common),
    }


def quality(n: int, seeds: Sequence[int]) -> str:
    rows = []
    for scenario, votes in SCENARIOS.items():
        runs: dict[str, list[dict[str, float]]] = {}
        for seed in seeds:
            desk = simulate(n, votes, seed)
            resolved = contenders(desk)
            for name, c in resolved.items():
                runs.setdefault(name, []).append(scores(desk, c, resolved["majority"]))
        for name, got in runs.items():
            mean = {key: float(np.mean([g[key] for g in got])) for key in got[0]}
            accs = [g["accuracy"] for g in got]
            rows.append(
                [
                    scenario,
                    name,
                    f"{mean['accuracy']:.3f} ({min(accs):.3f}-{max(accs):.3f})",
                    f"{mean['coverage']:.3f}",
                    f"{mean['correct']:.3f}",
                    f"{mean['on_majority']:.3f}",
                    f"{mean['rare_recall']:.2f}",
                    f"{mean['flagged']:.1%}",
                    f"{mean['err_flagged']:.1%} / {mean['err_unflagged']:.1%}",
                    f"{mean['errors_caught']:.0%}",
                    f"{mean['model_bias']:+.3f}",
                    f"{mean['accuracy_mae']:.3f}" if "accuracy_mae" in mean else "-",
                ]
            )
    headers = ["Votes/item", "Consensus", "Accuracy mean (min-max)", "Coverage", "Correct of all items",
               "Accuracy where majority labels", "Rare recall", "Flagged weak",
               "Error rate flagged / unflagged", "Errors flagged", "Model-accuracy bias",
               "Annotator accuracy MAE"]  # fmt: skip
    return table(headers, rows, "llrrrrrrrrrr")


def speed(n: int, annotators: int, votes: int, repeats: int) -> list[str]:
    """Seconds to resolve ``n`` items with ``votes`` votes each from ``annotators`` annotators."""
    rng = np.random.default_rng(0)
    k = len(CLASSES)
    truth = rng.choice(k, size=n, p=CLASS_PRIOR)
    names = [f"ann{j:02d}" for j in range(annotators)]
    acc = rng.uniform(0.55, 0.95, size=annotators)
    pick = np.argsort(rng.random((n, annotators)), axis=1)[:, :votes]
    right = rng.random((n, votes)) < acc[pick]
    wrong = (truth[:, None] + rng.integers(1, k, size=(n, votes))) % k
    said = np.where(right, truth[:, None], wrong)
    book = LabelBook(
        {f"i{i}": {names[pick[i, v]]: (CLASSES[said[i, v]], 0.0) for v in range(votes)} for i in range(n)}
    )
    out = []
    for method in ("majority", "dawid_skene"):
        wall = cpu = np.inf
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            c = consensus(book, CLASSES, method=method)  # type: ignore[arg-type]
            wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
        its = f", {c.iterations} EM iterations" if method == "dawid_skene" else ""
        out.append(
            f"{n:,} items x {annotators} annotators, {votes} votes each, {method}: {cpu:.2f} s CPU "
            f"({wall:.2f} s wall){its}"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer items and seeds")
    args = parser.parse_args()
    n, seeds = (3_000, range(2)) if args.quick else (20_000, range(5))
    print(f"## Consensus of annotators ({n:,} items per set, seeds {list(seeds)})\n")
    print(quality(n, list(seeds)))
    print()
    for line in speed(20_000 if args.quick else 100_000, 20, 3, 1 if args.quick else 3):
        print(f"- {line}")
    if not args.quick:
        for line in speed(100_000, 20, 20, 1):
            print(f"- {line}")


if __name__ == "__main__":
    main()
