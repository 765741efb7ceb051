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


def _squared_to(x: FloatArray, i: int) -> FloatArray:
    """Squared distances of every row to row ``i``, from differences (exact ties stay ties)."""
    diff = x - x[i]
    out: FloatArray = np.einsum("ij,ij->i", diff, diff)
    return out


def kcenter(x: FloatArray, k: int, first: int) -> IntArray:
    """Farthest-first traversal from ``first``: each next center is the row farthest from those chosen
    (ties: lowest index), ``c_{i+1} = argmax_j min_{l <= i} ||x_j - x_{c_l}||``. Returns ``min(k, m)``
    distinct indices in the order chosen."""
    x = np.asarray(x, dtype=np.float64)
    k = min(k, len(x))
    chosen = np.zeros(max(k, 0), dtype=np.int64)
    if k <= 0:
        return chosen
    chosen[0] = first
    nearest = _squared_to(x, first)
    nearest[first] = -1.0  # chosen rows stay below every distance, so argmax never repeats one
    for i in range(1, k):
        nxt = int(np.argmax(nearest))
        chosen[i] = nxt
        np.minimum(nearest, _squared_to(x, nxt), out=nearest)
        nearest[nxt] = -1.0
    return chosen


def kmeanspp(x: FloatArray, k: int, u: FloatArray) -> IntArray:
    """k-means++ seeding: the first center at ``floor(u[0] m)``, each next one drawn with probability
    ``D(x)^2 / sum D^2`` (``D`` the distance to the nearest chosen center), by inverse CDF at ``u[i]``. When
    every remaining distance is 0, the lowest index not chosen yet. Returns ``min(k, m)`` distinct indices."""
    x = np.asarray(x, dtype=np.float64)
    m = len(x)
    k = min(k, m)
    chosen = np.zeros(max(k, 0), dtype=np.int64)
    if k <= 0:
        return chosen
    taken = np.zeros(m, dtype=bool)
    first = min(m - 1, int(u[0] * m))
    chosen[0], taken[first] = first, True
    weight = _squared_to(x, first)
    weight[first] = 0.0
    for i in range(1, k):
        cdf = np.cumsum(weight)
        if cdf[-1] <= 0.0:
            nxt = int(np.argmin(taken))
        else:
            # side="right" lands on a row with positive weight, unless u[i] * total rounded up to the total
            nxt = int(np.searchsorted(cdf, u[i] * cdf[-1], side="right"))
            if nxt == m:
                nxt = int(np.flatnonzero(weight)[-1])
        chosen[i], taken[nxt] = nxt, True
        np.minimum(weight, _squared_to(x, nxt), out=weight)
        weight[nxt] = 0.0
    return chosen


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
