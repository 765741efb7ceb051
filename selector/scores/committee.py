"""Query-by-committee measures: ``committee`` of shape (n, K, C), one probability vector per member.

- vote entropy (Dagan & Engelson 1995): each member votes for its most probable class (a member whose
  maximum is tied splits its vote equally, so relabeling classes never changes a score); with ``V_c`` the
  vote shares, ``-sum_c V_c log V_c / log min(K, C)``: 1 for an even split, 0 for unanimity.
- mean KL divergence to the consensus (McCallum & Nigam 1998): ``mean_k KL(p_k || pbar) / log C``.
- agreement: the vote share of a given class (the predicted one), a guard for auto-accept.

Example:
    >>> import numpy as np
    >>> even = np.array([[[0.9, 0.1], [0.2, 0.8]]])
    >>> vote_entropy(even).tolist(), agreement(even, np.array([0])).tolist()
    ([1.0], [0.5])
"""

from __future__ import annotations

import numpy as np

from selector.arrays import FloatArray, IntArray


def votes(committee: FloatArray) -> FloatArray:
    """(n, C) vote shares: each member's vote split equally among its tied most probable classes."""
    committee = np.asarray(committee, dtype=np.float64)
    top = committee == committee.max(axis=-1, keepdims=True)
    per_member = top / top.sum(axis=-1, keepdims=True)
    out: FloatArray = per_member.mean(axis=1)
    return out


def vote_entropy(committee: FloatArray) -> FloatArray:
    """Entropy of the vote shares, normalized by ``log min(K, C)`` (0 for a committee of one)."""
    k, c = committee.shape[1], committee.shape[2]
    if min(k, c) < 2:
        return np.zeros(committee.shape[0])
    v = votes(committee)
    logs = np.log(v, out=np.zeros_like(v), where=v > 0)
    out: FloatArray = -(v * logs).sum(axis=1) / np.log(min(k, c))
    return np.clip(out, 0.0, 1.0, out=out)


def kl_consensus(committee: FloatArray) -> FloatArray:
    """Mean KL divergence of each member from the consensus (mean) prediction, normalized by ``log C``."""
    committee = np.asarray(committee, dtype=np.float64)
    mean = committee.mean(axis=1, keepdims=True)
    pos = (committee > 0) & (mean > 0)  # a mean can underflow to 0 under a subnormal member value
    ratio = np.divide(committee, mean, out=np.ones_like(committee), where=pos)
    logs = np.log(ratio, out=np.zeros_like(committee), where=pos)
    kl = (committee * logs).sum(axis=-1).mean(axis=1)
    out: FloatArray = kl / np.log(committee.shape[-1])
    return np.clip(out, 0.0, 1.0, out=out)


def agreement(committee: FloatArray, predicted: IntArray) -> FloatArray:
    """Share of the (tie-split) votes that go to ``predicted[i]``."""
    v = votes(committee)
    out: FloatArray = v[np.arange(len(v)), predicted]
    return out
