"""Judging models on labeled samples of the stream: importance-weighted metrics and a stable holdout split.

A labeled item ``i`` carries the weight ``w_i = 1 / pi_i`` (its inclusion probability ``pi_i``), so a
weighted count over the labeled items estimates the same count over the stream (Horvitz & Thompson 1952):
:func:`weighted_accuracy` and :func:`weighted_macro_f1` score a model on the stream it serves, not on the
uncertain items that were queried. :func:`holdout_mask` splits items by a hash of their id, so an item is
held out forever: no model is judged on items it, or its parent, was trained on.

Example:
    >>> import numpy as np
    >>> weighted_accuracy(np.array([0, 1, 1]), np.array([0, 1, 0]), np.array([1.0, 1.0, 2.0]))
    0.5
    >>> holdout_mask(["a", "b", "c", "d", "e", "f"], 0.5).tolist()
    [False, False, True, False, True, True]
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from selector.arrays import BoolArray
from selector.errors import SelectorError


def _check_metric_inputs(y_true: Any, y_pred: Any, weights: Any) -> None:
    if not len(y_true) == len(y_pred) == len(weights):
        raise SelectorError(f"lengths differ: {len(y_true)}, {len(y_pred)}, {len(weights)}")
    if len(y_true) == 0:
        raise SelectorError("cannot score an empty set")
    if not np.all(np.asarray(weights) > 0):
        raise SelectorError("weights must be positive")


def weighted_accuracy(y_true: Any, y_pred: Any, weights: Any) -> float:
    """``sum_i w_i [pred_i == true_i] / sum_i w_i`` (with ``w_i = 1 / pi_i``: the stream's accuracy)."""
    _check_metric_inputs(y_true, y_pred, weights)
    w = np.asarray(weights, dtype=np.float64)
    return float(np.dot(w, np.asarray(y_true) == np.asarray(y_pred)) / w.sum())


def weighted_macro_f1(y_true: Any, y_pred: Any, weights: Any, n_classes: int) -> float:
    """Mean over classes of ``F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c)``, each count a sum of weights.

    Classes absent from both ``y_true`` and ``y_pred`` are left out of the mean (their F1 is undefined).
    Predictions outside ``[0, n_classes)`` (e.g. -1: a class the model does not know) are simply wrong.
    """
    _check_metric_inputs(y_true, y_pred, weights)
    t, p = np.asarray(y_true), np.asarray(y_pred)
    w = np.asarray(weights, dtype=np.float64)
    classes = np.arange(n_classes)
    is_true = t[None, :] == classes[:, None]  # (C, n)
    is_pred = p[None, :] == classes[:, None]
    tp = (is_true & is_pred) @ w
    fp = (~is_true & is_pred) @ w
    fn = (is_true & ~is_pred) @ w
    present = is_true.any(axis=1) | is_pred.any(axis=1)
    f1 = 2 * tp[present] / (2 * tp[present] + fp[present] + fn[present])
    return float(f1.mean())


def holdout_mask(ids: Sequence[str], share: float, salt: str = "holdout") -> BoolArray:
    """Which items are held out: ``sha256(salt:id)`` read as a number in [0, 1) falls below ``share``.

    Stable across retrains, processes and Python versions, so an item never moves between the training
    set and the holdout (a model is never judged on items it was trained on, nor on items a later
    candidate's parent was trained on).
    """
    if not 0.0 <= share <= 1.0:
        raise SelectorError(f"holdout share must be in [0, 1]: {share}")
    digests = (hashlib.sha256(f"{salt}:{i}".encode()).digest() for i in ids)
    draws = [int.from_bytes(h[:8], "big") / 2.0**64 for h in digests]
    return np.asarray(draws, dtype=np.float64) < share
