"""Label ingestion: idempotent, order-independent votes per annotator, retractions, quorum majority, and
annotator agreement."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selector.quality.labels import LabelBook, LabelEvent, Resolution, pairwise_agreement, parse_label


def book(*events: tuple[str, str | None, str, float]) -> LabelBook:
    return LabelBook().with_events(LabelEvent(*e) for e in events)


class TestQuorum:
    def test_majority_resolves_once_the_quorum_is_reached(self) -> None:
        """quorum 3: two votes do not resolve; a 2:1 majority of three does; agreement: the top share."""
        two = book(("a", "dent", "x", 1), ("a", "dent", "y", 2))
        assert two.resolve("a", quorum=3) == Resolution(None, 2, 1.0)
        three = two.with_events([LabelEvent("a", "scratch", "z", 3)])
        assert three.resolve("a", quorum=3) == Resolution("dent", 3, 2 / 3)

    def test_a_tie_is_not_resolved(self) -> None:
        """1:1 has no strict majority, whatever the quorum."""
        assert book(("a", "dent", "x", 1), ("a", "ok", "y", 1)).resolve("a", quorum=1) == Resolution(
            None, 2, 0.5
        )

    def test_unknown_item_has_no_votes(self) -> None:
        assert LabelBook().resolve("nope") == Resolution(None, 0, 0.0)


class TestIdempotentUpdatesAndRetractions:
    def test_the_same_message_twice_changes_nothing(self) -> None:
        """Applying a message again returns the very same book."""
        once = book(("a", "dent", "x", 1))
        assert once.with_events([LabelEvent("a", "dent", "x", 1)]) is once

    def test_a_later_vote_replaces_and_an_older_one_is_ignored(self) -> None:
        """An annotator's newer label wins; a delayed older message does not undo it."""
        b = book(("a", "dent", "x", 1), ("a", "crack", "x", 5), ("a", "ok", "x", 3))
        assert b.labels_of("a") == ["crack"]

    def test_a_retraction_removes_the_vote_and_is_not_revived_by_older_messages(self) -> None:
        """label None retracts; the item falls back to the others' votes; an older vote arriving late stays
        retracted."""
        b = book(("a", "dent", "x", 1), ("a", "ok", "y", 1), ("a", None, "y", 2), ("a", "ok", "y", 1.5))
        assert b.labels_of("a") == ["dent"]
        assert b.resolve("a") == Resolution("dent", 1, 1.0)

    @settings(max_examples=60, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(["a", "b"]),
                st.sampled_from(["ok", "dent", None]),
                st.sampled_from(["x", "y", "z"]),
                st.integers(0, 3).map(float),
            ),
            max_size=20,
        ),
        st.randoms(use_true_random=False),
    )
    def test_any_order_and_any_repetition_give_the_same_book(
        self, events: list[tuple[str, str | None, str, float]], rnd: object
    ) -> None:
        """Shuffling the messages, or sending each twice, ends in the same votes (same-ts conflicts too)."""
        shuffled = list(events) * 2
        rnd.shuffle(shuffled)  # type: ignore[attr-defined]
        assert book(*shuffled).votes == book(*events).votes


class TestAgreement:
    def test_pairwise_agreement_over_items_with_several_votes(self) -> None:
        """Item a: 3 votes, 2 agree (1 of 3 pairs); item b: 2 agreeing votes (1 of 1); item c alone is left
        out: (1 + 1) / (3 + 1)."""
        b = book(
            ("a", "dent", "x", 1),
            ("a", "dent", "y", 1),
            ("a", "ok", "z", 1),
            ("b", "ok", "x", 1),
            ("b", "ok", "y", 1),
            ("c", "ok", "x", 1),
        )
        assert pairwise_agreement(b) == (0.5, 2)

    def test_no_item_with_two_votes_has_no_agreement(self) -> None:
        value, items = pairwise_agreement(book(("a", "ok", "x", 1)))
        assert math.isnan(value) and items == 0


class TestParseLabel:
    CLASSES = ("ok", "dent")

    def test_a_valid_message_with_and_without_optional_fields(self) -> None:
        """ts in RFC 3339 or epoch ms, else the Kafka time; annotator defaults to "unknown"; null retracts."""
        full = orjson.dumps({"id": "a", "label": "dent", "annotator": "x", "ts": "2026-11-24T00:00:00Z"})
        assert parse_label(full, self.CLASSES, 5.0) == LabelEvent("a", "dent", "x", 1_795_478_400.0)
        bare = orjson.dumps({"id": "a", "label": None})
        assert parse_label(bare, self.CLASSES, 5.0) == LabelEvent("a", None, "unknown", 5.0)
        assert parse_label(orjson.dumps({"id": "a", "label": "ok", "ts": 2000}), self.CLASSES, 0).ts == 2.0

    @pytest.mark.parametrize(
        ("raw", "reason"),
        [
            (b"{", "malformed_json"),
            (None, "not_an_object"),
            (b"[1]", "not_an_object"),
            (b'{"label": "ok"}', "bad_id"),
            (b'{"id": "a", "label": "rust"}', "unknown_label"),
            (b'{"id": "a", "label": "ok", "annotator": 3}', "bad_annotator"),
            (b'{"id": "a", "label": "ok", "ts": "soon"}', "bad_ts"),
        ],
    )
    def test_invalid_messages_name_their_reason(self, raw: bytes | None, reason: str) -> None:
        result = parse_label(raw, self.CLASSES, 0.0)
        assert isinstance(result, tuple) and result[0] == reason and result[1]
