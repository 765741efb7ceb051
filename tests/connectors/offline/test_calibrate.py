"""`selector calibrate`: the report, the JSON object, skipped lines by reason, and the exit codes."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from connectors.cli import main as cli
from connectors.cli.main import EXIT_CONFIG, EXIT_ERROR, EXIT_OK, main
from connectors.offline import calibrate as calibrate_module

CLASSES = ["ok", "scratch", "dent"]
TRUE_T = 2.0


def write_config(tmp_path: Path) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(f"classes: [{', '.join(CLASSES)}]\n")
    return str(path)


def labeled_records(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Over-confident predictions (logits times TRUE_T), half as logits and half as probs, labels drawn from
    the calibrated model."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, size=(n, len(CLASSES)))
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    labels = (np.cumsum(p, axis=1) < rng.random(n)[:, None]).sum(axis=1).clip(0, len(CLASSES) - 1)
    sharp = np.exp(TRUE_T * (z - z.max(axis=1, keepdims=True)))
    sharp /= sharp.sum(axis=1, keepdims=True)
    out: list[dict[str, Any]] = []
    for i in range(n):
        record: dict[str, Any] = {"id": f"r{i}", "label": CLASSES[labels[i]]}
        if i % 2:
            record["logits"] = (TRUE_T * z[i]).tolist()
        else:
            record["probs"] = sharp[i].tolist()
        out.append(record)
    return out


def write_lines(tmp_path: Path, lines: list[str]) -> str:
    path = tmp_path / "labeled.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def run(
    tmp_path: Path, lines: list[str], capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str, str]:
    code = main(["calibrate", "-c", write_config(tmp_path), "--input", write_lines(tmp_path, lines), *extra])
    out, err = capsys.readouterr()
    return code, out, err


GOOD = [json.dumps(r) for r in labeled_records(3000)]
BAD = [
    "{not json",  # malformed_json
    json.dumps({"id": "m1", "probs": [0.5, 0.5, 0.0]}),  # missing_label
    json.dumps({"probs": [0.5, 0.5, 0.0], "label": "ok"}),  # missing_id
    json.dumps({"id": "u1", "probs": [0.5, 0.5, 0.0], "label": "bent"}),  # unknown_label
    json.dumps({"id": "m2", "logits": [1, 2, 3], "label": None}),  # missing_label
    json.dumps({"id": "w1", "probs": [0.5, 0.5], "label": "ok"}),  # wrong_class_count
    json.dumps({"id": "u2", "probs": [0.5, 0.5, 0.0], "label": 1}),  # unknown_label (not a class name)
    "[1, 2]",  # not_an_object
    json.dumps({"id": "m3", "probs": [0.2, 0.2, 0.6]}),  # missing_label
]
BAD_COUNTS = {
    "malformed_json": 1,
    "missing_id": 1,
    "missing_label": 3,
    "not_an_object": 1,
    "unknown_label": 2,
    "wrong_class_count": 1,
}


class TestCalibrateCommand:
    def test_report_gives_the_temperature_and_the_yaml_to_paste(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Exit 0; the temperature parses, is near the true one, and appears as a config.yaml snippet."""
        code, out, err = run(tmp_path, GOOD, capsys)
        assert code == EXIT_OK, err
        match = re.search(r"^temperature +([0-9.]+)$", out, re.MULTILINE)
        assert match is not None, out
        t = float(match.group(1))
        assert abs(t / TRUE_T - 1) < 0.15
        assert f"\ncalibration:\n  temperature: {match.group(1)}\n" in out
        assert "3000 records, 3000 used, 0 skipped" in out
        for row in ("items        3000", "accuracy", "NLL", "ECE"):
            assert row in out

    def test_json_output_has_the_report_keys_and_skips(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """``--json`` prints one JSON object: the report's fields plus the records and skips."""
        code, out, _ = run(tmp_path, GOOD[:500] + BAD, capsys, "--json")
        assert code == EXIT_OK
        summary = json.loads(out)
        assert set(summary) == {
            "items",
            "temperature",
            "accuracy",
            "nll_before",
            "nll_after",
            "ece_before",
            "ece_after",
            "records",
            "skipped",
            "skipped_examples",
        }
        assert summary["items"] == 500
        assert summary["records"] == 500 + len(BAD)
        assert summary["skipped"] == BAD_COUNTS
        assert summary["nll_after"] <= summary["nll_before"]
        assert summary["skipped_examples"][0] == {
            "line": 501,
            "reason": "malformed_json",
            "message": summary["skipped_examples"][0]["message"],
        }

    def test_skipped_lines_are_counted_by_reason_with_line_numbers(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Invalid records, missing and unknown labels are skipped, counted exactly, and the first quoted."""
        lines = [*BAD[:3], "", GOOD[0], *BAD[3:], *GOOD[1:200]]
        code, out, _ = run(tmp_path, lines, capsys)
        assert code == EXIT_OK
        assert f"{200 + len(BAD)} records, 200 used, {len(BAD)} skipped" in out
        for reason, n in BAD_COUNTS.items():
            assert f"  skipped {n:>6} {reason}\n" in out
        assert "  line 1: malformed_json: not valid JSON" in out
        assert "  line 2: missing_label: field 'label' (the true class) is missing\n" in out
        assert "  line 3: missing_id: " in out
        assert (
            "  line 6: unknown_label: 'label' must be one of the configured classes "
            "['ok', 'scratch', 'dent']: 'bent'\n" in out
        )
        assert "  line 7: missing_label: " in out  # the blank line 4 still counts
        assert f"  ... {len(BAD) - 5} more\n" in out

    def test_no_usable_record_exits_1_with_the_reason(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A file without one labeled valid prediction is an error that says what each line needs."""
        code, out, err = run(tmp_path, BAD, capsys)
        assert code == EXIT_ERROR
        assert out == ""
        assert err.startswith(
            f"selector calibrate: no usable labeled prediction in {tmp_path / 'labeled.jsonl'} "
            "(9 records, 1 malformed_json, 1 missing_id, 3 missing_label, 1 not_an_object, "
            "2 unknown_label, 1 wrong_class_count); each line needs 'id', 'probs' or 'logits' and 'label', "
            "one of ['ok', 'scratch', 'dent']\n"
        )
        assert "  line 1: malformed_json: " in err

    def test_empty_file_exits_1(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        code, _, err = run(tmp_path, [], capsys)
        assert code == EXIT_ERROR
        assert "(0 records, none skipped)" in err

    def test_unreadable_input_is_a_usage_error(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        missing = str(tmp_path / "nope.jsonl")
        code = main(["calibrate", "-c", write_config(tmp_path), "--input", missing])
        _, err = capsys.readouterr()
        assert code == EXIT_CONFIG
        assert f"selector calibrate: cannot read --input {missing!r}: No such file or directory" in err

    def test_reads_stdin(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """``--input -`` reads the records from standard input."""
        data = io.TextIOWrapper(io.BytesIO("".join(line + "\n" for line in GOOD[:300]).encode()))
        monkeypatch.setattr("sys.stdin", data)
        code = main(["calibrate", "-c", write_config(tmp_path), "--input", "-", "--json"])
        out, _ = capsys.readouterr()
        assert code == EXIT_OK
        assert json.loads(out)["items"] == 300

    def test_exit_codes_are_the_command_lines(self) -> None:
        """The module's exit codes mirror connectors.cli.main's (it does not import the CLI)."""
        assert calibrate_module.EXIT_OK == cli.EXIT_OK
        assert calibrate_module.EXIT_ERROR == cli.EXIT_ERROR
        assert calibrate_module.EXIT_USAGE == cli.EXIT_CONFIG
