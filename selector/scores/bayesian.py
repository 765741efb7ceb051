"""Bayesian measures from MC-dropout samples: ``samples`` of shape (n, T, C), each row a probability vector.

With ``pbar = mean_t p_t`` and ``H`` the Shannon entropy (``0 log 0 = 0``):

- BALD (mutual information between prediction and weights; Houlsby et al. 2011, Gal et al. 2017):
  ``(H(pbar) - mean_t H(p_t)) / log C``
- predictive entropy: ``H(pbar) / log C``
- predictive variance: ``sum_c Var_t(p_tc) / (1 - 1/C)``; the divisor is its maximum, reached by one-hot
  samples spread evenly over the classes.

Example:
    >>> import numpy as np
    >>> agree = np.array([[[0.7, 0.3], [0.7, 0.3]]])
    >>> split = np.array([[[1.0, 0.0], [0.0, 1.0]]])
    >>> bald(agree).tolist(), bald(split).tolist()
    ([0.0], [1.0])
"""

from __future__ import annotations

import numpy as np

from selector.arrays import FloatArray


def _entropy(p: FloatArray) -> FloatArray:
    """Shannon entropy along the last axis, ``0 log 0 = 0``."""
    logs = np.log(p, out=np.zeros_like(p), where=p > 0)
    out: FloatArray = -(p * logs).sum(axis=-1)
    return out


def predictive_entropy(samples: FloatArray) -> FloatArray:
    """Entropy of the mean prediction over samples, normalized by ``log C``."""
    samples = np.asarray(samples, dtype=np.float64)
    out: FloatArray = _entropy(samples.mean(axis=1)) / np.log(samples.shape[-1])
    return np.clip(out, 0.0, 1.0, out=out)


def bald(samples: FloatArray) -> FloatArray:
    """Mutual information ``H(mean) - mean H``, normalized by ``log C``: 0 when all samples agree."""
    samples = np.asarray(samples, dtype=np.float64)
    mi = _entropy(samples.mean(axis=1)) - _entropy(samples).mean(axis=1)
    out: FloatArray = mi / np.log(samples.shape[-1])
    return np.clip(out, 0.0, 1.0, out=out)


def predictive_variance(samples: FloatArray) -> FloatArray:
    """Total variance over samples, ``sum_c Var_t(p_tc)``, normalized by its maximum ``1 - 1/C``."""
    samples = np.asarray(samples, dtype=np.float64)
    c = samples.shape[-1]
    out: FloatArray = samples.var(axis=1).sum(axis=-1) / (1.0 - 1.0 / c)
    return np.clip(out, 0.0, 1.0, out=out)
