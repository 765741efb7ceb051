"""`selector dataset import`: a labeled set the team already has becomes seed examples, checked whole first.

Seeds are stored once (a re-import changes nothing), train (``examples()`` yields them after the human
examples), are marked in the export, and never stand in for a human label; a bad file stores nothing and
exits 2 with the rows named."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from connectors.cli.main import main
from connectors.model.dataset import DatasetStore
from connectors.model.seeds import import_seeds
from selector.quality.labels import LabelEvent

CLASSES = ["ok", "scratch", "dent", "crack"]


def rows(n: int, dim: int = 3) -> list[dict[str, Any]]:
    """``n`` rows cycling through the classes, every other one under ``features`` and without an id."""
    out: list[dict[str, Any]] = []
    for k in range(n):
        row: dict[str, Any] = {
            "label": CLASSES[k % 4],
            "embedding" if k % 2 else "features": [k, 0.5] + [1] * (dim - 2),
        }
        if k % 3 == 0:
            row.update(id=f"item-{k}", annotator="qa-team", ts="2026-01-02T03:04:05Z")
        out.append(row)
    return out


def jsonl(path: Path, values: list[Any]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(v) + b"\n" for v in values))
    return path


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"classes: {CLASSES}\ndataset: {{path: '{tmp_path / 'd.sqlite'}'}}\n")
    return path


def seed_count(tmp_path: Path) -> int:
    store = DatasetStore(tmp_path / "d.sqlite")
    try:
        return store.counts()["seeds"]
    finally:
        store.close()


class TestImport:
    def test_json_lines_become_seed_examples_after_the_human_ones(
        self, tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """8 rows, 4 labels: stored as seeds in file order (the store created on the way), with the counts
        by label on the command's line; examples() yields them after the human examples with source 'seed',
        weight 1 and no prediction; seeds=False leaves them out."""
        data = jsonl(tmp_path / "seed.jsonl", rows(8))
        assert main(["dataset", "import", str(data), "-c", str(config)]) == 0
        assert capsys.readouterr().out.strip() == (
            f"selector dataset import: 8 seed examples stored from {data} (8 new, 0 already there); "
            "by label: ok 2, scratch 2, dent 2, crack 2"
        )
        store = DatasetStore(tmp_path / "d.sqlite")
        store.add_decisions([{"id": "h-1", "route": "query", "predicted": "ok", "probs": [0.7, 0.1, 0.1, 0.1],
                              "embedding": [9.0, 9.0, 9.0], "query_probability": 0.5, "model": "v1",
                              "decided_at": "2026-11-24T00:00:00Z"}])  # fmt: skip
        store.add_labels([LabelEvent("h-1", "dent", "ann", 1.0)])
        examples = list(store.examples())
        assert [(e.source, e.label) for e in examples] == [("human", "dent")] + [
            ("seed", CLASSES[k % 4]) for k in range(8)
        ]
        first = examples[1]
        assert (first.id, first.embedding, first.weight, first.predicted, first.route) == (
            "item-0",
            [0.0, 0.5, 1.0],
            1.0,
            "",
            "seed",
        )
        assert first.decided_at == "2026-01-02T03:04:05.000Z"
        assert examples[2].id.startswith("seed-") and len(examples[2].id) == 21  # derived from the content
        assert [e.source for e in store.examples(seeds=False)] == ["human"]
        assert store.counts()["seeds"] == 8

    def test_parquet_is_read_like_json_lines(self, tmp_path: Path, config: Path) -> None:
        """The same rows as a Parquet file (float32 lists, a timestamp column) store the same seeds, ids
        derived from the same content included."""
        import pyarrow as pa  # noqa: PLC0415 (the optional dependency under test)
        import pyarrow.parquet as pq  # noqa: PLC0415

        values = [{"label": r["label"], "embedding": r.get("embedding", r.get("features"))} for r in rows(6)]
        table = pa.table(
            {
                "label": [v["label"] for v in values],
                "embedding": pa.array([v["embedding"] for v in values], pa.list_(pa.float32())),
                "camera": ["a"] * 6,  # another column: ignored
            }
        )
        pq.write_table(table, tmp_path / "seed.parquet")
        jsonl(tmp_path / "seed.jsonl", values)
        assert main(["dataset", "import", str(tmp_path / "seed.parquet"), "-c", str(config)]) == 0
        assert main(["dataset", "import", str(tmp_path / "seed.jsonl"), "-c", str(config)]) == 0
        assert seed_count(tmp_path) == 6  # the JSON lines found every row already there

    def test_re_importing_the_same_file_stores_nothing_twice(
        self, tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A second import finds every row already there; a row repeated inside the file counts once."""
        data = jsonl(tmp_path / "seed.jsonl", [*rows(5), rows(5)[1]])
        assert main(["dataset", "import", str(data), "-c", str(config)]) == 0
        assert main(["dataset", "import", str(data), "-c", str(config)]) == 0
        out = capsys.readouterr().out.splitlines()
        assert "5 seed examples stored" in out[0] and "(5 new, 0 already there)" in out[0]
        assert "(0 new, 5 already there)" in out[1] and "1 row repeated, counted once" in out[1]
        assert seed_count(tmp_path) == 5

    def test_dry_run_checks_and_stores_nothing(
        self, tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--dry-run says what would be stored and creates no store."""
        data = jsonl(tmp_path / "seed.jsonl", rows(4))
        assert main(["dataset", "import", str(data), "--dry-run", "-c", str(config)]) == 0
        out = capsys.readouterr().out
        assert "4 seed examples would be stored" in out and "dry run: nothing stored" in out
        assert not (tmp_path / "d.sqlite").exists()

    def test_weight_is_kept_per_row_and_a_changed_weight_is_refused(self, tmp_path: Path) -> None:
        """--weight W is each row's training weight; importing the same rows with another weight is a
        conflict that stores nothing."""
        store = DatasetStore(tmp_path / "d.sqlite")
        data = jsonl(tmp_path / "seed.jsonl", rows(3))
        import_seeds(store, data, CLASSES, None, weight=0.25, now=0.0)
        assert {e.weight for e in store.examples()} == {0.25}
        with pytest.raises(Exception, match=r"weight 0.25, this import 1"):
            import_seeds(store, data, CLASSES, None, now=1.0)

    def test_a_seed_never_stands_in_for_a_human_label_or_a_pseudo_label_for_a_seed(
        self, tmp_path: Path
    ) -> None:
        """An item the stream labeled again yields its human example only; a pseudo-label of a seeded item
        is not yielded."""
        store = DatasetStore(tmp_path / "d.sqlite")
        import_seeds(store, jsonl(tmp_path / "s.jsonl", rows(2)), CLASSES, None, now=0.0)
        store.add_decisions([{"id": "item-0", "route": "audit", "predicted": "ok", "probs": [1.0, 0, 0, 0],
                              "embedding": None, "query_probability": 1.0, "model": "v1",
                              "decided_at": "2026-11-24T00:00:00Z"}])  # fmt: skip
        store.add_labels([LabelEvent("item-0", "crack", "ann", 1.0)])
        assert [(e.id, e.source, e.label) for e in store.examples()][:1] == [("item-0", "human", "crack")]
        assert [e.source for e in store.examples()] == ["human", "seed"]

    def test_the_export_marks_seeds(
        self, tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`selector dataset export` writes the seeds with source 'seed' and counts them by source."""
        assert main(["dataset", "import", str(jsonl(tmp_path / "s.jsonl", rows(3))), "-c", str(config)]) == 0
        out = tmp_path / "x.jsonl"
        assert main(["dataset", "export", "-c", str(config), "--output", str(out)]) == 0
        assert [orjson.loads(line)["source"] for line in out.read_bytes().splitlines()] == ["seed"] * 3
        assert (
            capsys.readouterr().out.splitlines()[-1].endswith(f"3 labeled examples written to {out} (3 seed)")
        )


class TestValidation:
    """Every bad file: exit 2, the problem and its rows named, nothing stored (not even a store created)."""

    @pytest.mark.parametrize(
        ("values", "expected"),
        [
            (
                [*rows(3), {"label": "rust", "embedding": [1, 2, 3]},
                 {"label": "rust", "embedding": [1, 2, 4]}, {"label": "bent", "embedding": [1, 2, 5]}],
                "unknown labels: 'rust' (2 rows: line 4, line 5), 'bent' (1 row: line 6); "
                "the configured classes are ['ok', 'scratch', 'dent', 'crack']",
            ),
            ([*rows(3), {"label": "ok", "embedding": [1, 2]}],
             "line 4: the embedding has 2 numbers, expected 3 (most rows of this file)"),
            ([{"label": "ok"}, {"embedding": [1, 2, 3]}], "line 1: 'embedding' (or 'features') is missing"),
            ([{"embedding": [1, 2, 3]}], "line 1: 'label' is missing"),
            ([{"label": "ok", "embedding": [1, "2", 3]}],
             "line 1: 'embedding' must be a non-empty list of numbers"),
            ([{"label": "ok", "embedding": [1, 2, 3], "ts": "yesterday"}], "line 1: 'ts' is not RFC 3339"),
            ([{"id": "a", "label": "ok", "embedding": [1, 2, 3]},
              {"id": "a", "label": "dent", "embedding": [1, 2, 3]}],
             "line 2: id 'a' was given on line 1 with other content"),
            ([[1, 2, 3]], "line 1: a row must be a JSON object, got list"),
            ([], "the file holds no rows"),
        ],
    )  # fmt: skip
    def test_a_bad_row_stores_nothing(
        self,
        tmp_path: Path,
        config: Path,
        caplog: pytest.LogCaptureFixture,
        values: list[Any],
        expected: str,
    ) -> None:
        data = jsonl(tmp_path / "seed.jsonl", values)
        assert main(["dataset", "import", str(data), "-c", str(config)]) == 2
        assert f"cannot import {data}: nothing stored" in caplog.text
        assert expected in caplog.text
        assert not (tmp_path / "d.sqlite").exists()

    def test_non_finite_numbers_and_malformed_lines_are_named(
        self, tmp_path: Path, config: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """NaN and Infinity (which Python's json writes) are refused as non-finite, broken JSON as such; with
        more than five bad rows, the first five are named and the rest counted."""
        lines = [
            b'{"label": "ok", "embedding": [1, NaN, 3]}',
            b'{"label": "ok", "embedding": [Infinity, 2, 3]}',
            b"{not json",
            *[b'{"label": "ok"}'] * 7,
        ]
        data = tmp_path / "seed.jsonl"
        data.write_bytes(b"\n".join(lines))
        assert main(["dataset", "import", str(data), "-c", str(config)]) == 2
        assert "line 1: 'embedding' holds a non-finite number (nan) at position 1" in caplog.text
        assert "line 2: 'embedding' holds a non-finite number (inf) at position 0" in caplog.text
        assert "line 3: not valid JSON" in caplog.text
        assert "line 6: 'embedding' (or 'features') is missing" in caplog.text
        assert "line 7:" not in caplog.text and "... and 4 more like it" in caplog.text

    def test_the_configured_embedding_length_and_the_stored_seeds_bind(
        self, tmp_path: Path, config: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """With input.embedding_dim set, every row must have that length; without it, a second import must
        match the seeds already stored; a stored id with other content is refused; nothing is stored."""
        data = jsonl(tmp_path / "seed.jsonl", rows(3))
        with_dim = tmp_path / "dim.yaml"
        with_dim.write_text(config.read_text() + "input: {embedding_dim: 4}\n")
        assert main(["dataset", "import", str(data), "-c", str(with_dim)]) == 2
        assert "line 1: the embedding has 3 numbers, expected 4 (input.embedding_dim)" in caplog.text
        assert main(["dataset", "import", str(data), "-c", str(config)]) == 0
        longer = jsonl(tmp_path / "longer.jsonl", rows(2, dim=5))
        assert main(["dataset", "import", str(longer), "-c", str(config)]) == 2
        assert "expected 3 (the seeds already stored)" in caplog.text
        changed = jsonl(tmp_path / "changed.jsonl", [{**rows(1)[0], "label": "crack"}])
        assert main(["dataset", "import", str(changed), "-c", str(config)]) == 2
        assert "line 1: id 'item-0' is already stored with other content (label 'ok', this file 'crack')" in (
            caplog.text
        )
        assert seed_count(tmp_path) == 3

    def test_missing_file_bad_weight_and_missing_pyarrow_exit_2(
        self, tmp_path: Path, config: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        data = jsonl(tmp_path / "seed.jsonl", rows(2))
        assert main(["dataset", "import", str(tmp_path / "none.jsonl"), "-c", str(config)]) == 2
        assert "cannot read the file" in caplog.text
        assert main(["dataset", "import", str(data), "--weight", "0", "-c", str(config)]) == 2
        assert "--weight must be a positive finite number: 0.0" in caplog.text
        monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
        assert main(["dataset", "import", str(data), "--format", "parquet", "-c", str(config)]) == 2
        assert "reading Parquet needs pyarrow: pip install 'selector[parquet]'" in caplog.text
        assert not (tmp_path / "d.sqlite").exists()
