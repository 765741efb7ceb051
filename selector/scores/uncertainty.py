"""Uncertainty sampling measures from class probabilities (Lewis & Gale 1994; Settles 2009, sec. 3.1).

With ``p_(1) >= p_(2)`` the two largest probabilities of an item over ``C`` classes:

- least confidence: ``(1 - p_(1)) * C / (C - 1)``  (0 when certain, 1 when uniform)
- margin:           ``1 - (p_(1) - p_(2))``
- ratio:            ``p_(2) / p_(1)``              (the variation ratio of the top two)
- entropy:          ``-sum_c p_c log p_c / log C``

Example:
    >>> import numpy as np
    >>> p = np.array([[1.0, 0.0], [0.5, 0.5]])
    >>> entropy(p).tolist(), margin(p).tolist()
    ([0.0, 1.0], [0.0, 1.0])
"""

from __future__ import annotations

import numpy as np

from selector.arrays import FloatArray


def _top2(probs: FloatArray) -> tuple[FloatArray, FloatArray]:
    top = np.partition(probs, probs.shape[1] - 2, axis=1)[:, -2:]
    return top[:, 1], top[:, 0]


def least_confidence(probs: FloatArray) -> FloatArray:
    """``(1 - max_c p_c) * C / (C - 1)``, so a uniform prediction scores 1."""
    c = probs.shape[1]
    out: FloatArray = (1.0 - probs.max(axis=1)) * (c / (c - 1))
    return np.clip(out, 0.0, 1.0, out=out)


def margin(probs: FloatArray) -> FloatArray:
    """``1 - (p_(1) - p_(2))``: a small gap between the two best classes is informative."""
    first, second = _top2(probs)
    out: FloatArray = 1.0 - (first - second)
    return np.clip(out, 0.0, 1.0, out=out)


def ratio(probs: FloatArray) -> FloatArray:
    """``p_(2) / p_(1)``: 1 when the two best classes tie."""
    first, second = _top2(probs)
    out: FloatArray = np.divide(second, first, out=np.ones_like(first), where=first > 0)
    return np.clip(out, 0.0, 1.0, out=out)


def entropy(probs: FloatArray) -> FloatArray:
    """Shannon entropy normalized by ``log C``; ``0 log 0`` is taken as 0."""
    logs = np.log(probs, out=np.zeros_like(probs), where=probs > 0)
    out: FloatArray = np.einsum("ij,ij->i", probs, logs) / -np.log(probs.shape[1])
    out += 0.0  # a certain row sums to -0.0; scores are never negative zero
    return np.clip(out, 0.0, 1.0, out=out)
