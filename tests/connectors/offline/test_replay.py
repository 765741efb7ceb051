"""`selector replay` on JSON lines: determinism, a summary that agrees with the decisions, invalid lines,
defect capture, caps, and the HTML report. No broker is needed."""

from __future__ import annotations

import io
import json
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from connectors.cli.main import main
from connectors.demo.simulate import simulate_probs
from connectors.offline.recorded import jsonl_chunks
from connectors.offline.replay import replay
from selector.config import Config, parse_config

CLASSES = ["ok", "scratch", "dent", "crack"]
T0_MS = 1_714_953_600_000  # 2024-05-06T00:00:00Z


def prediction_lines(n: int, seed: int = 3, step_ms: int = 2000) -> list[bytes]:
    """Simulated line predictions with ``ts``, ``segment`` and the true ``label``."""
    rng = np.random.default_rng(seed)
    truth, probs = simulate_probs(rng, n, len(CLASSES))
    return [
        orjson.dumps(
            {
                "id": f"item-{i:06d}",
                "probs": probs[i].tolist(),
                "ts": T0_MS + i * step_ms,
                "segment": f"camera-{i % 3}",
                "label": CLASSES[truth[i]],
            }
        )
        for i in range(n)
    ]


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def write_config(path: Path, text: str = "") -> Path:
    base = f"classes: {json.dumps(CLASSES)}\nmetrics: {{enabled: false}}\n"
    path.write_text(base + text)
    return path


def run_cli(
    capsys: pytest.CaptureFixture[str], config: Path, *args: str
) -> tuple[int, dict[str, Any] | None, str]:
    code = main(["replay", "-c", str(config), *args])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else None), err


def read_decisions(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


@pytest.fixture
def recorded(tmp_path: Path) -> Path:
    return write_lines(tmp_path / "predictions.jsonl", prediction_lines(6000))


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return write_config(tmp_path / "config.yaml", "budget: {rate: 0.03, audit_rate: 0.003, seed: 11}\n")


class TestDeterminism:
    def test_same_input_gives_byte_identical_decisions_twice(
        self, tmp_path: Path, recorded: Path, config_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Two replays of one input with the same seed write the same bytes and print the same summary."""
        outs, summaries = [], []
        for k in range(2):
            out = tmp_path / f"decisions-{k}.jsonl"
            code, summary, _ = run_cli(capsys, config_path, "--input", str(recorded), "--output", str(out))
            assert code == 0
            outs.append(out.read_bytes())
            summaries.append(summary)
        assert outs[0] == outs[1]
        assert summaries[0] == summaries[1]
        assert len(outs[0].splitlines()) == 6000

    def test_decisions_do_not_depend_on_how_the_input_is_chunked(self, recorded: Path) -> None:
        """Chunks of 2000 or 333 lines give the same decisions: the replay is the stream, not its batches."""
        config = parse_config({"classes": CLASSES, "budget": {"rate": 0.03, "audit_rate": 0.003}})
        outs = []
        for size in (2000, 333):
            buf = io.BytesIO()
            with recorded.open("rb") as f:
                replay(config, jsonl_chunks(f, chunk_records=size), decisions_out=buf)
            outs.append(buf.getvalue())
        assert outs[0] == outs[1]

    def test_another_seed_gives_other_decisions(self, recorded: Path) -> None:
        """The seed is what makes the replay reproducible: changing it changes the random draws (audits)."""
        outs = []
        for seed in (0, 1):
            config = parse_config({"classes": CLASSES, "budget": {"seed": seed, "audit_rate": 0.005}})
            buf = io.BytesIO()
            with recorded.open("rb") as f:
                replay(config, jsonl_chunks(f), decisions_out=buf)
            outs.append(buf.getvalue())
        assert outs[0] != outs[1]

    def test_output_lines_carry_the_decision_fields(
        self, tmp_path: Path, recorded: Path, config_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Every line has the documented fields, keys sorted, the time as RFC 3339 and the line number."""
        out = tmp_path / "decisions.jsonl"
        run_cli(capsys, config_path, "--input", str(recorded), "--output", str(out))
        first = out.read_bytes().splitlines()[0]
        d = json.loads(first)
        assert list(d) == sorted(d)
        assert set(d) == {
            "id",
            "route",
            "score",
            "scores",
            "threshold",
            "query_probability",
            "selected_by",
            "predicted",
            "confidence",
            "segment",
            "label",
            "decided_at",
            "ts",
            "line",
        }
        assert d["id"] == "item-000000"
        assert d["ts"] == d["decided_at"] == "2024-05-06T00:00:00.000Z"
        assert d["line"] == 1
        assert set(d["scores"]) == {"entropy", "least_confidence", "margin", "ratio"}


class TestSummaryAgreesWithDecisions:
    @pytest.fixture
    def replayed(
        self, tmp_path: Path, recorded: Path, config_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        out = tmp_path / "decisions.jsonl"
        code, summary, _ = run_cli(capsys, config_path, "--input", str(recorded), "--output", str(out))
        assert code == 0 and summary is not None
        return summary, read_decisions(out)

    def test_route_counts(self, replayed: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
        """The summary's routes are the output file's routes, exactly."""
        summary, decisions = replayed
        counts = Counter(d["route"] for d in decisions)
        assert summary["routes"] == {r: counts[r] for r in ("accept", "query", "audit", "skip")}
        assert summary["items"] == len(decisions) == sum(summary["routes"].values())
        labeled = summary["routes"]["query"] + summary["routes"]["audit"]
        assert summary["rates"]["label"] == round(labeled / len(decisions), 6)

    def test_per_class_segment_and_mechanism_spend(
        self, replayed: tuple[dict[str, Any], list[dict[str, Any]]]
    ) -> None:
        """Labels per predicted class, per segment and per mechanism are counted from the same decisions."""
        summary, decisions = replayed
        labeled = [d for d in decisions if d["route"] in ("query", "audit")]
        spend = summary["spend"]
        assert spend["labels"] == len(labeled)
        for name, d in spend["by_class"].items():
            assert d["labels"] == sum(x["predicted"] == name for x in labeled)
            assert d["query"] == sum(x["predicted"] == name and x["route"] == "query" for x in labeled)
            assert d["items"] == sum(x["predicted"] == name for x in decisions)
        for name, d in spend["by_segment"].items():
            assert d["labels"] == sum(x["segment"] == name for x in labeled)
        mechanisms = Counter(x["selected_by"] for x in labeled)
        assert {m: v["labels"] for m, v in spend["by_mechanism"].items() if v["labels"]} == dict(mechanisms)
        assert all(x["selected_by"] is None for x in decisions if x["route"] in ("accept", "skip"))

    def test_rate_over_time_buckets_cover_every_item(
        self, replayed: tuple[dict[str, Any], list[dict[str, Any]]]
    ) -> None:
        """The buckets partition the stream in order; their labels add up to the total."""
        summary, decisions = replayed
        buckets = summary["over_time"]["buckets"]
        width = summary["over_time"]["bucket_items"]
        assert 1 <= len(buckets) <= 100
        assert [b["first_item"] for b in buckets] == [k * width for k in range(len(buckets))]
        assert sum(b["items"] for b in buckets) == len(decisions)
        for b in buckets:
            chunk = decisions[b["first_item"] : b["first_item"] + b["items"]]
            assert b["labels"] == sum(x["route"] in ("query", "audit") for x in chunk)
            assert b["from"] == chunk[0]["decided_at"] and b["to"] == chunk[-1]["decided_at"]

    def test_realized_rate_is_near_the_target(
        self, replayed: tuple[dict[str, Any], list[dict[str, Any]]]
    ) -> None:
        """Replay runs the real controller: on 6000 items it lands near the configured 3%."""
        summary, _ = replayed
        assert summary["rates"]["target"] == 0.03
        assert 0.025 <= summary["rates"]["label"] <= 0.033


class TestInvalidLines:
    def test_counted_by_reason_and_the_run_goes_on(
        self, tmp_path: Path, config_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Broken lines of every kind are counted by the decoder's reason, listed with their line numbers,
        and every valid line around them is decided."""
        good = prediction_lines(50)
        broken = [
            b'{"id": "x1", "probs": [0.5, 0.5',
            b'["not", "an", "object"]',
            b'{"probs": [0.97, 0.01, 0.01, 0.01], "ts": 1}',
            b'{"id": "x4", "probs": [0.5, 0.5], "ts": 1}',
            b'{"id": "x5", "probs": [0.7, 0.7, 0.1, 0.1], "ts": 1}',
            b'{"id": "x6", "probs": [NaN, 0.5, 0.25, 0.25], "ts": 1}',
            b'{"id": "x7", "probs": [0.97, 0.01, 0.01, 0.01], "ts": "yesterday"}',
            b"\xff\xfe garbage",
        ]
        lines = good[:20] + broken + [b"", b"   "] + good[20:]
        path = write_lines(tmp_path / "mixed.jsonl", lines)
        out = tmp_path / "decisions.jsonl"
        code, summary, _ = run_cli(capsys, config_path, "--input", str(path), "--output", str(out))
        assert code == 0 and summary is not None
        assert summary["invalid"]["by_reason"] == {
            "bad_ts": 1,
            "malformed_json": 2,
            "missing_id": 1,
            "non_finite": 1,
            "not_an_object": 1,
            "not_normalized": 1,
            "wrong_class_count": 1,
        }
        assert summary["invalid"]["total"] == 8
        assert [e["where"] for e in summary["invalid"]["examples"]] == [f"line {n}" for n in range(21, 29)]
        assert summary["items"] == 50
        assert summary["input"]["records"] == 58  # blank lines are skipped, not invalid
        assert [d["line"] for d in read_decisions(out)][19:21] == [20, 31]

    def test_invalid_lines_do_not_change_the_decisions_of_the_others(self, tmp_path: Path) -> None:
        """Broken and untimed lines are taken out before deciding: the valid records get exactly the
        decisions they get without them."""
        config = parse_config({"classes": CLASSES, "budget": {"rate": 0.05, "audit_rate": 0.01}})
        good = prediction_lines(3000)
        noisy: list[bytes] = []
        for i, line in enumerate(good):
            noisy.append(line)
            if i % 7 == 0:
                noisy.append(orjson.dumps({"id": f"untimed-{i}", "probs": [0.25] * 4}))
            if i % 11 == 0:
                noisy.append(b'{"id": "cut-off", "probs": [0.2')
        outs = []
        for lines in (good, noisy):
            buf = io.BytesIO()
            summary = replay(config, jsonl_chunks(io.BytesIO(b"\n".join(lines))), decisions_out=buf)
            outs.append(
                [{k: v for k, v in json.loads(x).items() if k != "line"} for x in buf.getvalue().splitlines()]
            )
        assert summary["invalid"]["by_reason"] == {"malformed_json": 273, "missing_ts": 429}
        assert outs[0] == outs[1]

    def test_records_without_ts_are_invalid_unless_a_rate_is_given(
        self, tmp_path: Path, config_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Without ``ts`` there is no time for the caps: the record is invalid (``missing_ts``), or with
        ``--rate R`` it is decided at ``(line - 1) / R`` seconds after the epoch."""
        lines = [orjson.dumps({"id": f"n{i}", "probs": [0.25] * 4}) for i in range(10)]
        lines[3] = orjson.dumps({"id": "n3", "probs": [0.25] * 4, "ts": "2024-05-06T00:00:00Z"})
        path = write_lines(tmp_path / "untimed.jsonl", lines)
        code, summary, _ = run_cli(capsys, config_path, "--input", str(path))
        assert code == 0 and summary is not None
        assert summary["invalid"]["by_reason"] == {"missing_ts": 9}
        assert summary["items"] == 1
        out = tmp_path / "decisions.jsonl"
        code, summary, _ = run_cli(
            capsys, config_path, "--input", str(path), "--rate", "4", "--output", str(out)
        )
        assert code == 0 and summary is not None
        assert summary["invalid"]["total"] == 0
        assert summary["input"]["ts_fallback"] == 9 and summary["input"]["ts_from_records"] == 1
        ts = [d["ts"] for d in read_decisions(out)]
        assert ts[:3] == ["1970-01-01T00:00:00.000Z", "1970-01-01T00:00:00.250Z", "1970-01-01T00:00:00.500Z"]
        assert ts[3] == "2024-05-06T00:00:00.000Z"

    def test_unknown_ground_truth_labels_are_listed_not_fatal(
        self, tmp_path: Path, config_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A ``label`` that is not a configured class is counted apart; the record is still decided."""
        lines = [
            orjson.dumps({"id": f"u{i}", "probs": [0.97, 0.01, 0.01, 0.01], "ts": i, "label": lab})
            for i, lab in enumerate(["ok", "bubble", "ok", 7])
        ]
        path = write_lines(tmp_path / "labels.jsonl", lines)
        code, summary, _ = run_cli(capsys, config_path, "--input", str(path))
        assert code == 0 and summary is not None
        assert summary["items"] == 4
        assert summary["ground_truth"]["unknown_labels"] == {"7": 1, "bubble": 1}
        assert summary["ground_truth"]["items"] == 2


def constructed_stream(tmp_path: Path) -> Path:
    """1000 items whose routes are known in advance (see TestDefectCapture), shuffled."""
    kinds = (
        [([0.99, 0.01], "ok")] * 830  # confident and right: accepted
        + [([0.6, 0.4], "ok")] * 50  # uncertain: queried
        + [([0.3, 0.7], "defect")] * 100  # uncertain: queried
        + [([0.99, 0.01], "defect")] * 20  # confidently wrong: accepted, missed
    )
    order = np.random.default_rng(5).permutation(len(kinds))
    lines = [
        orjson.dumps({"id": f"c{i:04d}", "probs": kinds[k][0], "ts": T0_MS + 1000 * i, "label": kinds[k][1]})
        for i, k in enumerate(order.tolist())
    ]
    return write_lines(tmp_path / "constructed.jsonl", lines)


class TestDefectCapture:
    def test_recall_and_enrichment_on_known_labels(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A fixed-threshold controller with room to spare queries every uncertain item (the confident
        ones are under its threshold 0.5) and no audit is drawn: 150 of 1000 items are labeled, 100 of the
        120 defects and 50 of the 880 ok items. So the defect recall is 100/120 against 150/1000 for random
        sampling at that budget, an enrichment of (100/150) / (120/1000) = 5.5556, and ok's is
        (50/150) / (880/1000) = 0.3788."""
        config = write_config(
            tmp_path / "config.yaml",
            "classes: [ok, defect]\n"
            "budget: {rate: 0.9, audit_rate: 0.0, controller: threshold, query_threshold: 0.5,"
            " caps: {day: 100000}}\n",
        )
        out = tmp_path / "decisions.jsonl"
        code, summary, _ = run_cli(
            capsys, config, "--input", str(constructed_stream(tmp_path)), "--output", str(out)
        )
        assert code == 0 and summary is not None
        routes = Counter((d["label"], d["confidence"], d["route"]) for d in read_decisions(out))
        assert routes == {
            ("ok", 0.99, "accept"): 830,
            ("ok", 0.6, "query"): 50,
            ("defect", 0.7, "query"): 100,
            ("defect", 0.99, "accept"): 20,
        }
        gt = summary["ground_truth"]
        assert (gt["items"], gt["labeled"], gt["random_recall"]) == (1000, 150, 0.15)
        assert gt["by_class"]["defect"] == {
            "items": 120,
            "labeled": 100,
            "queried": 100,
            "recall": 0.833333,
            "random_recall": 0.15,
            "enrichment": 5.555556,
            "accepted_correctly": 0,
            "accepted_wrongly": 20,
            "skipped": 0,
        }
        assert gt["by_class"]["ok"]["recall"] == 0.056818
        assert gt["by_class"]["ok"]["enrichment"] == 0.378788

    def test_the_summary_says_why_the_budget_went_unspent(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """At 10% of 1000 items with a cap of 20 labels a day the cap holds 80 labels back; with the floor
        above every score nothing is eligible: the summary counts each under its reason, within the
        balance still held at the end (max_burst 10)."""
        for budget, reason in (
            ("rate: 0.1, audit_rate: 0.0, caps: {day: 20}", "cap"),
            ("rate: 0.1, audit_rate: 0.0, query_threshold: 1.0, caps: {}", "floor"),
        ):
            config = write_config(tmp_path / "config.yaml", f"classes: [ok, defect]\nbudget: {{{budget}}}\n")
            code, summary, _ = run_cli(capsys, config, "--input", str(constructed_stream(tmp_path)))
            assert code == 0 and summary is not None
            short = summary["shortfall"]
            spent = summary["routes"]["query"] + summary["routes"]["audit"]
            assert 100 - spent - 10 <= short["by_reason"][reason] <= 100 - spent, short
            assert short["labels"] == pytest.approx(sum(short["by_reason"].values()))

    def test_without_labels_there_is_no_capture(
        self, tmp_path: Path, config_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Records without ``label`` leave the ground-truth section empty, with no ratio invented."""
        lines = [orjson.dumps({"id": f"n{i}", "probs": [0.25] * 4, "ts": i}) for i in range(20)]
        code, summary, _ = run_cli(
            capsys, config_path, "--input", str(write_lines(tmp_path / "n.jsonl", lines))
        )
        assert code == 0 and summary is not None
        gt = summary["ground_truth"]
        assert gt["items"] == 0 and gt["random_recall"] is None
        assert all(c["enrichment"] is None for c in gt["by_class"].values())


class TestCapHeadroom:
    def test_a_binding_cap_is_reported_reached_and_never_exceeded(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Every item wants a label and the minute cap is 5: the summary says the cap was reached with no
        headroom left, and in the decisions no sliding minute holds more than 5 labels."""
        config = write_config(
            tmp_path / "config.yaml",
            "accept: {default_threshold: 1.0}\n"
            "budget: {rate: 1.0, audit_rate: 0.01, max_burst: 1000, caps: {minute: 5, hour: 200}}\n",
        )
        lines = [
            orjson.dumps({"id": f"m{i}", "probs": [0.4, 0.2, 0.2, 0.2], "ts": T0_MS + 500 * i})
            for i in range(2000)
        ]
        out = tmp_path / "decisions.jsonl"
        path = write_lines(tmp_path / "busy.jsonl", lines)
        code, summary, _ = run_cli(capsys, config, "--input", str(path), "--output", str(out))
        assert code == 0 and summary is not None
        caps = summary["caps"]
        assert caps["minute"]["reached"] and caps["minute"]["min_headroom"] == 0
        assert caps["minute"]["first_reached"] == "2024-05-06T00:00:02.000Z"
        times = np.array(
            [T0_MS / 1000 + 0.5 * i for i, d in enumerate(read_decisions(out)) if d["route"] != "skip"]
        )
        in_minute = np.arange(len(times)) - np.searchsorted(times, times - 60.0, side="right") + 1
        assert int(in_minute.max()) == caps["minute"]["max_in_window"] == 5
        assert caps["hour"]["max_in_window"] == len(times) <= 200
        assert summary["routes"]["query"] + summary["routes"]["audit"] == len(times)


def stepping_lines(seconds: list[float]) -> list[bytes]:
    """Predictions that all want a label (no auto-accept at threshold 1), at the given times."""
    return [
        orjson.dumps({"id": f"t{i}", "probs": [0.4, 0.2, 0.2, 0.2], "ts": T0_MS + round(1000 * s)})
        for i, s in enumerate(seconds)
    ]


def replay_lines(
    lines: list[bytes], chunk_records: int = 2000, **budget: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    config = parse_config(
        {
            "classes": CLASSES,
            "accept": {"default_threshold": 1.0},
            "budget": {"rate": 1.0, "audit_rate": 0.0, "max_burst": 1000, **budget},
        }
    )
    buf = io.BytesIO()
    summary = replay(
        config, jsonl_chunks(io.BytesIO(b"\n".join(lines)), chunk_records=chunk_records), decisions_out=buf
    )
    return summary, [json.loads(x) for x in buf.getvalue().splitlines()]


STEPPING = [0.0, 15.0, 30.0, 45.0, 60.0, 600.0, 20.0, 21.0, 22.0, 23.0, 24.0, 25.0]
"""A record every 15 s, a gap to 600 s, then the records' clock steps back to 20 s."""


def epoch_s(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


class TestTime:
    def test_decided_at_is_the_caps_monotone_clock_and_ts_the_records_own(self) -> None:
        """Each line's ``decided_at`` is the records' times made non-decreasing (the clock stands still at
        600 s after the step back) and ``ts`` the record's own time; on ``decided_at`` no sliding minute holds
        more labels than the cap, as the caps counted, while the same labels on ``ts`` crowd one minute."""
        summary, lines = replay_lines(stepping_lines(STEPPING), caps={"minute": 5})
        ts = np.array([epoch_s(d["ts"]) for d in lines]) - T0_MS / 1000
        decided = np.array([epoch_s(d["decided_at"]) for d in lines]) - T0_MS / 1000
        np.testing.assert_array_equal(ts, STEPPING)
        np.testing.assert_array_equal(decided, np.maximum.accumulate(STEPPING))
        labeled = np.array([d["route"] in ("query", "audit") for d in lines])

        def most_in_a_minute(times: np.ndarray) -> int:
            times = np.sort(times)
            return int((np.arange(len(times)) - np.searchsorted(times, times - 60.0, side="right") + 1).max())

        assert most_in_a_minute(decided[labeled]) == summary["caps"]["minute"]["max_in_window"] == 5
        assert most_in_a_minute(ts[labeled]) > 5
        assert summary["time"]["first"] == lines[0]["decided_at"]
        assert summary["time"]["last"] == lines[-1]["decided_at"]
        assert summary["time"]["span_s"] == 600.0

    @pytest.mark.parametrize("chunk_records", [2000, 1, 6])
    def test_steps_back_counts_steps_not_the_records_behind(self, chunk_records: int) -> None:
        """One step back of the records' clock is one step however many records follow it before the clock
        catches up; those records are counted apart (``items_behind``), and the largest step is given. A step
        that falls between two chunks counts once too."""
        summary, _ = replay_lines(stepping_lines(STEPPING), chunk_records=chunk_records)
        assert summary["time"]["steps_back"] == 1
        assert summary["time"]["max_step_back_s"] == 580.0
        assert summary["time"]["items_behind"] == 6
        two = [0.0, 100.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 200.0, 190.0]
        summary, _ = replay_lines(stepping_lines(two), chunk_records=chunk_records)
        assert (summary["time"]["steps_back"], summary["time"]["items_behind"]) == (2, 7)
        assert summary["time"]["max_step_back_s"] == 50.0

    def test_a_steady_clock_has_no_steps_back(self) -> None:
        """Equal and increasing times are no steps back, and every item is decided at its own time."""
        summary, lines = replay_lines(stepping_lines([0.0, 0.0, 1.0, 1.0, 2.0]))
        assert summary["time"]["steps_back"] == summary["time"]["items_behind"] == 0
        assert all(d["decided_at"] == d["ts"] for d in lines)


class TestReport:
    def test_report_is_self_contained_with_charts_and_numbers(
        self, tmp_path: Path, recorded: Path, config_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The HTML has an SVG chart per section, the summary's numbers in tables, and loads nothing."""
        report = tmp_path / "report.html"
        code, summary, _ = run_cli(capsys, config_path, "--input", str(recorded), "--report", str(report))
        assert code == 0 and summary is not None
        html = report.read_text()
        assert html.startswith("<!DOCTYPE html>")
        assert html.count("<svg") == 8
        for title in (
            "Label rate per",
            "Items per route",
            "Labels per predicted class",
            "Labels per segment",
            "Labels per selection mechanism",
            "Peak share of each cap in use",
            "Capture of each defect class vs random sampling",
            "Labeled share of each true class",
        ):
            assert title in html
        assert "<polyline" in html and "<rect" in html
        for route, n in summary["routes"].items():
            assert f"<td>{route}</td><td>{n}</td>" in html
        for name, d in summary["spend"]["by_class"].items():
            assert f"<td>{name}</td><td>{d['items']}</td><td>{d['labels']}</td>" in html
        enrichment = summary["ground_truth"]["by_class"]["crack"]["enrichment"]
        assert f"{enrichment:.2f}x" in html
        assert "<script" not in html and "src=" not in html and "href=" not in html
        assert "http" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")

    def test_text_from_the_data_is_escaped(
        self, tmp_path: Path, config_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A segment name is data: it is shown as text, never interpreted as markup."""
        lines = [
            orjson.dumps(
                {"id": f"s{i}", "probs": [0.25] * 4, "ts": i, "segment": "<script>alert(1)</script>"}
            )
            for i in range(10)
        ]
        report = tmp_path / "report.html"
        path = write_lines(tmp_path / "x.jsonl", lines)
        code, _, _ = run_cli(capsys, config_path, "--input", str(path), "--report", str(report))
        assert code == 0
        html = report.read_text()
        assert "<script" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


class TestCommandLine:
    def test_topic_on_the_embedded_broker_is_a_usage_error(
        self, tmp_path: Path, config_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """'embedded' is a new, empty broker: replaying a topic from it is refused with what to do."""
        code, summary, err = run_cli(capsys, config_path, "--topic", "predictions")
        assert code == 2 and summary is None
        assert "'kafka.bootstrap_servers' is 'embedded'" in err
        assert "SELECTOR_KAFKA__BOOTSTRAP_SERVERS" in err

    def test_missing_input_is_a_usage_error(
        self, tmp_path: Path, config_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A missing file exits 2 naming it."""
        code, summary, err = run_cli(capsys, config_path, "--input", str(tmp_path / "nope.jsonl"))
        assert code == 2 and summary is None
        assert "cannot read --input" in err and "nope.jsonl" in err

    def test_input_or_topic_is_required(self, config_path: Path) -> None:
        """Exactly one source: neither, or both, is an argument error."""
        with pytest.raises(SystemExit) as neither:
            main(["replay", "-c", str(config_path)])
        with pytest.raises(SystemExit) as both:
            main(["replay", "-c", str(config_path), "--input", "a", "--topic", "b"])
        assert neither.value.code == both.value.code == 2

    def test_the_example_script_writes_valid_predictions(self, tmp_path: Path) -> None:
        """examples/make_predictions.py is deterministic; its lines replay (but 3 broken on purpose)."""
        from examples.make_predictions import lines  # noqa: PLC0415

        data = lines(10_000, seed=7)
        assert data == lines(10_000, seed=7)
        config = Config.model_validate({"classes": CLASSES})
        summary = replay(config, jsonl_chunks(io.BytesIO(data)))
        assert summary["items"] == 9997 and summary["invalid"]["total"] == 3
        assert summary["ground_truth"]["items"] == 9997
