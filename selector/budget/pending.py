"""Label delay: items sent for labeling stay pending until their label arrives or a TTL expires.

A candidate is not sent again while it is pending (same ``id``), nor while an item whose embedding lies within
``dedup_distance`` (Euclidean) of its own is pending, so a slow labeling team is not asked twice about the
same thing. The set is bounded (``max_items``, oldest first out), so memory does not grow with the backlog.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from selector.arrays import BoolArray


@dataclass(frozen=True)
class Pending:
    """Pending items of one partition: id -> (expiry time, embedding or None). Immutable."""

    items: dict[str, tuple[float, tuple[float, ...] | None]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    def expired(self, now: float) -> Pending:
        """Without the items whose TTL ran out at ``now``."""
        if not self.items or min(e for e, _ in self.items.values()) > now:
            return self
        return Pending({k: v for k, v in self.items.items() if v[0] > now})

    def without(self, ids: Iterable[str]) -> Pending:
        """Without the items whose labels arrived (an id may come several times: one label per annotator)."""
        drop = {i for i in ids if i in self.items}
        if not drop:
            return self
        return Pending({k: v for k, v in self.items.items() if k not in drop})

    def with_sent(
        self,
        ids: Sequence[str],
        embeddings: Sequence[Sequence[float] | None],
        expiries: Sequence[float],
        max_items: int,
    ) -> Pending:
        """With newly sent items added, each with its own expiry (the oldest dropped beyond ``max_items``)."""
        if not ids:
            return self
        items = dict(self.items)
        for i, e, x in zip(ids, embeddings, expiries, strict=True):
            items.pop(i, None)
            items[i] = (float(x), tuple(e) if e is not None else None)
        if len(items) > max_items:
            items = dict(list(items.items())[len(items) - max_items :])
        return Pending(items)

    def duplicates(
        self,
        ids: Sequence[str],
        embeddings: Sequence[Sequence[float] | None],
        max_distance: float,
        now: Sequence[float],
        ignore: Collection[str] = (),
    ) -> BoolArray:
        """Which candidates, each at its time ``now``, repeat an id still pending then or lie within
        ``max_distance`` of the embedding of one (judging expiry per candidate keeps decisions independent
        of where a stream is cut into batches). Entries of the ids in ``ignore`` do not count."""
        items = self.items
        out = np.fromiter(
            (i in items and i not in ignore and items[i][0] > t for i, t in zip(ids, now, strict=True)),
            dtype=bool,
            count=len(ids),
        )
        if max_distance <= 0 or not items:
            return out
        known = [(x, e) for k, (x, e) in items.items() if e is not None and k not in ignore]
        for j, e in enumerate(embeddings):
            if out[j] or e is None:
                continue
            near = [k for x, k in known if x > now[j] and len(k) == len(e)]
            if (
                near
                and float(np.min(np.linalg.norm(np.asarray(near) - np.asarray(e), axis=1))) <= max_distance
            ):
                out[j] = True
        return out

    def to_dict(self) -> dict[str, Any]:
        return {k: [e, list(v) if v is not None else None] for k, (e, v) in self.items.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Pending:
        return cls({k: (float(e), tuple(v) if v is not None else None) for k, (e, v) in d.items()})
