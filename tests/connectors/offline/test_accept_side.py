"""`selector replay` on the accept side: outcomes per true class, accept precision per predicted class,
defect capture against random sampling, reserved shares marked binding, the configuration table, and the
report's accept sections. No broker is needed."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from selector.quality.estimates import wilson
from tests.connectors.offline.test_replay import (
    T0_MS,
    prediction_lines,
    read_decisions,
    run_cli,
    write_config,
    write_lines,
)

CONFIDENT_OK, CONFIDENT_SCRATCH, CONFIDENT_CRACK = [0.98, 0.01, 0.01], [0.01, 0.98, 0.01], [0.01, 0.01, 0.98]
UNSURE = [0.4, 0.3, 0.3]  # informative: queried
LUKEWARM = [0.9, 0.05, 0.05]  # neither confident nor informative: skipped

KINDS: list[tuple[list[float], str, int]] = [
    (CONFIDENT_OK, "ok", 400),  # accepted correctly
    (CONFIDENT_OK, "scratch", 6),  # accepted wrongly: a scratch missed
    (CONFIDENT_SCRATCH, "scratch", 30),  # accepted correctly: a scratch caught without a label
    (CONFIDENT_SCRATCH, "ok", 4),  # accepted wrongly
    (CONFIDENT_CRACK, "crack", 10),  # accepted correctly
    (CONFIDENT_CRACK, "scratch", 10),  # accepted wrongly: crack's precision is 10 of 20
    (UNSURE, "crack", 20),  # labeled
    (UNSURE, "ok", 30),  # labeled
    (LUKEWARM, "crack", 5),  # skipped: missed
    (LUKEWARM, "ok", 85),  # skipped
]
"""600 items whose routes are known in advance under :data:`FIXED`."""

FIXED = (
    "classes: [ok, scratch, crack]\n"
    "accept: {default_threshold: 0.95}\n"
    "budget: {rate: 0.9, audit_rate: 0.0, controller: threshold, query_threshold: 0.5, caps: {day: 100000}}\n"
)
"""A fixed-threshold controller with room to spare: it queries every item scoring 0.5 or more (the unsure
ones) and nothing else; confident items are accepted, lukewarm ones skipped."""


def known_stream(tmp_path: Path) -> Path:
    """The items of :data:`KINDS`, shuffled, one a second."""
    kinds = [(probs, label) for probs, label, n in KINDS for _ in range(n)]
    order = np.random.default_rng(7).permutation(len(kinds)).tolist()
    lines = [
        orjson.dumps({"id": f"k{i:04d}", "probs": kinds[k][0], "ts": T0_MS + 1000 * i, "label": kinds[k][1]})
        for i, k in enumerate(order)
    ]
    return write_lines(tmp_path / "known.jsonl", lines)


@pytest.fixture
def known(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    out = tmp_path / "decisions.jsonl"
    config = write_config(tmp_path / "config.yaml", FIXED)
    code, summary, _ = run_cli(capsys, config, "--input", str(known_stream(tmp_path)), "--output", str(out))
    assert code == 0 and summary is not None
    return summary, read_decisions(out)


class TestOutcomesPerTrueClass:
    def test_the_stream_routes_as_constructed(
        self, known: tuple[dict[str, Any], list[dict[str, Any]]]
    ) -> None:
        """The premise of the counts below: confident items accepted, unsure ones queried, others skipped."""
        _, decisions = known
        routes = Counter((d["predicted"], d["label"], d["route"]) for d in decisions)
        assert routes == {
            ("ok", "ok", "accept"): 400,
            ("ok", "scratch", "accept"): 6,
            ("scratch", "scratch", "accept"): 30,
            ("scratch", "ok", "accept"): 4,
            ("crack", "crack", "accept"): 10,
            ("crack", "scratch", "accept"): 10,
            ("ok", "crack", "query"): 20,
            ("ok", "ok", "query"): 30,
            ("ok", "crack", "skip"): 5,
            ("ok", "ok", "skip"): 85,
        }

    def test_accepted_correctly_wrongly_labeled_skipped(
        self, known: tuple[dict[str, Any], list[dict[str, Any]]]
    ) -> None:
        """Per true class: accepted as itself, accepted as another class, labeled, skipped; they add up."""
        summary, _ = known
        by = summary["ground_truth"]["by_class"]
        keys = ("items", "accepted_correctly", "accepted_wrongly", "labeled", "skipped")
        assert {c: tuple(v[k] for k in keys) for c, v in by.items()} == {
            "ok": (519, 400, 4, 30, 85),
            "scratch": (46, 30, 16, 0, 0),
            "crack": (35, 10, 0, 20, 5),
        }

    def test_accept_precision_per_predicted_class_with_wilson_intervals(
        self, known: tuple[dict[str, Any], list[dict[str, Any]]]
    ) -> None:
        """Precision is correct / accepted per predicted class, with the Wilson 95% interval; crack's 10 of 20
        has an upper bound (0.70) under its threshold 0.95: flagged."""
        summary, _ = known
        acc = summary["accept"]
        assert (acc["accepted"], acc["with_label"], acc["correct"]) == (460, 460, 440)
        assert acc["precision"]["estimate"] == round(440 / 460, 6)
        by = acc["by_class"]
        assert [(by[c]["accepted"], by[c]["correct"], by[c]["wrong"]) for c in by] == [
            (406, 400, 6),
            (34, 30, 4),
            (20, 10, 10),
        ]
        w = wilson(10, 20)
        assert by["crack"]["precision"] == {
            "estimate": 0.5,
            "low": round(w.low, 6),
            "high": round(w.high, 6),
            "n": 20,
        }
        assert w.high < 0.95
        assert [by[c]["below_threshold"] for c in by] == [False, False, True]
        assert by["crack"]["threshold"] == 0.95


class TestDefectCapture:
    def test_caught_is_labeled_or_accepted_as_itself(
        self, known: tuple[dict[str, Any], list[dict[str, Any]]]
    ) -> None:
        """Of the 81 defects, 20 were labeled and 40 accepted as their own class: 60 caught; 16 accepted as
        another class and 5 skipped are missed. Random sampling at the label rate q = 50/600 with the same
        accept rule catches q * 81 + (1 - q) * 40 (the 40 it would accept correctly) = 43.417."""
        summary, _ = known
        dc = summary["defect_capture"]
        assert dc["classes"] == ["scratch", "crack"]
        assert dc["label_rate"] == round(50 / 600, 6)
        counts = ("items", "caught", "labeled", "accepted_correctly", "missed", "accepted_wrongly", "skipped")
        assert tuple(dc[k] for k in counts) == (81, 60, 20, 40, 21, 16, 5)
        assert (dc["capture"], dc["random_caught"], dc["random_capture"]) == (0.740741, 43.417, 0.536008)
        scratch, crack = dc["by_class"]["scratch"], dc["by_class"]["crack"]
        assert tuple(scratch[k] for k in counts) == (46, 30, 0, 30, 16, 16, 0)
        assert tuple(crack[k] for k in counts) == (35, 30, 20, 10, 5, 0, 5)
        assert (scratch["random_capture"], crack["random_capture"]) == (0.681159, 0.345238)

    def test_defect_classes_follow_the_configuration(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """``dataset.defect_classes`` names the defects; only they enter the capture."""
        config = write_config(tmp_path / "config.yaml", FIXED + "dataset: {defect_classes: [crack]}\n")
        code, summary, _ = run_cli(capsys, config, "--input", str(known_stream(tmp_path)))
        assert code == 0 and summary is not None
        dc = summary["defect_capture"]
        assert dc["classes"] == ["crack"] and (dc["items"], dc["caught"], dc["missed"]) == (35, 30, 5)

    def test_without_labels_nothing_is_invented(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Records without ``label``: accepted items are counted, precision and capture are null."""
        lines = [orjson.dumps({"id": f"n{i}", "probs": CONFIDENT_OK, "ts": i}) for i in range(10)]
        config = write_config(tmp_path / "config.yaml", FIXED)
        code, summary, _ = run_cli(capsys, config, "--input", str(write_lines(tmp_path / "n.jsonl", lines)))
        assert code == 0 and summary is not None
        acc, dc = summary["accept"], summary["defect_capture"]
        assert (acc["accepted"], acc["with_label"], acc["precision"]["estimate"]) == (10, 0, None)
        assert (dc["items"], dc["capture"], dc["random_capture"], dc["label_rate"]) == (0, None, None, None)


class TestConfigurationTable:
    def test_accept_side_and_budget_keys(self, known: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
        """The summary's config carries the accept thresholds of every class, the committee agreement, the
        query threshold and controller, and the flat decision settings."""
        c = known[0]["config"]
        assert c["accept"] == {
            "default_threshold": 0.95,
            "thresholds": {"ok": 0.95, "scratch": 0.95, "crack": 0.95},
            "committee_agreement": 0.0,
        }
        assert (c["rate"], c["audit_rate"], c["query_threshold"], c["controller"]) == (
            0.9,
            0.0,
            0.5,
            "threshold",
        )
        assert c["settings"]["budget.query_threshold"] == 0.5
        assert c["settings"]["dataset.defect_classes"] == ["scratch", "crack"]
        assert c["reserved"] == {}

    def test_a_pool_with_plenty_is_binding_one_with_too_few_is_not(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """At 5% of 6000 items, ``ok`` (5853 predicted) spends its 20% share, 60 labels, and would spend more:
        binding. ``crack`` (43 predicted) is owed 50% = 150 labels but has only 43 eligible items: it loses
        the credit it cannot spend, not binding. Eligible items are the items predicted as the class."""
        config = write_config(
            tmp_path / "config.yaml",
            "budget: {rate: 0.05, audit_rate: 0.002, exploration: 0.1,"
            " class_shares: {crack: 0.5, ok: 0.2}}\n",
        )
        path = write_lines(tmp_path / "p.jsonl", prediction_lines(6000))
        code, summary, _ = run_cli(capsys, config, "--input", str(path))
        assert code == 0 and summary is not None
        reserved = summary["config"]["reserved"]
        assert list(reserved) == ["class:crack", "class:ok", "exploration"]
        ok, crack, explore = reserved["class:ok"], reserved["class:crack"], reserved["exploration"]
        by_class = summary["spend"]["by_class"]
        assert (ok["eligible_items"], crack["eligible_items"]) == (
            by_class["ok"]["items"],
            by_class["crack"]["items"],
        )
        assert explore["eligible_items"] == 6000
        assert (ok["binding"], ok["target_labels"], ok["labels"], ok["unspent_labels"]) == (
            True,
            60.0,
            60,
            0.0,
        )
        assert (crack["binding"], crack["target_labels"], crack["share"]) == (False, 150.0, 0.5)
        assert crack["labels"] <= crack["eligible_items"] < crack["target_labels"]
        assert crack["unspent_labels"] == summary["shortfall"]["by_reason"]["pool:class:crack"] > 90
        assert explore["binding"] and explore["target_labels"] - 1 <= explore["labels"] <= 30  # a token held


class TestReportAcceptSections:
    def test_precision_table_warning_card_and_binding_rows(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The report shows precision with its interval per class, a warning card for crack (its upper bound
        is below its threshold), the capture table, and the accept thresholds in the configuration table."""
        config = write_config(tmp_path / "config.yaml", FIXED)
        report = tmp_path / "report.html"
        code, _, _ = run_cli(capsys, config, "--input", str(known_stream(tmp_path)), "--report", str(report))
        assert code == 0
        html = report.read_text()
        assert "<td>crack</td><td>0.95</td><td>20</td><td>20</td><td>10</td><td>10</td>" in html
        low, high = (round(x, 6) for x in (wilson(10, 20).low, wilson(10, 20).high))
        assert f"<td>50.00% [{low:.2%}, {high:.2%}]</td><td>upper bound below threshold</td>" in html
        assert html.count(f'class="card warn"><b>crack 50.0% [{low:.1%}, {high:.1%}]</b>') == 1
        assert "accept precision of crack is below its threshold 0.95" in html
        assert (
            "<td>all defects</td><td>81</td><td>60</td><td>20</td><td>40</td><td>21</td><td>16</td><td>5</td>"
            in html
        )
        assert "<td>accept.default_threshold</td><td>0.95</td>" in html
        assert "<td>query_threshold</td><td>0.5</td>" in html
