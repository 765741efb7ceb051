"""`selector replay --compare A.json B.json`: the key figures of two replays side by side as text and as an
HTML page, and the refusals: a file that is not a summary, summaries of different inputs."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from connectors.cli.main import main
from selector.quality.estimates import wilson
from tests.connectors.offline.test_accept_side import FIXED, known_stream
from tests.connectors.offline.test_replay import prediction_lines, write_config, write_lines

STRICT_CRACK = FIXED.replace("default_threshold: 0.95", "default_threshold: 0.95, thresholds: {crack: 0.99}")
"""B: crack's threshold above its items' confidence 0.98: the 20 confident crack predictions are skipped."""


def summarize(capsys: pytest.CaptureFixture[str], config: Path, data: Path, out: Path) -> Path:
    assert main(["replay", "-c", str(config), "--input", str(data)]) == 0
    out.write_text(capsys.readouterr().out)
    return out


def compare(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["replay", "--compare", *args])
    out, err = capsys.readouterr()
    return code, out, err


def shown(successes: int, n: int) -> str:
    """A precision as the comparison prints it: estimate [low, high] of the 95% Wilson interval."""
    w = wilson(successes, n)
    return f"{w.estimate:.2%} [{round(w.low, 6):.2%}, {round(w.high, 6):.2%}]"


def cells(text: str) -> dict[str, list[str]]:
    """Each indented row of the text as {name: [A, B, B - A]} (columns are two or more spaces apart)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("  ") and line.strip():
            name, *values = re.split(r"\s{2,}", line.strip())
            out.setdefault(name, values)
    return out


@pytest.fixture
def pair(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, Path]:
    data = known_stream(tmp_path)
    a = summarize(capsys, write_config(tmp_path / "a.yaml", FIXED), data, tmp_path / "a.json")
    b = summarize(capsys, write_config(tmp_path / "b.yaml", STRICT_CRACK), data, tmp_path / "b.json")
    return a, b


class TestCompareText:
    def test_key_figures_side_by_side_with_the_difference(
        self, pair: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Rates in percent with B - A in points, counts with a signed difference, precision with its
        interval, and a class B never accepted shown as '-' with no difference."""
        code, out, err = compare(capsys, str(pair[0]), str(pair[1]))
        assert code == 0 and err == ""
        rows = cells(out)
        assert rows["accept rate"] == ["76.67%", "73.33%", "-3.33 pp"]
        assert rows["skip rate"] == ["15.00%", "18.33%", "+3.33 pp"]
        assert rows["query rate"] == ["8.33%", "8.33%", "0.00 pp"]
        assert rows["labels spent"] == ["50", "50", "0"]
        assert rows["labels budgeted (items x rate)"] == ["540", "540", "0"]
        assert rows["all classes"] == [shown(440, 460), shown(430, 440), "+2.08 pp"]
        assert rows["crack"] == [shown(10, 20), "-"]
        assert rows["caught / defects"] == ["74.07%", "61.73%", "-12.35 pp"]
        assert rows["accepted correctly"] == ["40", "30", "-10"]
        assert rows["skipped"] == ["5", "25", "+20"]
        assert rows["scratch"] == [shown(30, 34), shown(30, 34), "0.00 pp"]

    def test_only_the_configuration_keys_that_differ(
        self, pair: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The configuration section lists the one key that differs, and nothing else of the config."""
        _, out, _ = compare(capsys, str(pair[0]), str(pair[1]))
        section = out.split("configuration (keys that differ)\n", 1)[1]
        assert cells(section) == {"A": ["B", "B - A"], "accept.thresholds.crack": ["(unset)", "0.99"]}
        assert "budget.rate" not in out
        assert out.splitlines()[0].startswith(f"A: {pair[0]} (config ")

    def test_per_true_class_accepted_wrongly(
        self, pair: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Scratches accepted as crack (10) are gone in B; the ones accepted as ok (6) remain."""
        _, out, _ = compare(capsys, str(pair[0]), str(pair[1]))
        section = cells(out.split("accepted wrongly (true class)\n", 1)[1])
        assert section["scratch"] == ["16", "6", "-10"]
        assert section["ok"] == ["4", "4", "0"]

    def test_reserved_shares_binding_or_not(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """B reserves shares A has not: each is shown with whether it was binding (crack has too few
        eligible items for half the budget, ok plenty for a fifth); the shares are the keys that differ."""
        data = write_lines(tmp_path / "p.jsonl", prediction_lines(6000))
        budget = "budget: {rate: 0.05, audit_rate: 0.002%s}\n"
        a = summarize(capsys, write_config(tmp_path / "a.yaml", budget % ""), data, tmp_path / "a.json")
        shares = ", class_shares: {crack: 0.5, ok: 0.2}"
        b = summarize(capsys, write_config(tmp_path / "b.yaml", budget % shares), data, tmp_path / "b.json")
        _, out, _ = compare(capsys, str(a), str(b))
        rows = cells(out.split("reserved shares\n", 1)[1])
        assert rows["class:ok"] == ["(unset)", "0.2: binding, 60 labels"]
        assert rows["class:crack"][0] == "(unset)"
        assert re.fullmatch(r"0\.5: not binding, \d+ labels", rows["class:crack"][1])
        assert rows["budget.class_shares.crack"] == ["(unset)", "0.5"]

    def test_a_summary_from_before_the_accept_side(
        self, tmp_path: Path, pair: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A summary without digest, accept side or settings still compares (by its source): its missing
        figures show as '-', and the configuration is compared on the keys both tables have."""
        old = json.loads(pair[0].read_text())
        for key in ("accept", "defect_capture"):
            del old[key]
        del old["input"]["digest"]
        old["config"] = {
            k: v for k, v in old["config"].items() if k not in ("accept", "reserved", "settings")
        }
        old_path = tmp_path / "old.json"
        old_path.write_text(json.dumps(old))
        code, out, err = compare(capsys, str(old_path), str(pair[1]))
        assert code == 0 and err == ""
        rows = cells(out)
        assert rows["all classes"] == ["-", shown(430, 440)]
        assert rows["accept rate"] == ["76.67%", "73.33%", "-3.33 pp"]
        assert "configuration: no decision setting differs" in out


class _Tags(HTMLParser):
    VOID = frozenset({"meta", "br"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.cells: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack.pop() == tag, f"unbalanced </{tag}>"

    def handle_data(self, data: str) -> None:
        if self.stack and self.stack[-1] == "td":
            self.cells.append(data)


class TestCompareHtml:
    def test_a_self_contained_page_with_both_configurations(
        self, tmp_path: Path, pair: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--report writes a well-formed page with no script or fetch, both config hashes, the figures and
        every decision setting of both configurations; the text still goes to stdout."""
        page = tmp_path / "compare.html"
        code, out, _ = compare(capsys, str(pair[0]), str(pair[1]), "--report", str(page))
        assert code == 0 and "accept rate" in out
        html = page.read_text()
        parser = _Tags()
        parser.feed(html)
        assert parser.stack == []
        for path in pair:
            assert json.loads(path.read_text())["config"]["hash"] in html
        assert "<td>accept rate</td><td>76.67%</td><td>73.33%</td><td>-3.33 pp</td>" in html
        assert "<td>accept.thresholds.crack</td><td>(unset)</td><td>0.99</td>" in html
        assert "<td>budget.rate</td><td>0.9</td><td>0.9</td>" in html
        assert "<script" not in html and "src=" not in html and "href=" not in html


class TestCompareRefusals:
    def test_a_file_that_is_not_a_summary(
        self, tmp_path: Path, pair: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Predictions instead of a summary, a JSON object of something else, a missing file: exit 2 naming
        the file and what to give."""
        lines = write_lines(tmp_path / "p.jsonl", prediction_lines(3))
        other = tmp_path / "other.json"
        other.write_text('{"items": 3}')
        for bad, says in (
            (lines, "is not a replay summary (not JSON"),
            (other, "is not a replay summary (missing 'input', 'config', 'routes'"),
            (tmp_path / "nope.json", "cannot read"),
        ):
            code, out, err = compare(capsys, str(pair[0]), str(bad))
            assert code == 2 and out == ""
            assert says in err and str(bad) in err, err

    def test_summaries_of_different_inputs_are_refused(
        self, tmp_path: Path, pair: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Two different files of the same size are different inputs: exit 2 naming both sources."""
        other = write_lines(tmp_path / "other.jsonl", prediction_lines(600))
        c = summarize(capsys, write_config(tmp_path / "c.yaml", FIXED), other, tmp_path / "c.json")
        code, out, err = compare(capsys, str(pair[0]), str(c))
        assert code == 2 and out == ""
        assert "replayed different inputs" in err and "known.jsonl" in err and "other.jsonl" in err

    def test_one_source_with_other_record_counts_is_compared_with_a_warning(
        self, tmp_path: Path, pair: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The same file grown by 10 records: compared (exit 0), with a warning that names both counts."""
        data = tmp_path / "known.jsonl"
        with data.open("ab") as f:
            f.write(b"".join(line + b"\n" for line in prediction_lines(10)))
        grown = summarize(capsys, write_config(tmp_path / "c.yaml", FIXED), data, tmp_path / "c.json")
        code, out, err = compare(capsys, str(pair[0]), str(grown))
        assert code == 0 and "accept rate" in out
        assert "warning: the inputs' record counts differ (A 600 records, B 610)" in err

    def test_compare_takes_no_replay_options(
        self, pair: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--compare with --input is an argument error; with --output or --rate a usage error (exit 2)."""
        with pytest.raises(SystemExit) as both:
            main(["replay", "--compare", str(pair[0]), str(pair[1]), "--input", "x.jsonl"])
        assert both.value.code == 2
        code, _, err = compare(capsys, str(pair[0]), str(pair[1]), "--output", "d.jsonl")
        assert code == 2 and "--output applies to a replay, not to --compare" in err
