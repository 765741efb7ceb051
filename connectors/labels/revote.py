"""Weak consensus asks for another vote: the weak items' decisions go to the to-label topic again.

After a round of the label loop has resolved the votes (:func:`selector.quality.consensus.consensus`), each
weak item (consensus confidence below ``dataset.weak_below`` or a tie, fewer than ``dataset.max_votes``
votes) is sent again as its stored decision (:meth:`connectors.model.dataset.DatasetStore.decisions_of`),
keyed by its id, with one added field::

    "revote": {"votes": 2, "confidence": 0.55, "requested_at": "2026-12-06T03:00:00Z"}

so an annotation tool that reads the to-label topic sees the item again and knows why. An item is asked at
most once per number of votes it has (a new vote that leaves it weak asks again, until ``max_votes``), the
least confident first, at most ``dataset.max_revotes_per_round`` per call and, since another vote costs a
label like a query, no more than ``dataset.revote_share`` of the items with votes in all. What was asked is
remembered in the store's meta (key :data:`META_KEY`, ``{id: votes when asked}``; the count in all under
:data:`SPENT_KEY`), so a restart asks nothing twice.

Which items are weak is best judged with the model's probabilities as the prior (:func:`revote_consensus`):
with one vote per item they find the lone wrong votes, which the votes alone cannot (``bench/annotators.py``).
The labels the store keeps are resolved from the votes alone, so they stay independent of the model they
judge.

Example (the label loop, after a round)::

    sent = request_votes(store, producer, config, revote_consensus(store, config, store.book()), time.time())
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import orjson
from kafka import KafkaProducer

from connectors.kafka.clients import redact, secrets_of
from connectors.kafka.delivery import Outgoing, deliver, refused_to_dead_letter
from connectors.model.dataset import DatasetStore
from selector.config import Config
from selector.messages.timestamps import rfc3339
from selector.quality.consensus import Consensus, consensus
from selector.quality.labels import LabelBook

log = logging.getLogger(__name__)

META_KEY = "revotes"
"""The store's meta key of the items asked for another vote: ``{id: votes the item had when asked}``."""
SPENT_KEY = "revotes_sent"
"""The store's meta key of how many requests for another vote were sent in all (``dataset.revote_share``)."""


def label_consensus(config: Config, book: LabelBook, quorum: int | None = None) -> Consensus | None:
    """The labels the store's examples carry: ``dataset.consensus`` over the votes alone (no model prior:
    the labels judge the model, so they must not lean on it). None when a vote names a class that is not
    configured (a store written under other ``classes``): then the examples fall back to quorum majority
    and ``selector status`` names the unknown labels. ``quorum``: instead of ``dataset.quorum``."""
    known = set(config.classes)
    if any(label not in known for votes in book.votes.values() for label, _ in votes.values() if label):
        return None
    d = config.dataset
    return consensus(
        book,
        config.classes,
        quorum=quorum or d.quorum,
        method=d.consensus,
        weak_below=d.weak_below,
        max_votes=d.max_votes,
    )


def revote_consensus(store: DatasetStore, config: Config, book: LabelBook) -> Consensus:
    """The consensus that chooses the items to ask again: ``dataset.consensus`` over ``book``, with each
    item's stored model probabilities as its prior (used by ``dawid_skene``; a decision whose probabilities
    do not match the configured classes contributes none)."""
    k = len(config.classes)
    probs = {
        rid: np.asarray(d["probs"], dtype=np.float64)
        for rid, d in store.decisions_of(book.votes).items()
        if len(d["probs"]) == k
    }
    d = config.dataset
    return consensus(
        book,
        config.classes,
        quorum=d.quorum,
        method=d.consensus,
        model_probs=probs,
        weak_below=d.weak_below,
        max_votes=d.max_votes,
    )


def revote_candidates(
    config: Config, consensus: Consensus, asked: dict[str, int], spent: int = 0
) -> list[str]:
    """The weak items to ask now, least confident first: fewer than ``dataset.max_votes`` votes, not asked
    before at their current number of votes, at most ``dataset.max_revotes_per_round``, and no more than
    ``dataset.revote_share`` of the items with votes allows beyond the ``spent`` requests made before."""
    d = config.dataset
    items = consensus.items
    limit = min(d.max_revotes_per_round, max(0, math.floor(d.revote_share * len(items)) - spent))
    most = d.max_votes
    out: list[str] = []
    for rid in consensus.weak_items():
        if len(out) >= limit:
            break
        votes = items[rid].votes
        if votes < most and asked.get(rid) != votes:
            out.append(rid)
    return out


def request_votes(
    store: DatasetStore,
    producer: KafkaProducer,
    config: Config,
    consensus: Consensus,
    now: float,
    *,
    deadline_s: float | None = None,
) -> int:
    """Send the weak items' decisions to the to-label topic again, each with a ``revote`` field; returns how
    many were sent.

    1. choose the items (:func:`revote_candidates`), skipping any without a stored decision;
    2. produce them, keyed by id, and wait for every ack (:func:`connectors.kafka.delivery.deliver`, within
       ``deadline_s``, default ``kafka.outage_deadline_s``; a record the broker refuses for good is
       dead-lettered instead);
    3. only then remember them in the store's meta: a crash before that sends them again (at least once:
       a request may go twice, keyed by the same id).

    Raises:
        DeliveryError: the records could not be delivered within the deadline (nothing is remembered, so the
            next call asks again).
    """
    if config.dataset.max_revotes_per_round == 0 or config.dataset.revote_share == 0:
        return 0
    asked: dict[str, int] = dict(store.get_meta(META_KEY) or {})
    spent = int(store.get_meta(SPENT_KEY) or 0)
    wanted = revote_candidates(config, consensus, asked, spent)
    decisions = store.decisions_of(wanted)
    at = rfc3339(now)
    outgoing: list[Outgoing] = []
    sent: dict[str, int] = {}
    for rid in wanted:
        record: dict[str, Any] | None = decisions.get(rid)
        if record is None:
            log.warning("item %r is weak but has no stored decision; no other vote asked", rid)
            continue
        item = consensus.items[rid]
        record["revote"] = {"votes": item.votes, "confidence": item.confidence, "requested_at": at}
        outgoing.append((config.topics.to_label, rid.encode(), orjson.dumps(record), None))
        sent[rid] = item.votes
    if not outgoing:
        return 0
    secrets = secrets_of(config)
    deliver(
        producer,
        outgoing,
        config.kafka.outage_deadline_s if deadline_s is None else deadline_s,
        lambda exc: f"revote requests undeliverable: {redact(str(exc), secrets)}",
        refused_to_dead_letter(config.topics.dead_letter, at, config.kafka.max_request_size),
    )
    # an item now at max_votes is never asked again: it need not be remembered
    items = consensus.items
    kept = {r: n for r, n in asked.items() if r not in items or items[r].votes < config.dataset.max_votes}
    store.put_meta(META_KEY, kept | sent)
    store.put_meta(SPENT_KEY, spent + len(sent))
    log.info("asked for another vote on %d weak items (%d in all)", len(sent), spent + len(sent))
    return len(sent)
