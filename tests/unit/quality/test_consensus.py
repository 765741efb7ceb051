"""Consensus of annotators: majority vote exactly as the label book resolves, Dawid-Skene weighing annotators
by their estimated reliability (optionally with the model's probabilities as a weighed prior), and weak items.

Invariants proved here with hypothesis: majority mode equals :meth:`LabelBook.resolve` on random books; a
label is always among the item's votes, and missing only below quorum or on a tie; renaming the annotators
(which reorders them) or reordering the items changes no item; renaming the classes renames the labels; a
weak item has fewer than ``max_votes`` votes; confidences lie in [0, 1]; the result is deterministic.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selector.quality.consensus import MAX_ITERATIONS, ConsensusError, consensus
from selector.quality.labels import LabelBook, LabelEvent, Vote

CLASSES = ["ok", "scratch", "dent", "crack"]
ANNOTATORS = ["ann", "bob", "cy", "dee", "eve"]


def book_of(votes: dict[str, dict[str, str | None]]) -> LabelBook:
    return LabelBook({rid: {a: (label, 1.0) for a, label in vs.items()} for rid, vs in votes.items()})


books = st.dictionaries(
    st.text("abcdef", min_size=1, max_size=3),
    st.dictionaries(st.sampled_from(ANNOTATORS), st.sampled_from([*CLASSES, None]), max_size=5),
    max_size=25,
).map(book_of)


def simulated(n: int, accuracies: dict[str, float], votes: int, seed: int) -> tuple[LabelBook, np.ndarray]:
    """``n`` items of 4 classes (prior 0.7/0.1/0.1/0.1), each voted on by ``votes`` annotators drawn at
    random, each right with their accuracy and otherwise any other class evenly."""
    rng = np.random.default_rng(seed)
    k = len(CLASSES)
    truth = rng.choice(k, size=n, p=[0.7, 0.1, 0.1, 0.1])
    names = list(accuracies)
    acc = np.array([accuracies[a] for a in names])
    pick = np.argsort(rng.random((n, len(names))), axis=1)[:, :votes]
    right = rng.random((n, votes)) < acc[pick]
    said = np.where(right, truth[:, None], (truth[:, None] + rng.integers(1, k, size=(n, votes))) % k)
    table: dict[str, dict[str, Vote]] = {
        f"i{i}": {names[pick[i, v]]: (CLASSES[said[i, v]], 0.0) for v in range(votes)} for i in range(n)
    }
    return LabelBook(table), truth


class TestMajority:
    @settings(max_examples=150, deadline=None)
    @given(books, st.integers(1, 4))
    def test_majority_mode_is_the_books_quorum_majority(self, book: LabelBook, quorum: int) -> None:
        """Label, votes and agreement equal LabelBook.resolve for every item, retractions included."""
        c = consensus(book, CLASSES, method="majority", quorum=quorum)
        assert set(c.items) == set(book.votes)
        for rid in book.votes:
            got, want = c.items[rid], book.resolve(rid, quorum)
            assert (got.label, got.votes, got.agreement) == (want.label, want.votes, want.agreement)

    def test_a_split_vote_is_weak_and_a_unanimous_one_is_not(self) -> None:
        """1:1 has no label and asks for another vote; 2:0 is labeled with confidence 1."""
        c = consensus(
            book_of({"a": {"ann": "ok", "bob": "dent"}, "b": {"ann": "ok", "bob": "ok"}}),
            CLASSES,
            method="majority",
        )
        assert (c.items["a"].label, c.items["a"].weak) == (None, True)
        assert (c.items["b"].label, c.items["b"].confidence, c.items["b"].weak) == ("ok", 1.0, False)
        assert c.annotators["ann"].confusion is None
        assert c.annotators["ann"].agreement_with_consensus == 1.0  # graded on "b" only


class TestInvariants:
    @settings(max_examples=120, deadline=None)
    @given(books, st.integers(1, 3), st.sampled_from(["majority", "dawid_skene"]), st.integers(2, 4))
    def test_labels_are_votes_and_missing_only_below_quorum_or_on_a_tie(
        self, book: LabelBook, quorum: int, method: str, max_votes: int
    ) -> None:
        """A label is one of the item's votes; no label means too few votes or a tie, and a tie (or no vote)
        is never labeled; weak items have fewer than max_votes votes; confidence in [0, 1]."""
        c = consensus(book, CLASSES, quorum=quorum, method=method, max_votes=max_votes)  # type: ignore[arg-type]
        for rid in book.votes:
            item, votes = c.items[rid], book.labels_of(rid)
            assert item.votes == len(votes)
            assert 0.0 <= item.confidence <= 1.0 + 1e-12
            if item.label is not None:
                assert item.label in votes and item.votes >= quorum
            elif item.votes >= quorum and item.votes > 0:
                assert item.weak or item.votes >= max_votes  # unlabeled with enough votes: a tie
            if item.weak:
                assert 0 < item.votes < max_votes

    @settings(max_examples=80, deadline=None)
    @given(books, st.permutations(range(len(ANNOTATORS))), st.randoms(use_true_random=False))
    def test_renaming_annotators_and_reordering_items_changes_no_item(
        self, book: LabelBook, perm: list[int], rnd: object
    ) -> None:
        """Annotators renamed by a permutation (so sorted differently) and items inserted in another order:
        every item keeps its label, votes and weak flag; confidences agree to 1e-9; reports follow names."""
        rename = {a: f"z{perm[j]}" for j, a in enumerate(ANNOTATORS)}
        ids = list(book.votes)
        rnd.shuffle(ids)  # type: ignore[attr-defined]
        other = LabelBook({rid: {rename[a]: v for a, v in book.votes[rid].items()} for rid in ids})
        one, two = consensus(book, CLASSES), consensus(other, CLASSES)
        for rid in book.votes:
            a, b = one.items[rid], two.items[rid]
            assert (a.label, a.votes, a.weak) == (b.label, b.votes, b.weak)
            assert a.confidence == pytest.approx(b.confidence, abs=1e-9)
        for name, report in one.annotators.items():
            assert report.estimated_accuracy == pytest.approx(
                two.annotators[rename[name]].estimated_accuracy, abs=1e-9
            )

    @settings(max_examples=60, deadline=None)
    @given(books, st.permutations(range(len(CLASSES))))
    def test_renaming_classes_renames_the_labels(self, book: LabelBook, perm: list[int]) -> None:
        """Classes listed in another order (and renamed): each item's label is the renamed label, and its
        confidence agrees to 1e-9 (no class is favoured by its position)."""
        rename = {c: f"c{perm[k]}" for k, c in enumerate(CLASSES)}
        other = LabelBook(
            {rid: {a: (rename.get(lab, lab) if lab else None, t) for a, (lab, t) in vs.items()}
             for rid, vs in book.votes.items()}
        )  # fmt: skip
        one, two = consensus(book, CLASSES), consensus(other, sorted(rename.values()))
        for rid in book.votes:
            a, b = one.items[rid], two.items[rid]
            assert (rename.get(a.label or ""), a.weak) == (b.label, b.weak)
            assert a.confidence == pytest.approx(b.confidence, abs=1e-9)

    def test_the_same_book_gives_the_same_result(self) -> None:
        """Deterministic, and EM stops within its bound."""
        book, _ = simulated(500, {"ann": 0.9, "bob": 0.7, "cy": 0.6}, 2, seed=3)
        one, two = consensus(book, CLASSES), consensus(book, CLASSES)
        assert np.array_equal(one.items.confidence, two.items.confidence)
        assert 1 <= one.iterations <= MAX_ITERATIONS


class TestDawidSkene:
    def test_recovers_known_annotator_accuracies_and_beats_majority(self) -> None:
        """3,000 items, 3 votes each from 5 annotators of accuracy 0.95-0.55: each estimated accuracy within
        0.03 of the truth, agreement ranks them alike, and Dawid-Skene labels more items correctly than
        majority vote (which leaves ties unlabeled)."""
        truth_acc = {"ann": 0.95, "bob": 0.9, "cy": 0.8, "dee": 0.65, "eve": 0.55}
        book, truth = simulated(3000, truth_acc, 3, seed=1)
        ds = consensus(book, CLASSES)
        for name, acc in truth_acc.items():
            assert ds.annotators[name].estimated_accuracy == pytest.approx(acc, abs=0.03)
            assert ds.annotators[name].items == pytest.approx(3000 * 3 / 5, rel=0.1)
        assert ds.class_prior is not None and ds.class_prior[0] == pytest.approx(0.7, abs=0.03)

        def correct(c: object) -> int:
            return sum(c.items[f"i{i}"].label == CLASSES[t] for i, t in enumerate(truth))  # type: ignore[attr-defined]

        assert correct(ds) > correct(consensus(book, CLASSES, method="majority")) + 150

    def test_a_reliable_annotator_outweighs_two_unreliable_ones(self) -> None:
        """Where the 0.95 annotator disagrees with two who agree by chance, it often wins: on such items
        Dawid-Skene follows the reliable one more often than majority vote could (never)."""
        book, _ = simulated(4000, {"ann": 0.97, "dee": 0.4, "eve": 0.4}, 3, seed=2)
        ds = consensus(book, CLASSES)
        against = [rid for rid, vs in book.votes.items() if vs["dee"][0] == vs["eve"][0] != vs["ann"][0]]
        assert len(against) > 20
        assert sum(ds.items[rid].label == book.votes[rid]["ann"][0] for rid in against) > len(against) / 2

    def test_one_vote_stands_with_its_annotators_estimated_accuracy(self) -> None:
        """An item with one vote keeps it, with the annotator's estimated accuracy as confidence: a poor
        annotator's lone vote is weak, a good one's is not; quorum 2 leaves both unlabeled."""
        book, _ = simulated(2000, {"ann": 0.95, "bob": 0.95, "eve": 0.5}, 2, seed=4)
        book = book.with_events([LabelEvent("x", "dent", "eve", 1.0), LabelEvent("y", "crack", "ann", 1.0)])
        c = consensus(book, CLASSES)
        x, y = c.items["x"], c.items["y"]
        assert (x.label, x.votes, x.agreement) == ("dent", 1, 1.0)
        assert x.confidence == c.annotators["eve"].estimated_accuracy < 0.8 and x.weak
        assert y.confidence == c.annotators["ann"].estimated_accuracy > 0.9 and not y.weak
        assert consensus(book, CLASSES, quorum=2).items["x"].label is None

    def test_evenly_split_votes_of_equals_are_a_tie(self) -> None:
        """Two annotators nobody can tell apart disagree: no label, weak."""
        c = consensus(book_of({"a": {"ann": "ok", "bob": "dent"}}), CLASSES)
        assert (c.items["a"].label, c.items["a"].weak) == (None, True)
        assert c.items["a"].confidence < 0.5  # the rest on classes nobody voted for

    def test_an_item_with_max_votes_is_never_weak(self) -> None:
        """A three-way split with max_votes 3 asks no more."""
        split = {"a": {"ann": "ok", "bob": "dent", "cy": "crack"}}
        assert not consensus(book_of(split), CLASSES, max_votes=3).items["a"].weak
        assert consensus(book_of(split), CLASSES, max_votes=4).items["a"].weak


class TestModelPrior:
    def test_the_models_weight_follows_its_worth(self) -> None:
        """A model whose probabilities point at the truth gets a weight near 1; one that points confidently
        at a wrong class gets a weight near 0, and then changes no label that the votes decide."""
        book, truth = simulated(2000, {"ann": 0.9, "bob": 0.8, "cy": 0.7}, 2, seed=5)
        good = {f"i{i}": np.eye(4)[t] * 0.9 + 0.025 for i, t in enumerate(truth)}
        bad = {f"i{i}": np.eye(4)[(t + 1) % 4] * 0.9 + 0.025 for i, t in enumerate(truth)}
        with_good = consensus(book, CLASSES, model_probs=good)
        with_bad = consensus(book, CLASSES, model_probs=bad)
        assert with_good.model_weight is not None and with_good.model_weight > 0.8
        assert with_bad.model_weight is not None and with_bad.model_weight < 0.2
        assert consensus(book, CLASSES).model_weight is None

    def test_a_lone_vote_the_model_contradicts_is_weak(self) -> None:
        """With the model's probabilities a lone vote's confidence is its posterior: a good annotator's vote
        that the model is sure against falls below weak_below; the vote still stands as the label."""
        book, truth = simulated(1000, {"ann": 0.9, "bob": 0.9}, 2, seed=6)
        probs = {f"i{i}": np.eye(4)[t] * 0.9 + 0.025 for i, t in enumerate(truth)}
        book = book.with_events([LabelEvent("x", "dent", "ann", 1.0)])
        probs["x"] = np.array([0.97, 0.01, 0.01, 0.01])
        x = consensus(book, CLASSES, model_probs=probs).items["x"]
        assert x.label == "dent" and x.weak and x.confidence < 0.5

    def test_probabilities_of_the_wrong_shape_are_refused(self) -> None:
        book = book_of({"a": {"ann": "ok"}})
        with pytest.raises(ConsensusError, match=r"model_probs\['a'\] must be 4 finite non-negative"):
            consensus(book, CLASSES, model_probs={"a": np.array([0.5, 0.5])})


class TestEdges:
    def test_an_empty_book_has_no_items_and_no_annotators(self) -> None:
        for method in ("majority", "dawid_skene"):
            c = consensus(LabelBook(), CLASSES, method=method)  # type: ignore[arg-type]
            assert (len(c.items), c.annotators, c.weak_items()) == (0, {}, [])

    def test_an_item_whose_votes_were_all_retracted_is_neither_labeled_nor_weak(self) -> None:
        c = consensus(book_of({"a": {"ann": None}, "b": {"ann": "ok", "bob": "ok"}}), CLASSES)
        assert (c.items["a"].label, c.items["a"].votes, c.items["a"].weak) == (None, 0, False)
        assert c.annotators["ann"].items == 1

    def test_weak_items_come_least_confident_first(self) -> None:
        """A unanimous item is not weak; the weak ones are listed by confidence."""
        book = book_of(
            {"a": {"ann": "ok", "bob": "dent"}, "b": {"ann": "ok", "bob": "ok"}, "c": {"cy": "ok"}}
        )
        c = consensus(book, CLASSES, method="majority", weak_below=0.9)
        # a split vote (0.5), then a lone vote of an annotator nobody could check (the prior's 0.85)
        assert c.weak_items() == ["a", "c"]

    def test_a_vote_for_an_unknown_class_is_an_error_naming_it(self) -> None:
        with pytest.raises(ConsensusError, match=r"item 'a': annotator 'ann' voted 'void', not one of"):
            consensus(book_of({"a": {"ann": "void"}}), CLASSES)

    def test_an_unknown_method_or_no_classes_is_an_error(self) -> None:
        with pytest.raises(ConsensusError, match="method must be one of"):
            consensus(LabelBook(), CLASSES, method="vote")  # type: ignore[arg-type]
        with pytest.raises(ConsensusError, match="one or more distinct"):
            consensus(LabelBook(), ["ok", "ok"])

    def test_agreement_with_consensus_is_nan_without_company(self) -> None:
        c = consensus(book_of({"a": {"ann": "ok"}}), CLASSES)
        assert math.isnan(c.annotators["ann"].agreement_with_consensus)
