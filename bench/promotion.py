"""The promotion gate, old and new, on the demo's digits: ``python bench/promotion.py [--quick] [--seeds N]``.

A simulated label loop per seed, as the demo runs it (:mod:`connectors.demo.line`: scikit-learn's digits,
the 8 rare at about 1% of the stream and the defect). A first model is trained on :data:`SEED_ITEMS` common
digits. Items are drawn from the pool in batches; the served model scores each batch, and every item is
audited with probability ``AUDIT_PI`` (0.002) and otherwise queried with a probability proportional to its
uncertainty (``1 - max prob``), scaled so the queries fill the rest of a 2% budget; a query probability below
0.05 is not drawn at all (those items can only be audited). Labels are the true digits. Each time
:data:`EVERY_LABELS` new labels have come in, a candidate is trained (the built-in trainer's ensemble, small
settings) on the seed and the labels outside the holdout (by :func:`selector.quality.evaluation.holdout_mask`,
share 0.2), then gated against the served model on the held-out labels, each weighted by ``1 / pi``:

- ``old``: the rule before issue 14: candidate macro-F1 > current macro-F1 (point estimates).
- ``new, raw 1/pi``: :func:`selector.quality.evaluation.promotion_gate` on the raw weights.
- ``new, trimmed Nx``: the same on weights trimmed at N times their median (the shipped default: N=10).

Both models are scored on the seed's independent test set (a quarter of the digits, never drawn) with
the stream's class mix (each 8 weighing ``RARE_WEIGHT``): macro-F1 and the recall of the 8. A candidate is
*worse* when it loses more than :data:`TOLERANCE` of either, *better* when it gains more than that in
macro-F1 and loses no more than that in recall. The served lineage follows the ``--lineage`` rule (default:
the shipped gate; ``"old (point macro-F1)"`` makes parents of every quality, as in the demo before the fix);
every rule judges the same (candidate, parent) pairs. Run time: a few seconds per seed on one core
(``--quick``: 3 seeds, 30,000 items each).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __name__ == "__main__":  # one BLAS thread (before numpy loads); torch is told below
    os.environ["OPENBLAS_NUM_THREADS"] = os.environ.get("OPENBLAS_NUM_THREADS", "1")
    os.environ["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench` is not installed, run as a script

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from bench.markdown import table
from connectors.demo.line import CLASSES, RARE, RARE_WEIGHT, Digits
from connectors.model.trainer import Ensemble, TrainSettings, train_ensemble
from selector.quality.evaluation import (
    holdout_mask,
    kish_effective_n,
    promotion_gate,
    trimmed_weights,
    weighted_macro_f1,
)

AUDIT_PI = 0.002
BUDGET = 0.02
MIN_QUERY_PI = 0.05
EVERY_LABELS = 150
"""the demo's ``retrain.every_labels``"""
HOLDOUT_SHARE = 0.2
TOLERANCE = 0.005
BATCH = 500
SETTINGS = TrainSettings(members=3, hidden=32, epochs=40)
DEFECT = int(RARE)
SEED_ITEMS = 40
"""the demo's first model's labels (``connectors.demo.run.SEED_ITEMS``)"""
DEFECTS = np.array([c == RARE for c in CLASSES])

Rule = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], bool]
"""(true labels, candidate's predictions, current's predictions, 1/pi weights) -> promote"""


def old_rule(y: np.ndarray, cand: np.ndarray, curr: np.ndarray, w: np.ndarray) -> bool:
    """The gate before issue 14 (copied): point macro-F1 above the current one's (min_improvement 0)."""
    return weighted_macro_f1(y, cand, w, len(CLASSES)) > weighted_macro_f1(y, curr, w, len(CLASSES))


def new_rule(cap: float | None, min_effective: float = 30.0) -> Rule:
    def rule(y: np.ndarray, cand: np.ndarray, curr: np.ndarray, w: np.ndarray) -> bool:
        weights = trimmed_weights(w, cap)
        return promotion_gate(y, cand, curr, weights, DEFECTS, min_effective=min_effective).promote

    return rule


RULES: dict[str, Rule] = {
    "old (point macro-F1)": old_rule,
    "new, raw 1/pi": new_rule(None),
    "new, trimmed 10x (default)": new_rule(10.0),
    "new, trimmed 3x": new_rule(3.0),
    "new, trimmed 10x, no effective-size floor": new_rule(10.0, min_effective=2.0),
}
DEFAULT = "new, trimmed 10x (default)"


@dataclass
class Tally:
    candidates: int = 0
    worse: int = 0
    better: int = 0
    promoted: int = 0
    worse_f1_promoted: int = 0
    worse_recall_promoted: int = 0
    better_rejected: int = 0
    gains: list[float] = field(default_factory=list)
    """test macro-F1 change of each promotion"""
    recall_changes: list[float] = field(default_factory=list)
    """test recall change of the defect at each promotion"""


def test_scores(model: Ensemble, test: Digits) -> tuple[float, float]:
    """Macro-F1 on the test set with the stream's class mix, and the recall of the defect."""
    pred = model.predict(test.x)[0].argmax(axis=1)
    mix = np.where(test.y == DEFECT, RARE_WEIGHT, 1.0)
    defect = test.y == DEFECT
    return weighted_macro_f1(test.y, pred, mix, len(CLASSES)), float((pred[defect] == DEFECT).mean())


def inclusion(probs: np.ndarray) -> np.ndarray:
    """Query probabilities of a batch: ``min(1, s u)`` for uncertainty ``u``, 0 where that is below
    :data:`MIN_QUERY_PI`, with the scale ``s`` (a grid search) that makes them fill the budget beside the
    audits, as the monitor's budget controller would."""
    u = 1.0 - probs.max(axis=1)
    scales = np.geomspace(0.01, 1e4, 400)[:, None]
    pis = np.minimum(scales * u[None, :], 1.0)
    pis = np.where(pis >= MIN_QUERY_PI, pis, 0.0)
    best = int(np.argmin(np.abs(pis.sum(axis=1) - (BUDGET - AUDIT_PI) * len(u))))
    out: np.ndarray = pis[best]
    return out


def run_seed(seed: int, items: int, lineage: str, sizes: list[tuple[int, float, float]]) -> dict[str, Tally]:
    rng = np.random.default_rng(seed)
    first, pool, test = Digits.load().split(seed, SEED_ITEMS)
    draw = pool.draw_weights()
    settings = replace(SETTINGS, seed=seed)
    current = train_ensemble(first.x, first.y, np.ones(len(first.y)), CLASSES, settings)
    current_scores = test_scores(current, test)
    ids: list[str] = []
    xs: list[np.ndarray] = []
    ys: list[int] = []
    pis: list[float] = []
    tallies = {name: Tally() for name in RULES}
    since, retrains = 0, 0
    for start in range(0, items, BATCH):
        k = rng.choice(len(pool.y), size=BATCH, p=draw)
        probs = current.predict(pool.x[k])[0]
        pi_query = inclusion(probs)
        audited = rng.random(BATCH) < AUDIT_PI
        queried = ~audited & (rng.random(BATCH) < pi_query)
        for j in np.flatnonzero(audited | queried):
            ids.append(f"s{seed}-{start + j}")
            xs.append(pool.x[k[j]])
            ys.append(int(pool.y[k[j]]))
            pis.append(AUDIT_PI if audited[j] else float(pi_query[j]))
        since += int((audited | queried).sum())
        if since < EVERY_LABELS:
            continue
        since = 0
        retrains += 1
        held = holdout_mask(ids, HOLDOUT_SHARE)
        x, y, w = np.asarray(xs), np.asarray(ys), 1.0 / np.asarray(pis)
        cand = train_ensemble(
            np.concatenate([first.x, x[~held]]),
            np.concatenate([first.y, y[~held]]),
            np.concatenate([np.ones(len(first.y)), w[~held]]),
            CLASSES,
            replace(SETTINGS, seed=seed * 1000 + retrains),
        )
        cand_scores = test_scores(cand, test)
        d_f1 = cand_scores[0] - current_scores[0]
        d_recall = cand_scores[1] - current_scores[1]
        worse_f1, worse_recall = d_f1 < -TOLERANCE, d_recall < -TOLERANCE
        better = d_f1 > TOLERANCE and not worse_recall
        cp = cand.predict(x[held])[0].argmax(axis=1)
        op = current.predict(x[held])[0].argmax(axis=1)
        sizes.append(
            (int(held.sum()), kish_effective_n(w[held]), kish_effective_n(trimmed_weights(w[held], 10.0)))
        )
        verdicts = {name: rule(y[held], cp, op, w[held]) for name, rule in RULES.items()}
        for name, promote in verdicts.items():
            t = tallies[name]
            t.candidates += 1
            t.worse += worse_f1 or worse_recall
            t.better += better
            t.promoted += promote
            t.worse_f1_promoted += promote and worse_f1
            t.worse_recall_promoted += promote and worse_recall
            t.better_rejected += better and not promote
            if promote:
                t.gains.append(d_f1)
                t.recall_changes.append(d_recall)
        if verdicts[lineage]:
            current, current_scores = cand, cand_scores
    return tallies


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 seeds, 30,000 items each")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 12)")
    parser.add_argument("--items", type=int, default=None, help="stream items per seed (default 60,000)")
    parser.add_argument(
        "--lineage", choices=list(RULES), default=DEFAULT, help="whose verdicts the parents follow"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    seeds = args.seeds or (3 if args.quick else 12)
    items = args.items or (30_000 if args.quick else 60_000)
    started = time.perf_counter()
    total = {name: Tally() for name in RULES}
    sizes: list[tuple[int, float, float]] = []
    for seed in range(seeds):
        for name, t in run_seed(seed, items, args.lineage, sizes).items():
            s = total[name]
            for key in ("candidates", "worse", "better", "promoted", "worse_f1_promoted"):
                setattr(s, key, getattr(s, key) + getattr(t, key))
            s.worse_recall_promoted += t.worse_recall_promoted
            s.better_rejected += t.better_rejected
            s.gains += t.gains
            s.recall_changes += t.recall_changes
    print(
        f"{seeds} seeds x {items:,} items, a retrain every {EVERY_LABELS} labels, lineage: {args.lineage}; "
        f"tolerance {TOLERANCE}; {time.perf_counter() - started:.0f} s\n"
    )
    rows = []
    for name, t in total.items():
        mean_gain = f"{np.mean(t.gains):+.3f}" if t.gains else "-"
        worst = f"{min(t.recall_changes):+.3f}" if t.recall_changes else "-"
        rows.append(
            [
                name,
                t.candidates,
                f"{t.worse} / {t.better}",
                t.promoted,
                t.worse_f1_promoted,
                t.worse_recall_promoted,
                f"{t.better_rejected} of {t.better}",
                mean_gain,
                worst,
            ]
        )
    headers = [
        "gate",
        "candidates",
        "worse / better",
        "promoted",
        "worse macro-F1 promoted",
        "worse recall 8 promoted",
        "better rejected",
        "mean test gain when promoted",
        "worst test recall change when promoted",
    ]
    print(table(headers, rows, "lrrrrrrrr"))
    n, raw, trimmed = (np.percentile(np.asarray(sizes)[:, j], [10, 50, 90]) for j in range(3))
    print(
        f"\nheld-out labels per gate (10th, 50th, 90th percentile): {n.round(0).tolist()}; Kish effective "
        f"size, raw 1/pi: {raw.round(1).tolist()}, trimmed at 10x the median: {trimmed.round(1).tolist()}"
    )
    d = total[DEFAULT]
    ok = d.worse_f1_promoted == 0 and d.worse_recall_promoted == 0
    print(f"\ntarget: the default gate promotes no model worse than its parent: {'met' if ok else 'MISSED'}")
    defects = int((Digits.load().split(0, SEED_ITEMS)[2].y == DEFECT).sum())
    print(f"(a test set holds {defects} defects: one of them is a recall change of {1 / defects:.3f})")


if __name__ == "__main__":
    main()
