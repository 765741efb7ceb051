"""Informativeness measures over batches of class probabilities; every measure maps into [0, 1]."""

from selector.scores.base import Measure, compute, measure_names
from selector.scores.uncertainty import entropy, least_confidence, margin, ratio

__all__ = ["Measure", "compute", "entropy", "least_confidence", "margin", "measure_names", "ratio"]
