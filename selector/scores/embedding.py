"""Measures against remembered embeddings: density (similarity to recent items) and novelty (distance to the
items already sent for labeling), with the bounded, spread-out core-set that novelty measures against.

- density (information density, Settles & Craven 2008): ``mean_j max(0, cos(x, r_j))`` over a reservoir of
  recent embeddings; 1 when nothing is remembered yet (a neutral weight).
- nearest distance: Euclidean distance to the nearest remembered point, raw (``+inf`` when none).

:class:`CoreSet` keeps at most ``capacity`` points. When full, a new point that lies no farther from the set
than the set's most redundant member lies from its own nearest neighbour is already covered and is skipped;
otherwise it replaces that member. This keeps the set close to a greedy k-center cover (Sener & Savarese
2018) in O(m d) per added point, with fixed memory.

Example:
    >>> import numpy as np
    >>> nearest_distance(np.array([[3.0, 4.0]]), np.zeros((1, 2))).tolist()
    [5.0]
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np

from selector.arrays import FloatArray

Float32Array = np.ndarray[Any, np.dtype[np.float32]]


def _unit(x: FloatArray | Float32Array) -> FloatArray:
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out: FloatArray = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    return out


def density(x: FloatArray, reservoir: FloatArray | Float32Array) -> FloatArray:
    """Mean positive cosine similarity of each row to the reservoir (ones for an empty reservoir)."""
    if len(reservoir) == 0:
        return np.ones(len(x))
    cos = _unit(x) @ _unit(reservoir).T
    out: FloatArray = np.maximum(cos, 0.0).mean(axis=1)
    return np.clip(out, 0.0, 1.0, out=out)


def squared_distances(x: FloatArray | Float32Array, points: FloatArray | Float32Array) -> FloatArray:
    """(n, m) squared Euclidean distances, by ``|a|^2 + |b|^2 - 2 a.b`` clipped at 0.

    Both sides are first shifted by the mean of ``points``: distances do not change, but smaller norms make
    the cancellation error of the expansion smaller.
    """
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(points, dtype=np.float64)
    if len(b):
        shift = b.mean(axis=0)
        a, b = a - shift, b - shift
    d = np.einsum("ij,ij->i", a, a)[:, None] + np.einsum("ij,ij->i", b, b)[None, :] - 2.0 * (a @ b.T)
    out: FloatArray = np.maximum(d, 0.0)
    return out


def nearest_distance(x: FloatArray, points: FloatArray | Float32Array) -> FloatArray:
    """Distance of each row to its nearest point (``+inf`` when there are none)."""
    if len(points) == 0:
        return np.full(len(x), np.inf)
    out: FloatArray = np.sqrt(squared_distances(x, points).min(axis=1))
    return out


@dataclass(frozen=True)
class CoreSet:
    """At most ``capacity`` spread-out embeddings (float32, so a snapshot round trip is exact). Immutable."""

    points: Float32Array
    capacity: int

    @classmethod
    def empty(cls, capacity: int, dim: int) -> CoreSet:
        return cls(np.zeros((0, dim), dtype=np.float32), capacity)

    def with_points(self, new: FloatArray | Float32Array) -> CoreSet:
        """The set after offering the rows of ``new`` one at a time, oldest first (a new object).

        While there is room a row is appended. When full, with ``nn(j)`` each member's distance to its nearest
        other member and ``j*`` the member with the smallest one (ties: the oldest), a row no farther from the
        set than ``nn(j*)`` is skipped; otherwise ``j*`` is removed and the row appended.
        """
        new32 = np.asarray(new, dtype=np.float32).reshape(-1, self.points.shape[1])
        if not len(new32):
            return self
        kept = self.points[max(0, len(self.points) - self.capacity) :]
        room = self.capacity - len(kept)
        pts = np.concatenate([kept, new32[:room]])
        if len(new32) > room:
            pts = _offer(pts, new32[room:])
        return CoreSet(pts, self.capacity)

    def to_dict(self) -> dict[str, Any]:
        return {"dim": int(self.points.shape[1]), "points": encode_rows(self.points)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], capacity: int) -> CoreSet:
        pts = decode_rows(d["points"], int(d["dim"]))
        return cls(pts[max(0, len(pts) - capacity) :], capacity)


def encode_rows(rows: FloatArray | Float32Array) -> str:
    """Rows of embeddings as base64 of little-endian float32 (exact for float32 rows), for snapshots."""
    return base64.b64encode(np.asarray(rows, dtype="<f4").tobytes()).decode()


def decode_rows(text: str, dim: int) -> Float32Array:
    """The (m, dim) float32 rows :func:`encode_rows` wrote."""
    out: Float32Array = np.frombuffer(base64.b64decode(text), dtype="<f4").reshape(-1, dim).astype(np.float32)
    return out


def _offer(members: Float32Array, rows: Float32Array) -> Float32Array:
    """Offer ``rows`` one at a time to a full set, in O(m d) per row plus O(m) per member whose nearest
    neighbour was the one replaced.

    Members live in fixed slots (a replacement overwrites the slot) with their insertion ``age``, so the
    order "oldest first" is restored once at the end instead of shifting arrays for every row.
    """
    m = len(members)
    slots = members.astype(np.float64)
    age = np.arange(m)
    dist = squared_distances(slots, slots)
    np.fill_diagonal(dist, np.inf)
    nn = dist.min(axis=1)
    nn_of = dist.argmin(axis=1)
    for t, row in enumerate(rows.astype(np.float64)):
        diff = slots - row
        gap = np.einsum("ij,ij->i", diff, diff)
        tied = np.flatnonzero(nn == nn.min())
        j = int(tied[np.argmin(age[tied])])
        if gap.min() <= nn[j]:
            continue  # covered as well as the most redundant member covers its neighbour
        slots[j], age[j], gap[j] = row, m + t, np.inf
        dist[j, :] = gap
        dist[:, j] = gap
        stale = nn_of == j  # their nearest neighbour is gone: look again
        closer = gap < nn
        nn = np.where(closer, gap, nn)
        nn_of = np.where(closer, j, nn_of)
        nn[stale] = dist[stale].min(axis=1)
        nn_of[stale] = dist[stale].argmin(axis=1)
        nn[j], nn_of[j] = gap.min(), gap.argmin()
    out: Float32Array = slots[np.argsort(age)].astype(np.float32)
    return out
