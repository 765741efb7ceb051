"""Deterministic per-item uniform draws.

Random choices (audits, later exploration and tie-breaking) are drawn from a hash of the item id and a seed,
not from a generator's position in the stream: an item re-decided after a crash, or by another instance,
gets the same draw and so the same route. ``u = splitmix64(crc32(id) ^ (seed << 32) ^ stream) / 2**64``.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from selector.arrays import FloatArray, UIntArray

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def id_hashes(ids: Sequence[str]) -> UIntArray:
    """CRC-32 of each id's UTF-8 bytes, as uint64."""
    return np.fromiter((zlib.crc32(s.encode()) for s in ids), dtype=np.uint64, count=len(ids))


def uniforms(hashes: UIntArray, seed: int, stream: int) -> FloatArray:
    """One uniform in [0, 1) per item for the given seed and stream (splitmix64 finalizer, vectorized)."""
    with np.errstate(over="ignore"):
        z = hashes ^ np.uint64((seed & 0xFFFFFFFF) << 32) ^ np.uint64(stream & 0xFFFFFFFF)
        z = z * _GOLDEN + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        z = z ^ (z >> np.uint64(31))
    out: FloatArray = (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
    return out
