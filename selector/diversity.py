"""Diverse subsets for the windowed batch mode: greedy k-center (Gonzalez 1985; the core-set approach of Sener
& Savarese 2018), k-means++ seeding (Arthur & Vassilvitskii 2007, as in BADGE, Ash et al. 2020) made
deterministic by given uniforms, nearest-center assignment, and one uniformly drawn member per cluster, so
that each member of a cluster of size ``s`` is chosen with probability exactly ``1 / s``.

Example:
    >>> import numpy as np
    >>> x = np.array([[0.0], [0.1], [10.0], [10.1]])
    >>> centers = kcenter(x, 2, first=0)
    >>> centers.tolist(), assign(x, centers).tolist()
    ([0, 3], [0, 0, 1, 1])
"""

from __future__ import annotations

import numpy as np

from selector.arrays import BoolArray, FloatArray, IntArray
from selector.scores.embedding import squared_distances


def kcenter(x: FloatArray, k: int, first: int) -> IntArray:
    """Farthest-first traversal from ``first``: each next center is the row farthest from those chosen
    (ties: lowest index). Returns ``min(k, m)`` distinct indices."""
    m = len(x)
    k = min(k, m)
    chosen = [first]
    nearest = squared_distances(x, x[first : first + 1])[:, 0]
    nearest[first] = -1.0
    while len(chosen) < k:
        nxt = int(np.argmax(nearest))
        chosen.append(nxt)
        nearest = np.minimum(nearest, squared_distances(x, x[nxt : nxt + 1])[:, 0])
        nearest[chosen] = -1.0
    return np.asarray(chosen, dtype=np.int64)


def kmeanspp(x: FloatArray, k: int, u: FloatArray) -> IntArray:
    """k-means++ seeding: the first center at ``floor(u[0] m)``, each next one drawn with probability
    proportional to the squared distance to the nearest chosen center, by inverse CDF at ``u[i]``. When every
    remaining distance is 0, the lowest index not chosen yet. Returns ``min(k, m)`` distinct indices."""
    m = len(x)
    k = min(k, m)
    chosen = [min(m - 1, int(u[0] * m))]
    nearest = squared_distances(x, x[chosen[0] : chosen[0] + 1])[:, 0]
    nearest[chosen] = 0.0
    for i in range(1, k):
        total = float(nearest.sum())
        if total <= 0.0:
            rest = np.setdiff1d(np.arange(m), chosen)
            nxt = int(rest[0])
        else:
            cdf = np.cumsum(nearest)
            nxt = min(m - 1, int(np.searchsorted(cdf, u[i] * total, side="right")))
            while nearest[nxt] == 0.0:  # rounding landed on a chosen row: the next one with weight
                nxt = (nxt + 1) % m
        chosen.append(nxt)
        nearest = np.minimum(nearest, squared_distances(x, x[nxt : nxt + 1])[:, 0])
        nearest[chosen] = 0.0
    return np.asarray(chosen, dtype=np.int64)


def assign(x: FloatArray, centers: IntArray) -> IntArray:
    """Index (into ``centers``) of each row's nearest center, ties to the lowest."""
    out: IntArray = squared_distances(x, x[centers]).argmin(axis=1)
    return out


def one_per_cluster(labels: IntArray, u: FloatArray) -> BoolArray:
    """In every cluster, the member with the smallest draw ``u`` (ties: lowest index)."""
    order = np.lexsort((np.arange(len(labels)), u, labels))
    first = np.ones(len(order), dtype=bool)
    first[1:] = labels[order][1:] != labels[order][:-1]
    out = np.zeros(len(labels), dtype=bool)
    out[order[first]] = True
    return out
