"""Human labels as they arrive: one vote per annotator and item, resolved by quorum majority.

A label message is ``{id, label, annotator, ts}``; ``label: null`` retracts that annotator's vote. Ingestion
is idempotent and order-independent: the same message twice changes nothing, a message older (by ``ts``) than
the vote it would replace is ignored, and at equal ``ts`` the greater label stands, so a replayed or reordered
labels topic ends in the same state.

An item is **resolved** when at least ``quorum`` annotators voted and one label has a strict majority of the
votes; its agreement is that label's share of the votes. :func:`pairwise_agreement` measures the annotators'
agreement over all items with two or more votes (the chance that two votes on the same item, drawn without
replacement, agree).

Example:
    >>> book = LabelBook()
    >>> book = book.with_events([LabelEvent("a", "dent", "ann1", 1.0), LabelEvent("a", "dent", "ann2", 2.0)])
    >>> book.resolve("a", quorum=2)
    Resolution(label='dent', votes=2, agreement=1.0)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import orjson

from selector.messages.timestamps import parse_ts


@dataclass(frozen=True)
class LabelEvent:
    """One label message; ``label`` None retracts the annotator's vote on the item."""

    id: str
    label: str | None
    annotator: str
    ts: float


@dataclass(frozen=True)
class Resolution:
    """An item's resolved label (None while unresolved), the number of votes and the winner's share."""

    label: str | None
    votes: int
    agreement: float


Vote = tuple[str | None, float]
"""(label or None for a retraction, ts) of one annotator on one item."""


@dataclass(frozen=True)
class LabelBook:
    """Every annotator's latest vote per item. Immutable: :meth:`with_events` returns a new book."""

    votes: dict[str, dict[str, Vote]] = field(default_factory=dict)

    def with_events(self, events: Iterable[LabelEvent]) -> LabelBook:
        """The book after applying ``events`` (a retraction is kept as a vote of None, so an older vote
        arriving late cannot revive it)."""
        votes: dict[str, dict[str, Vote]] | None = None
        for e in events:
            current = (votes or self.votes).get(e.id, {}).get(e.annotator)
            if current is not None and _order(current) >= _order((e.label, e.ts)):
                continue  # stale or repeated
            if votes is None:
                votes = dict(self.votes)
            item = dict(votes.get(e.id, {}))
            item[e.annotator] = (e.label, e.ts)
            votes[e.id] = item
        return self if votes is None else LabelBook(votes)

    def labels_of(self, item: str) -> list[str]:
        """The current (not retracted) votes on an item, by annotator name."""
        return [label for _, (label, _) in sorted(self.votes.get(item, {}).items()) if label is not None]

    def resolve(self, item: str, quorum: int = 1) -> Resolution:
        """Quorum majority: at least ``quorum`` votes and a label with a strict majority of them."""
        labels = self.labels_of(item)
        if not labels:
            return Resolution(None, 0, 0.0)
        ((top, count),) = Counter(labels).most_common(1)
        resolved = len(labels) >= quorum and count > len(labels) / 2
        return Resolution(top if resolved else None, len(labels), count / len(labels))


def _order(vote: Vote) -> tuple[float, str]:
    """Which of two votes of one annotator stands: the later one; at the same ``ts``, the greater label (a
    retraction counts as the empty label), so the outcome never depends on arrival order."""
    return vote[1], vote[0] or ""


def pairwise_agreement(book: LabelBook) -> tuple[float, int]:
    """Mean chance that two different votes on the same item agree, over items with >= 2 votes, weighted by
    their number of vote pairs; and the number of such items. NaN with none."""
    agreeing = pairs = items = 0
    for item in book.votes:
        labels = book.labels_of(item)
        n = len(labels)
        if n < 2:
            continue
        items += 1
        pairs += n * (n - 1) // 2
        agreeing += sum(c * (c - 1) // 2 for c in Counter(labels).values())
    return (agreeing / pairs if pairs else float("nan")), items


def parse_label(raw: bytes | None, classes: Sequence[str], kafka_ts_s: float) -> LabelEvent | tuple[str, str]:
    """A label message as a :class:`LabelEvent`, or the (reason, message) why it is invalid.

    ``id`` (non-empty string) is required; ``label`` is a class name or null (a retraction); ``annotator``
    defaults to ``"unknown"``; ``ts`` is RFC 3339 or epoch milliseconds, else the Kafka timestamp.
    """
    try:
        obj = orjson.loads(raw) if raw is not None else None
    except orjson.JSONDecodeError as exc:
        return "malformed_json", f"not valid JSON: {exc}"
    if not isinstance(obj, dict):
        return "not_an_object", f"a label must be a JSON object, got {type(obj).__name__}"
    rid = obj.get("id")
    if not isinstance(rid, str) or not rid:
        return "bad_id", f"'id' must be a non-empty string: {rid!r}"
    label = obj.get("label")
    if label is not None and label not in classes:
        return (
            "unknown_label",
            f"'label' must be one of the configured classes {list(classes)!r} or null: {label!r}",
        )
    annotator = obj.get("annotator", "unknown")
    if not isinstance(annotator, str) or not annotator:
        return "bad_annotator", f"'annotator' must be a non-empty string: {annotator!r}"
    try:
        ts = parse_ts(obj["ts"]) if obj.get("ts") is not None else kafka_ts_s
    except ValueError as exc:
        return "bad_ts", str(exc)
    return LabelEvent(rid, label, annotator, ts)
