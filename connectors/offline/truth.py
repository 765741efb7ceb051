"""The accept side of a replay against ground truth: what was auto-accepted, whether rightly, and which
defects were caught.

:class:`TruthTally` is fed every decided batch with the records' ground-truth ``label`` (the true class name,
None where absent) and adds to the summary, over the items whose label is a configured class:

- per true class ``c``: accepted correctly (route accept, predicted ``c``), accepted wrongly (route accept,
  predicted another class), labeled (query + audit), skipped;
- accept precision per predicted class ``k``: ``correct_k / accepted_k`` over the accepted items predicted
  ``k``, with its 95% Wilson interval (:func:`selector.quality.estimates.wilson`), and overall. The counts
  are a census of the replayed stream; the interval is what a new stream of the same size, from the same
  process, would show;
- defect capture (``dataset.defect_classes``): a defect is caught when it was labeled, or auto-accepted as
  its own class; missed when accepted as another class or skipped. Random sampling at the same label rate
  ``q = L / N`` (``L`` of the ``N`` items with a label were labeled), with the same accept rule on the items
  it leaves, would catch in expectation

      random_caught_c = q n_c + (1 - q) e_c

  where ``n_c`` are the items of class ``c`` and ``e_c`` those of them that meet the accept rule as class
  ``c`` (they are accepted correctly unless sampled).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from selector.arrays import IntArray
from selector.config import Config
from selector.quality.estimates import wilson
from selector.routing import ACCEPT, AUDIT, QUERY, SKIP, Decisions

DIGITS = 6
"""Rates and bounds in the summary are rounded to this many decimals."""


def ratio(num: float, den: float) -> float | None:
    """``num / den`` rounded to :data:`DIGITS`; None when ``den`` is 0."""
    return round(num / den, DIGITS) if den else None


def proportion(successes: int, n: int) -> dict[str, Any]:
    """A proportion with its 95% Wilson interval, as summary data (None throughout when ``n`` is 0)."""
    if not n:
        return {"estimate": None, "low": None, "high": None, "n": 0}
    w = wilson(successes, n)
    return {
        "estimate": round(w.estimate, DIGITS),
        "low": round(w.low, DIGITS),
        "high": round(w.high, DIGITS),
        "n": n,
    }


class TruthTally:
    """Counts, per (predicted, true) class pair and route, the decided items whose label is a known class.

    Args:
        config: the configuration replayed (classes, accept thresholds, defect classes).
    """

    def __init__(self, config: Config) -> None:
        self.classes = list(config.classes)
        self.thresholds = config.accept_thresholds()
        self.defects = config.defects()
        self._index = {c: i for i, c in enumerate(self.classes)}
        c = len(self.classes)
        self.accepted = np.zeros((c, c), dtype=np.int64)
        """``[predicted, true]`` counts of accepted items"""
        self.accepted_all = np.zeros(c, dtype=np.int64)
        """accepted items per predicted class, with a label or not"""
        self.per_true = {
            r: np.zeros(c, dtype=np.int64) for r in ("items", "labeled", "skipped", "acceptable")
        }
        """per true class: items, labeled, skipped, and those meeting the accept rule as their own class"""

    def add(self, decisions: Decisions, truth: Sequence[str | None] | None) -> None:
        """Account one committed batch and its ground truth (None: no record of it has a label)."""
        route, pred = decisions.route, decisions.predicted
        c = len(self.classes)
        self.accepted_all += np.bincount(pred[route == ACCEPT], minlength=c)
        if truth is None:
            return
        true: IntArray = np.fromiter(
            (self._index.get(x, -1) if x else -1 for x in truth), np.int64, len(truth)
        )
        known = true >= 0
        acc = known & (route == ACCEPT)
        self.accepted += np.bincount(pred[acc] * c + true[acc], minlength=c * c).reshape(c, c)
        for name, mask in (
            ("items", known),
            ("labeled", known & ((route == QUERY) | (route == AUDIT))),
            ("skipped", known & (route == SKIP)),
            ("acceptable", known & decisions.eligible & (pred == true)),
        ):
            self.per_true[name] += np.bincount(true[mask], minlength=c)

    def outcomes(self) -> dict[str, dict[str, int]]:
        """Per true class: items, accepted correctly, accepted wrongly, labeled, skipped."""
        right = np.diag(self.accepted)
        wrong = self.accepted.sum(axis=0) - right
        return {
            name: {
                "items": int(self.per_true["items"][i]),
                "accepted_correctly": int(right[i]),
                "accepted_wrongly": int(wrong[i]),
                "labeled": int(self.per_true["labeled"][i]),
                "skipped": int(self.per_true["skipped"][i]),
            }
            for i, name in enumerate(self.classes)
        }

    def precision(self) -> dict[str, Any]:
        """Accept precision per predicted class and overall, each with its 95% Wilson interval; a class is
        flagged ``below_threshold`` when its interval's upper bound is under its accept threshold."""
        right = np.diag(self.accepted)
        judged = self.accepted.sum(axis=1)
        by_class: dict[str, dict[str, Any]] = {}
        for i, name in enumerate(self.classes):
            p = proportion(int(right[i]), int(judged[i]))
            high = p["high"]
            by_class[name] = {
                "threshold": self.thresholds[i],
                "accepted": int(self.accepted_all[i]),
                "with_label": int(judged[i]),
                "correct": int(right[i]),
                "wrong": int(judged[i] - right[i]),
                "precision": p,
                "below_threshold": high is not None and high < self.thresholds[i],
            }
        return {
            "accepted": int(self.accepted_all.sum()),
            "with_label": int(judged.sum()),
            "correct": int(right.sum()),
            "precision": proportion(int(right.sum()), int(judged.sum())),
            "by_class": by_class,
        }

    def defect_capture(self) -> dict[str, Any]:
        """Defects caught (labeled, or accepted as their own class) and missed, against random sampling at
        the same label rate with the same accept rule (see the module docstring)."""
        n_all = int(self.per_true["items"].sum())
        q = float(self.per_true["labeled"].sum()) / n_all if n_all else 0.0
        outcomes = self.outcomes()
        by_class = {
            name: self._capture(outcomes[name], int(self.per_true["acceptable"][i]), q)
            for i, name in enumerate(self.classes)
            if self.defects[i]
        }
        keys = ("items", "accepted_correctly", "accepted_wrongly", "labeled", "skipped")
        total = {k: sum(outcomes[name][k] for name in by_class) for k in keys}
        acceptable = sum(int(self.per_true["acceptable"][i]) for i, d in enumerate(self.defects) if d)
        return {
            "classes": list(by_class),
            "label_rate": round(q, DIGITS) if n_all else None,
            **self._capture(total, acceptable, q),
            "by_class": by_class,
        }

    @staticmethod
    def _capture(o: dict[str, int], acceptable: int, q: float) -> dict[str, Any]:
        n = o["items"]
        caught = o["labeled"] + o["accepted_correctly"]
        random_caught = q * n + (1.0 - q) * acceptable
        return {
            "items": n,
            "caught": caught,
            "labeled": o["labeled"],
            "accepted_correctly": o["accepted_correctly"],
            "missed": n - caught,
            "accepted_wrongly": o["accepted_wrongly"],
            "skipped": o["skipped"],
            "capture": ratio(caught, n),
            "random_caught": round(random_caught, 3),
            "random_capture": ratio(random_caught, n),
        }
