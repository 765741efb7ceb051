"""The contract of an informativeness measure and the explicit registry of measures.

Every measure maps a batch to ``(n,)`` values in [0, 1], higher meaning more informative. Measures never see
item order, so permuting rows permutes results and permuting class columns changes nothing.

Four measures read only the class probabilities (:data:`MEASURES`, pure functions of ``probs``). The others
read an optional field of the prediction (:data:`FIELD_OF`): MC-dropout ``samples``, ``committee`` member
probabilities, the ``embedding`` or ``predicted_loss``. Three of them give raw magnitudes that are brought
into [0, 1] online, by the streaming quantile of recent values (:data:`ONLINE`), and two compare an item with
what its partition remembers (:data:`STATEFUL`); :mod:`selector.scores.pipeline` evaluates those.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from selector.arrays import FloatArray
from selector.errors import SelectorError
from selector.scores import uncertainty

Measure = Callable[[FloatArray], FloatArray]

MEASURES: dict[str, Measure] = {
    "least_confidence": uncertainty.least_confidence,
    "margin": uncertainty.margin,
    "ratio": uncertainty.ratio,
    "entropy": uncertainty.entropy,
}
"""Measures of the class probabilities alone."""

FIELD_OF: dict[str, str] = {
    **dict.fromkeys(MEASURES, "probs"),
    "bald": "samples",
    "predictive_entropy": "samples",
    "predictive_variance": "samples",
    "vote_entropy": "committee",
    "kl_consensus": "committee",
    "egl": "embedding",
    "predicted_loss": "predicted_loss",
    "density": "embedding",
    "novelty": "embedding",
}
"""Every measure a config may name, with the prediction field it reads (besides ``probs``)."""

ONLINE = frozenset({"egl", "predicted_loss", "novelty"})
"""Raw magnitudes, normalized as ``min(1, x / Q)`` with ``Q`` a high quantile of the recent raw values."""

STATEFUL = frozenset({"density", "novelty"})
"""Measures against the partition's memory: a reservoir of recent embeddings, or the labeled core-set."""


def measure_names() -> list[str]:
    """Names a config may use, in registry order."""
    return list(FIELD_OF)


def compute(probs: FloatArray, names: Sequence[str]) -> dict[str, FloatArray]:
    """Compute the named probability measures over a batch.

    Raises:
        SelectorError: for a name that is not a measure of ``probs`` alone, listing the valid ones.
    """
    unknown = [n for n in names if n not in MEASURES]
    if unknown:
        raise SelectorError(f"unknown measure(s) {unknown!r}; valid measures: {', '.join(MEASURES)}")
    return {n: MEASURES[n](probs) for n in names}
