"""Temperature scaling: one scalar that calibrates a model's probabilities (Guo et al. 2017).

A network trained to low log loss is typically over-confident. Temperature scaling divides its logits ``z``
by one scalar ``T`` fitted on labeled data, ``p_T = softmax(z / T)``; ``T > 1`` softens, ``T < 1`` sharpens.
Dividing by a positive scalar keeps the order of the classes, so the predicted class and the accuracy do not
change, only the confidence does. Probabilities work as well as logits: ``log p`` differs from ``z`` by one
constant per row, which the softmax ignores, so ``softmax(log p / T) = p^(1/T) / sum_k p_k^(1/T)``.

Reference: C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger, "On Calibration of Modern Neural Networks", ICML 2017.

Example:
    >>> import numpy as np
    >>> z = np.array([[4.0, 0.0], [4.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    >>> t = fit_temperature(z, np.array([0, 0, 1, 1]))
    >>> round(t, 3)
    3.641
    >>> apply_temperature(softmax(z), t).round(3)[0].tolist()
    [0.75, 0.25]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from selector.arrays import FloatArray, IntArray
from selector.errors import SelectorError

MIN_TEMPERATURE = 0.05
MAX_TEMPERATURE = 20.0
"""The fitted temperature lies in [MIN_TEMPERATURE, MAX_TEMPERATURE]; beyond, the data say "as far as you
can go" (e.g. every prediction right: sharpen without end), not a useful number."""

_TINY = float(np.finfo(np.float64).tiny)
_REL_TOL = 1e-10
"""Relative step, or width of the bracket, on ``1 / T`` at which the search stops (well below 1e-6 in
``log T``)."""
_MAX_ITER = 200


def softmax(logits: FloatArray) -> FloatArray:
    """Row-wise softmax, stable for any finite logits (the row maximum is subtracted first)."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: FloatArray = e / e.sum(axis=1, keepdims=True)
    return out


def logits_of(probs: FloatArray) -> FloatArray:
    """Log probabilities, zeros floored at the smallest positive normal float (``log`` of it is about -708).

    ``softmax(logits_of(p))`` equals ``p`` up to rounding; a zero comes back as about ``1e-308``.
    """
    out: FloatArray = np.log(np.maximum(probs, _TINY))
    return out


def apply_temperature(probs: FloatArray, temperature: float) -> FloatArray:
    """``softmax(log p / T)`` row by row, i.e. ``p^(1/T)`` renormalized.

    A zero probability stays exactly zero (so a one-hot row stays one-hot), and ``temperature == 1.0``
    returns ``probs`` itself, not a copy. Every row must hold a positive entry.

    Args:
        probs: (n, C) probabilities, rows summing to 1.
        temperature: ``T > 0``.
    """
    if temperature == 1.0:
        return probs
    if not temperature > 0:
        raise SelectorError(f"temperature must be > 0: {temperature!r}")
    positive = probs > 0
    z = np.full(probs.shape, -np.inf)
    np.log(probs, out=z, where=positive)
    z /= temperature
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def fit_temperature(logits: FloatArray, labels: IntArray, weights: FloatArray | None = None) -> float:
    """The temperature in [0.05, 20] that minimizes the mean negative log likelihood of ``softmax(z / T)``
    (weighted by ``weights`` when given: ``1 / pi`` makes a selectively labeled sample stand for the stream).

    With ``b = 1 / T`` the loss ``L(b) = mean_i [logsumexp(b z_i) - b z_i,y_i]`` is convex, with
    ``L'(b) = mean_i (E_{p_b}[z_i] - z_i,y_i)`` and ``L''(b) = mean_i Var_{p_b}[z_i] >= 0``, so its minimum
    is the root of the increasing ``L'``. It is found by Newton steps on ``b`` that fall back to bisection (in
    ``log b``) whenever a step leaves the bracket of the root: deterministic, and to a relative precision of
    1e-10 in about ten steps. If ``L'`` has no root inside the range the nearer bound is returned; a loss flat
    in ``T`` (every row uniform) returns 1.0.

    Args:
        logits: (n, C) finite logits (or log probabilities, see :func:`logits_of`).
        labels: (n,) true class indices in ``[0, C)``.

    Raises:
        SelectorError: no items, a shape mismatch, a label out of range, a non-finite logit, or weights that
            are not positive and finite, one per item.
    """
    z = _checked(logits, labels, "logits")
    w = _weights(weights, len(labels))
    if not np.isfinite(z).all():
        raise SelectorError("logits must be finite (no NaN or infinity)")
    z = z - z.max(axis=1, keepdims=True)  # L' and L'' are unchanged by a shift per row
    z_true = z[np.arange(len(labels)), labels]
    lo, hi = 1.0 / MAX_TEMPERATURE, 1.0 / MIN_TEMPERATURE

    def slope(b: float) -> tuple[float, float]:
        p = softmax(b * z)
        mean = (p * z).sum(axis=1)
        var = (p * (z - mean[:, None]) ** 2).sum(axis=1)
        return float(np.dot(w, mean - z_true)), float(np.dot(w, var))

    b = 1.0
    g, h = slope(b)
    if g == 0.0:
        return 1.0
    if g < 0:
        lo = b
        if slope(hi)[0] <= 0:
            return MIN_TEMPERATURE
    else:
        hi = b
        if slope(lo)[0] >= 0:
            return MAX_TEMPERATURE
    for _ in range(_MAX_ITER):
        step = b - g / h if h > 0 else np.nan
        previous, b = b, (step if lo < step < hi else float(np.sqrt(lo * hi)))
        if abs(b - previous) <= _REL_TOL * b:
            break
        g, h = slope(b)
        if g == 0.0:
            break
        if g < 0:
            lo = b
        else:
            hi = b
        if hi - lo <= _REL_TOL * lo:
            break
    return float(np.clip(1.0 / b, MIN_TEMPERATURE, MAX_TEMPERATURE))


def nll(probs: FloatArray, labels: IntArray, weights: FloatArray | None = None) -> float:
    """(Weighted) mean negative log likelihood of the true labels (a zero probability counts as about 708
    nats)."""
    p = _checked(probs, labels, "probs")
    w = _weights(weights, len(labels))
    return float(-np.dot(w, np.log(np.maximum(p[np.arange(len(labels)), labels], _TINY))))


def expected_calibration_error(
    probs: FloatArray, labels: IntArray, bins: int = 15, weights: FloatArray | None = None
) -> float:
    """Top-label expected calibration error over equal-width confidence bins.

    ``ECE = sum_m (|B_m| / n) |acc(B_m) - conf(B_m)|`` where bin ``m`` holds the items whose top
    probability lies in ``((m - 1) / M, m / M]`` (Guo et al. 2017, eq. 3), ``acc`` is the share of them
    predicted right and ``conf`` their mean top probability (with ``weights``, every count is a sum of
    weights).
    """
    if bins < 1:
        raise SelectorError(f"bins must be >= 1: {bins}")
    p = _checked(probs, labels, "probs")
    w = _weights(weights, len(labels))
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == labels).astype(np.float64)
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    gap = np.bincount(which, weights=w * (correct - confidence), minlength=bins)
    return float(np.abs(gap).sum())


@dataclass(frozen=True)
class CalibrationReport:
    """What temperature scaling does on a labeled sample: the fitted temperature and the metrics around it."""

    items: int
    temperature: float
    accuracy: float
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float


def calibrate(
    probs: FloatArray,
    labels: IntArray,
    logits: FloatArray | None = None,
    weights: FloatArray | None = None,
) -> CalibrationReport:
    """Fit the temperature on labeled predictions and measure NLL and ECE before and after it (all weighted
    by ``weights`` when given).

    Args:
        probs: (n, C) the model's probabilities.
        labels: (n,) true class indices.
        logits: (n, C) the model's logits where it gave them (they keep what a probability underflowed to 0
            loses); default ``logits_of(probs)``.

    The "after" figures are those of :func:`apply_temperature` on ``probs``, which is what is done with the
    fitted temperature once it is configured.
    """
    t = fit_temperature(logits_of(probs) if logits is None else logits, labels, weights)
    after = apply_temperature(probs, t)
    w = _weights(weights, len(labels))
    return CalibrationReport(
        items=len(labels),
        temperature=t,
        accuracy=float(np.dot(w, probs.argmax(axis=1) == labels)),
        nll_before=nll(probs, labels, weights),
        nll_after=nll(after, labels, weights),
        ece_before=expected_calibration_error(probs, labels, weights=weights),
        ece_after=expected_calibration_error(after, labels, weights=weights),
    )


def _weights(weights: FloatArray | None, n: int) -> FloatArray:
    """Weights normalized to sum 1 (uniform when none are given)."""
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,) or not (np.isfinite(w).all() and (w > 0).all()):
        raise SelectorError(f"weights must be {n} positive finite numbers, one per item")
    out: FloatArray = w / w.sum()
    return out


def _checked(matrix: FloatArray, labels: IntArray, name: str) -> FloatArray:
    if matrix.ndim != 2 or labels.ndim != 1 or len(matrix) != len(labels):
        raise SelectorError(f"'{name}' must be (n, C) and labels (n,): got {matrix.shape} and {labels.shape}")
    if len(labels) == 0:
        raise SelectorError("calibration needs at least one labeled item, got none")
    n_classes = matrix.shape[1]
    bad = np.flatnonzero((labels < 0) | (labels >= n_classes))
    if len(bad):
        raise SelectorError(
            f"labels must be class indices in [0, {n_classes}): item {int(bad[0])} has {int(labels[bad[0]])}"
            f" ({len(bad)} out of range)"
        )
    return matrix
