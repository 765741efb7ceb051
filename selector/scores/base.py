"""The contract of an informativeness measure and the explicit registry of measures.

A measure is a pure function ``(probs: (n, C) float array) -> (n,) float array`` with every value in [0, 1],
higher meaning more informative. Measures never see item order, so permuting rows permutes results and
permuting class columns changes nothing.
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


def measure_names() -> list[str]:
    """Names a config may use, in registry order."""
    return list(MEASURES)


def compute(probs: FloatArray, names: Sequence[str]) -> dict[str, FloatArray]:
    """Compute the named measures over a batch.

    Raises:
        SelectorError: for an unknown name, listing the valid ones.
    """
    unknown = [n for n in names if n not in MEASURES]
    if unknown:
        raise SelectorError(f"unknown measure(s) {unknown!r}; valid measures: {', '.join(MEASURES)}")
    return {n: MEASURES[n](probs) for n in names}
