"""Consensus of several annotators, each weighed by their estimated reliability; weak consensus is flagged.

:func:`consensus` resolves every item of a :class:`~selector.quality.labels.LabelBook` by one of two methods:

- ``majority``: exactly :meth:`LabelBook.resolve` (at least ``quorum`` votes and a strict majority).
- ``dawid_skene`` (Dawid & Skene 1979): every annotator ``j`` has a confusion matrix
  ``theta_j[k, l] = P(j says l | the item is k)`` and the classes a prior ``pi``. EM alternates

  - E-step: ``T_i[k] ∝ pi_k prod_{j voted l on i} theta_j[k, l]``, the posterior of item ``i``'s class;
  - M-step: ``theta_j[k, l] = (n_jkl + s m_jkl) / (sum_l n_jkl + s)`` with
    ``n_jkl = sum_{i: j said l} T_i[k]``, and ``pi_k = (sum_i T_i[k] + 1) / (N + K)``,

  from every annotator at the prior accuracy, until the posteriors move by less than :data:`TOLERANCE` on
  average (at most :data:`MAX_ITERATIONS` rounds). The Dirichlet prior ``s m_j`` (:data:`PRIOR_STRENGTH`
  pseudo-votes per row, mean accuracy on the diagonal, the rest spread evenly) is centred on the annotator's
  own pooled accuracy, itself shrunk towards :data:`PRIOR_ACCURACY` by as many pseudo-votes: an annotator is
  not judged on three items, and a rare class's row borrows the annotator's overall accuracy. Only votes on
  items with two or more votes (or with the model's probabilities) teach a confusion matrix: a lone vote
  agrees with itself and would make everyone look perfect. Items with the same votes share one posterior, so
  EM runs once per distinct vote pattern.

  ``model_probs`` (optional, per item id): the model's probabilities enter as the item's prior, a mixture
  ``lam p_i + (1 - lam) pi`` whose weight ``lam`` EM estimates too (the share of items the model explains
  better than the class prior, with a Beta(1, 1) prior), so a model the votes contradict is trusted less:
  the model as one more, weighed, source, in the spirit of CROWDLAB (Goh, Gupta & Mueller 2022).

An item's **label** is among its votes: the voted class of highest posterior (none on a tie within
:data:`TIE_TOLERANCE`, or with fewer than ``quorum`` votes). Its **confidence** is that posterior; an item
with one vote keeps that vote, with the annotator's estimated accuracy as its confidence (with the model's
probabilities: the vote's posterior). It is **weak** when its confidence is below ``weak_below`` or its votes
tie, and it has fewer than ``max_votes`` votes: another vote is wanted.

Example:
    >>> from selector.quality.labels import LabelEvent
    >>> book = LabelBook().with_events(
    ...     [LabelEvent("a", "ok", "ann1", 1.0), LabelEvent("a", "dent", "ann2", 1.0)])
    >>> c = consensus(book, ["ok", "dent"], method="majority")
    >>> c.items["a"]
    ItemConsensus(label=None, votes=2, agreement=0.5, confidence=0.5, weak=True)
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Literal

import numpy as np

from selector.arrays import BoolArray, FloatArray, IntArray
from selector.errors import SelectorError
from selector.quality.labels import LabelBook

Method = Literal["majority", "dawid_skene"]
METHODS: tuple[Method, ...] = ("majority", "dawid_skene")

PRIOR_ACCURACY = 0.85
"""What an annotator of unknown quality is assumed to get right (the Dirichlet prior's mean)."""
PRIOR_STRENGTH = 5.0
"""Pseudo-votes behind :data:`PRIOR_ACCURACY`, and behind each confusion row's prior."""
MAX_ITERATIONS = 50
TOLERANCE = 1e-5
"""EM stops when the posteriors move by less than this, on average over items and classes."""
TIE_TOLERANCE = 1e-9
"""Posteriors closer than this are a tie (float sums in another order must not flip a label)."""


class ConsensusError(SelectorError, ValueError):
    """A vote or a model's probabilities do not fit the classes, or the method is unknown."""


@dataclass(frozen=True, slots=True)
class ItemConsensus:
    """An item's consensus: ``label``, ``votes`` and ``agreement`` (the label's share of the votes) as in
    :class:`~selector.quality.labels.Resolution`, the label's ``confidence`` and whether another vote is
    wanted (``weak``)."""

    label: str | None
    votes: int
    agreement: float
    confidence: float
    weak: bool


class ItemTable(Mapping[str, ItemConsensus]):
    """Every item's consensus by id, kept as arrays (an :class:`ItemConsensus` is built on access)."""

    def __init__(
        self,
        ids: list[str],
        classes: tuple[str, ...],
        label: IntArray,
        votes: IntArray,
        agreement: FloatArray,
        confidence: FloatArray,
        weak: BoolArray,
    ) -> None:
        self.ids, self.classes = ids, classes
        self.label, self.votes, self.agreement, self.confidence, self.weak = (
            label, votes, agreement, confidence, weak
        )  # fmt: skip
        self._index = dict(zip(ids, range(len(ids)), strict=True))

    def __getitem__(self, item: str) -> ItemConsensus:
        i = self._index[item]
        k = int(self.label[i])
        return ItemConsensus(
            self.classes[k] if k >= 0 else None,
            int(self.votes[i]),
            float(self.agreement[i]),
            float(self.confidence[i]),
            bool(self.weak[i]),
        )

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class AnnotatorReport:
    """One annotator: items voted on; the share of their votes equal to the consensus label (over items with
    two or more votes and a label; NaN with none); estimated accuracy (``sum_k pi_k theta[k, k]``; for
    ``majority``, that agreement shrunk towards :data:`PRIOR_ACCURACY`); confusion matrix (rows: true class;
    None for ``majority``)."""

    name: str
    items: int
    agreement_with_consensus: float
    estimated_accuracy: float
    confusion: FloatArray | None


@dataclass(frozen=True)
class Consensus:
    """Every item's consensus and every annotator's report; ``class_prior`` (Dawid-Skene's ``pi``),
    ``model_weight`` (``lam``, when the model's probabilities were used) and the EM ``iterations``."""

    method: Method
    classes: tuple[str, ...]
    items: ItemTable
    annotators: dict[str, AnnotatorReport]
    class_prior: FloatArray | None = None
    model_weight: float | None = None
    iterations: int = 0

    def weak_items(self) -> list[str]:
        """The weak items, least confident first (then by id)."""
        t = self.items
        return [t.ids[i] for i in sorted(np.flatnonzero(t.weak), key=lambda i: (t.confidence[i], t.ids[i]))]


@dataclass(frozen=True)
class _Votes:
    """The book's current votes as parallel arrays, by item and then annotator; annotators by name."""

    ids: list[str]
    names: list[str]
    item: IntArray
    annotator: IntArray
    label: IntArray


def consensus(
    book: LabelBook,
    classes: Sequence[str],
    *,
    quorum: int = 1,
    method: Method = "dawid_skene",
    model_probs: Mapping[str, FloatArray] | None = None,
    weak_below: float = 0.8,
    max_votes: int = 3,
) -> Consensus:
    """Resolve every item of ``book`` (see the module docstring); ``model_probs`` is used by ``dawid_skene``
    only (``majority`` counts votes).

    Raises:
        ConsensusError: a vote names a class not in ``classes``, a model's probabilities are not one finite
            non-negative number per class, ``classes`` is empty or repeats a name, or ``method`` is unknown.
    """
    if method not in METHODS:
        raise ConsensusError(f"method must be one of {list(METHODS)}: {method!r}")
    classes = tuple(classes)
    if not classes or len(set(classes)) != len(classes):
        raise ConsensusError(f"classes must be one or more distinct names: {list(classes)!r}")
    v = _votes_of(book, classes)
    n, k, names = len(v.ids), len(classes), len(v.names)
    counts = np.bincount(v.item * k + v.label, minlength=n * k).reshape(n, k)
    votes = counts.sum(axis=1)
    has_model = np.zeros(n, dtype=bool)
    if method == "majority":
        post = counts / np.maximum(votes, 1)[:, None]
        accuracy, confusion, prior, weight, rounds = None, None, None, None, 0
    else:
        probs = _model_prior(v.ids, model_probs, k)
        has_model = ~np.isnan(probs[:, 0])
        post, confusion, prior, weight, rounds = _dawid_skene(v, counts, votes, probs)
        accuracy = np.einsum("k,jkk->j", prior, confusion)
    # the candidate is the voted class of highest posterior; the runner-up tells a tie
    masked = np.where(counts > 0, post, -1.0)
    top, rows = masked.argmax(axis=1), np.arange(n)
    best = masked[rows, top]
    masked[rows, top] = -2.0
    second = masked.max(axis=1)
    tie = counts[rows, top] * 2 <= votes if method == "majority" else best - second <= TIE_TOLERANCE
    agreement = np.where(votes > 0, counts[rows, top] / np.maximum(votes, 1), 0.0)
    confidence = np.where(votes > 0, best, 0.0)
    # each annotator's agreement with the labels of items with company
    graded_label = np.where((votes >= 2) & ~tie, top, -1)[v.item]
    graded = graded_label >= 0
    graded_n = np.bincount(v.annotator[graded], minlength=names)
    agreeing = np.bincount(v.annotator[graded & (v.label == graded_label)], minlength=names)
    if accuracy is None:  # majority: the agreement, shrunk towards the prior
        accuracy = (agreeing + PRIOR_STRENGTH * PRIOR_ACCURACY) / (graded_n + PRIOR_STRENGTH)
    single = votes == 1
    if single.any():  # a lone vote stands, as sure as its annotator (or as annotator and model together)
        lone = v.annotator[np.searchsorted(v.item, rows[single])]
        confidence[single] = np.where(has_model[single], confidence[single], accuracy[lone])
        tie[single] = False
    weak = (votes > 0) & (votes < max_votes) & (tie | (confidence < weak_below))
    label = np.where((votes > 0) & (votes >= quorum) & ~tie, top, -1)
    voted = np.bincount(v.annotator, minlength=names)
    annotators = {
        name: AnnotatorReport(
            name,
            int(voted[j]),
            float(agreeing[j] / graded_n[j]) if graded_n[j] else math.nan,
            float(accuracy[j]),
            None if confusion is None else confusion[j],
        )
        for j, name in enumerate(v.names)
    }
    items = ItemTable(v.ids, classes, label, votes, agreement, confidence, weak)
    return Consensus(method, classes, items, annotators, prior, weight, rounds)


def _votes_of(book: LabelBook, classes: tuple[str, ...]) -> _Votes:
    """The book's votes (retractions left out) as arrays, ordered by item and then annotator."""
    ids = list(book.votes)
    per_item = list(book.votes.values())
    sizes = np.fromiter(map(len, per_item), dtype=np.int64, count=len(per_item))
    flat = list(chain.from_iterable(map(dict.items, per_item)))
    who = [name for name, _ in flat]
    said = [vote for _, (vote, _) in flat]
    index: dict[str | None, int] = {c: k for k, c in enumerate(classes)}
    index[None] = -1  # a retraction
    coded = list(map(index.get, said))
    if None in coded:
        at = coded.index(None)
        rid = ids[int(np.searchsorted(np.cumsum(sizes), at, side="right"))]
        raise ConsensusError(
            f"item {rid!r}: annotator {who[at]!r} voted {said[at]!r}, not one of the classes "
            f"{list(classes)!r} (were classes changed after labels were stored?)"
        )
    names = sorted(set(who))
    number = {name: j for j, name in enumerate(names)}
    label = np.fromiter(coded, dtype=np.int64, count=len(coded))
    annotator = np.fromiter(map(number.__getitem__, who), dtype=np.int64, count=len(who))
    item = np.repeat(np.arange(len(ids), dtype=np.int64), sizes)
    keep = label >= 0
    item, annotator, label = item[keep], annotator[keep], label[keep]
    order = np.lexsort((annotator, item))
    return _Votes(ids, names, item[order], annotator[order], label[order])


def _model_prior(ids: list[str], model_probs: Mapping[str, FloatArray] | None, k: int) -> FloatArray:
    """The model's probabilities per item, normalised; rows of NaN where it has none."""
    out = np.full((len(ids), k), np.nan)
    given = [model_probs.get(rid) for rid in ids] if model_probs else []
    rows = [i for i, p in enumerate(given) if p is not None]
    if not rows:
        return out
    try:
        probs = np.asarray([given[i] for i in rows], dtype=np.float64)
    except ValueError:  # rows of different lengths
        probs = np.empty((0, 0))
    if probs.shape != (len(rows), k) or not _fine(probs).all():
        for i in rows:  # name the first bad one
            p = np.asarray(given[i], dtype=np.float64)
            if p.shape != (k,) or not _fine(p[None]).all():
                raise ConsensusError(
                    f"model_probs[{ids[i]!r}] must be {k} finite non-negative numbers, one per class: "
                    f"{p.tolist()}"
                )
    out[rows] = probs / probs.sum(axis=1, keepdims=True)
    return out


def _fine(p: FloatArray) -> BoolArray:
    """Rows that are finite, non-negative and not all zero."""
    ok: BoolArray = np.isfinite(p).all(axis=1) & (p >= 0).all(axis=1) & (p.sum(axis=1) > 0)
    return ok


@dataclass(frozen=True)
class _Patterns:
    """Distinct vote patterns of the voted items (an item with the model's probabilities is its own)."""

    of_item: IntArray
    """each voted item's pattern"""
    weight: FloatArray
    """items per pattern"""
    buckets: list[tuple[slice, IntArray]]
    """per number of votes: the patterns (a run of them), and their votes' (annotator, said) codes as
    columns"""


def _patterns(group: IntArray, size: IntArray, model_rows: IntArray) -> _Patterns:
    """Group the voted items (``size`` votes each, ``group`` codes in item order) by vote pattern."""
    starts = np.concatenate(([0], np.cumsum(size)[:-1]))
    of_item = np.empty(size.size, dtype=np.int64)
    buckets = []
    first = 0
    for m in np.unique(size):
        members = np.flatnonzero(size == m)
        cols = group[starts[members][:, None] + np.arange(m)]
        keyed = np.column_stack((cols, model_rows[members]))  # a model's item stays on its own
        unique, inverse = np.unique(keyed, axis=0, return_inverse=True)
        of_item[members] = first + inverse.ravel()
        buckets.append((slice(first, first + len(unique)), np.ascontiguousarray(unique[:, :m])))
        first += len(unique)
    return _Patterns(of_item, np.bincount(of_item, minlength=first).astype(np.float64), buckets)


def _dawid_skene(
    v: _Votes, counts: IntArray, votes: IntArray, model: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray, float | None, int]:
    """EM over the distinct vote patterns; returns the posteriors per item (zero rows for items without a
    vote), the confusion matrices, the class prior, the model's weight and the iterations run."""
    n, k = counts.shape
    names = len(v.names)
    voted = np.flatnonzero(votes > 0)
    post = np.zeros((n, k))
    if voted.size == 0:
        return post, np.zeros((names, k, k)), np.full(k, 1.0 / k), None, 0
    has_model = ~np.isnan(model[voted, 0])
    model_rows = np.where(has_model, np.arange(1, voted.size + 1), 0)
    pat = _patterns(v.label + k * v.annotator, votes[voted], model_rows)
    size, t = np.zeros(len(pat.weight), dtype=np.int64), np.zeros((len(pat.weight), k))
    p_model, mixed = np.zeros((len(pat.weight), k)), np.zeros(len(pat.weight), dtype=bool)
    size[pat.of_item] = votes[voted]
    t[pat.of_item] = counts[voted] / votes[voted][:, None]
    p_model[pat.of_item] = np.nan_to_num(model[voted])
    mixed[pat.of_item] = has_model
    lam = 0.5
    # only votes on items with company (or with the model) say anything about their annotator
    teach = pat.weight * ((size >= 2) | mixed)
    # start from the vote shares' class prior with every annotator at the prior accuracy (starting from the
    # shares themselves, lone votes checked by the model would find every annotator perfect, and stay there)
    prior = (pat.weight @ t + 1.0) / (pat.weight.sum() + k)
    _, theta = _m_step(np.zeros_like(t), pat.weight, teach, pat.buckets, names)
    rounds = 0
    for rounds in range(1, MAX_ITERATIONS + 1):  # noqa: B007 (the count is reported)
        log_said = np.log(theta).transpose(0, 2, 1).reshape(names * k, k)  # [(j, l), k] = log theta_j[k, l]
        like = np.empty_like(t)
        for run, cols in pat.buckets:
            like[run] = log_said[cols[:, 0]]
            for c in range(1, cols.shape[1]):
                like[run] += log_said[cols[:, c]]
        like = np.exp(like - like.max(axis=1, keepdims=True))
        new = like * prior
        if mixed.any():  # the model's weight: the share of its items it explains better than the prior
            from_model = (like * p_model).sum(axis=1)
            total = lam * from_model + (1 - lam) * new.sum(axis=1)
            share = np.divide(lam * from_model, total, out=np.zeros_like(total), where=total > 0)
            lam = float((share[mixed].sum() + 1.0) / (mixed.sum() + 2.0))
            new[mixed] = like[mixed] * (lam * p_model[mixed] + (1 - lam) * prior)
        new /= new.sum(axis=1, keepdims=True)
        moved = float(pat.weight @ np.abs(new - t).sum(axis=1)) / (voted.size * k)
        t = new
        prior, theta = _m_step(t, pat.weight, teach, pat.buckets, names)
        if moved < TOLERANCE:
            break
    post[voted] = t[pat.of_item]
    return post, theta, prior, (lam if mixed.any() else None), rounds


def _m_step(
    t: FloatArray, weight: FloatArray, teach: FloatArray, buckets: list[tuple[slice, IntArray]], names: int
) -> tuple[FloatArray, FloatArray]:
    """The class prior (from every pattern's posterior ``t`` times its ``weight``) and the regularised
    confusion matrices (from the votes of patterns with a ``teach`` weight)."""
    k = t.shape[1]
    prior = (weight @ t + 1.0) / (weight.sum() + k)
    # n[j, k, l]: the posterior mass of class k behind annotator j's votes for l
    mass = np.ascontiguousarray((t * teach[:, None]).T)
    flat = np.zeros((k, names * k))
    for run, cols in buckets:
        for c in range(cols.shape[1]):
            for true in range(k):
                flat[true] += np.bincount(cols[:, c], weights=mass[true, run], minlength=names * k)
    n = flat.reshape(k, names, k).transpose(1, 0, 2)
    eye = np.eye(k, dtype=bool)
    pooled = (n[:, eye].sum(axis=1) + PRIOR_STRENGTH * PRIOR_ACCURACY) / (n.sum(axis=(1, 2)) + PRIOR_STRENGTH)
    off = (1.0 - pooled) / max(k - 1, 1)
    mean = np.where(eye, pooled[:, None, None], off[:, None, None]) if k > 1 else np.ones((names, 1, 1))
    theta: FloatArray = (n + PRIOR_STRENGTH * mean) / (n.sum(axis=2, keepdims=True) + PRIOR_STRENGTH)
    return prior, theta
