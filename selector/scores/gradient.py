"""Expected gradient length of the last layer (Settles, Craven & Ray 2008) and BADGE gradient embeddings
(Ash et al. 2020), from class probabilities ``p`` (n, C) and the penultimate embedding ``h`` (n, d).

For a softmax head the loss gradient for label ``c`` w.r.t. the last-layer weights is ``(p - e_c) ⊗ h``, of
norm ``||p - e_c|| ||h||``, and ``||p - e_c||^2 = sum_j p_j^2 - 2 p_c + 1``, so

    EGL = ||h|| sum_c p_c sqrt(sum_j p_j^2 - 2 p_c + 1)

is computed without forming a gradient. It is a raw magnitude (scoring normalizes it online); it is 0 for a
one-hot prediction.

Example:
    >>> import numpy as np
    >>> egl(np.array([[1.0, 0.0], [0.5, 0.5]]), np.array([[3.0, 4.0], [3.0, 4.0]])).round(4).tolist()
    [0.0, 3.5355]
"""

from __future__ import annotations

import numpy as np

from selector.arrays import FloatArray
from selector.scores.embedding import Float32Array


def egl(probs: FloatArray, embedding: FloatArray | Float32Array) -> FloatArray:
    """Raw expected gradient length, ``>= 0``."""
    probs = np.asarray(probs, dtype=np.float64)
    sq = np.einsum("ij,ij->i", probs, probs)
    norms = np.sqrt(np.maximum(sq[:, None] - 2.0 * probs + 1.0, 0.0))
    out: FloatArray = np.einsum("ij,ij->i", probs, norms) * np.linalg.norm(
        np.asarray(embedding, dtype=np.float64), axis=1
    )
    return out


def gradient_embedding(probs: FloatArray, embedding: FloatArray | Float32Array) -> FloatArray:
    """``(p - e_yhat) ⊗ h`` flattened to (n, C d), with ``yhat`` the predicted class."""
    g = probs.astype(np.float64, copy=True)
    g[np.arange(len(g)), probs.argmax(axis=1)] -= 1.0
    out: FloatArray = (g[:, :, None] * np.asarray(embedding, dtype=np.float64)[:, None, :]).reshape(
        len(g), -1
    )
    return out
