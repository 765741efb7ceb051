"""Hypothesis strategies shared by the test modules."""

from __future__ import annotations

import math

from hypothesis import strategies as st


@st.composite
def prob_rows(draw: st.DrawFn, n_classes: int) -> list[float]:
    """A probability vector: Dirichlet-like, with exact one-hot and uniform rows mixed in."""
    kind = draw(st.sampled_from(["weights", "weights", "one_hot", "uniform", "sparse"]))
    if kind == "one_hot":
        row = [0.0] * n_classes
        row[draw(st.integers(0, n_classes - 1))] = 1.0
        return row
    if kind == "uniform":
        return [1.0 / n_classes] * n_classes
    elements = st.floats(0, 1) if kind == "weights" else st.sampled_from([0.0, 0.0, 1e-300, 1.0, 3.0])
    weights = draw(st.lists(elements, min_size=n_classes, max_size=n_classes))
    total = math.fsum(weights)
    if total == 0 or not math.isfinite(total):
        return [1.0 / n_classes] * n_classes
    return [w / total for w in weights]
