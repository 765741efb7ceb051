"""The labels trigger counts labeled items, not label messages: a second vote, a duplicate message, a
retraction and re-vote count an item once; the count survives a restart, and a store written before items
were counted does not fire for labels it already counted."""

from __future__ import annotations

from pathlib import Path

from connectors.labels.retraining import Retrainer, resolved_items
from connectors.model.dataset import DatasetStore
from selector.config import Config
from selector.quality.labels import LabelEvent


def decision(rid: str) -> dict[str, object]:
    return {
        "id": rid,
        "route": "query",
        "predicted": "ok",
        "probs": [0.7, 0.1, 0.1, 0.1],
        "embedding": None,
        "query_probability": 0.5,
        "model": "v1",
        "decided_at": "2026-11-24T00:00:00Z",
    }


def config(path: Path, every: int = 5, quorum: int = 1) -> Config:
    return Config.model_validate(
        {
            "dataset": {"path": str(path), "quorum": quorum},
            "retrain": {"every_labels": every, "min_interval_s": 0.0},
        }
    )


def vote(store: DatasetStore, item: str, label: str | None, annotator: str = "a", ts: float = 1.0) -> int:
    store.add_labels([LabelEvent(item, label, annotator, ts)])
    return 1


class TestItemCount:
    def test_votes_duplicates_and_revotes_count_an_item_once(self, tmp_path: Path) -> None:
        """Eleven label messages on five items: five labeled items, short of every_labels = 6."""
        store = DatasetStore(tmp_path / "d.sqlite")
        cfg = config(tmp_path / "d.sqlite", every=6)
        store.add_decisions([decision(f"i-{k}") for k in range(6)])
        r = Retrainer(cfg, "unused:9092", store, now=0.0)
        step = {"audit_confidences": [], "audits": (0, 0)}
        messages = sum(vote(store, f"i-{k}", "dent") for k in range(4))
        r.step(None, 1.0, new_labels=messages, **step)  # type: ignore[arg-type]
        assert r.triggers.labels_since == 4 and r.policy.due(r.triggers, 2.0) == ()
        messages = vote(store, "i-0", "dent") + vote(store, "i-0", "dent", "b", 2.0)  # duplicate, 2nd vote
        messages += vote(store, "i-1", None, ts=3.0) + vote(store, "i-1", "dent", ts=4.0)  # retract, re-vote
        r.step(None, 2.0, new_labels=messages, **step)  # type: ignore[arg-type]
        assert r.triggers.labels_since == 4, "eight messages on four items counted as four"
        r.step(None, 3.0, new_labels=vote(store, "i-5", "crack"), **step)  # type: ignore[arg-type]
        assert r.triggers.labels_since == 5 and r.policy.due(r.triggers, 4.0) == ()
        assert store.get_meta("retrain")["resolved_seen"] == 5

    def test_a_retracted_item_labeled_again_counts_once(self, tmp_path: Path) -> None:
        """Retracted in one round (the count drops), labeled again in the next: no new item."""
        store = DatasetStore(tmp_path / "d.sqlite")
        store.add_decisions([decision("i-0")])
        r = Retrainer(config(tmp_path / "d.sqlite"), "unused:9092", store, now=0.0)
        step = {"audit_confidences": [], "audits": (0, 0)}
        for ts, label in enumerate(["ok", None, "dent"]):
            r.step(None, float(ts), new_labels=vote(store, "i-0", label, ts=float(ts)), **step)  # type: ignore[arg-type]
        assert r.triggers.labels_since == 1 and r.resolved_seen == 1

    def test_an_item_short_of_quorum_is_not_labeled_yet(self, tmp_path: Path) -> None:
        store = DatasetStore(tmp_path / "d.sqlite")
        store.add_decisions([decision("i-0"), decision("i-1")])
        vote(store, "i-0", "dent")
        vote(store, "i-1", "dent")
        vote(store, "i-1", "dent", "b")
        assert resolved_items(store, quorum=2) == 1 and resolved_items(store, quorum=1) == 2

    def test_the_count_survives_a_restart_and_an_older_store_starts_from_its_count(
        self, tmp_path: Path
    ) -> None:
        store = DatasetStore(tmp_path / "d.sqlite")
        cfg = config(tmp_path / "d.sqlite")
        store.add_decisions([decision(f"i-{k}") for k in range(3)])
        r = Retrainer(cfg, "unused:9092", store, now=0.0)
        step = {"audit_confidences": [], "audits": (0, 0)}
        r.step(None, 1.0, new_labels=vote(store, "i-0", "dent") + vote(store, "i-1", "ok"), **step)  # type: ignore[arg-type]
        again = Retrainer(cfg, "unused:9092", store, now=5.0)
        assert (again.resolved_seen, again.triggers.labels_since) == (2, 2)
        old = store.get_meta("retrain")
        del old["resolved_seen"]
        store.put_meta("retrain", old)  # as written before items were counted
        vote(store, "i-2", "ok")
        older = Retrainer(cfg, "unused:9092", store, now=5.0)
        assert (older.resolved_seen, older.triggers.labels_since) == (3, 2)
