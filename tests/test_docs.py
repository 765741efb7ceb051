"""Specification of the documentation: README.md stays a short walk-in, docs/ holds the reference.

Every configuration key is documented in docs/, every relative link of README.md and docs/*.md lands on a
file (and an anchor on a heading), and the README's example messages and config are accepted by the code that
reads them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from pydantic import BaseModel

from selector.config import Config, parse_config
from selector.messages.contracts import Accepted, Prediction, ToLabel
from selector.messages.prediction import decode_batch
from selector.quality.labels import LabelEvent, parse_label

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
README_MAX_BYTES = 16_000

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} +(.+?) *$", re.MULTILINE)


def config_keys(model: type[BaseModel] = Config, prefix: str = "") -> Iterator[str]:
    """Dotted names of every configuration key (``budget.rate``), walking nested sections."""
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from config_keys(ann, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


def documented(key: str, text: str) -> bool:
    """``key`` appears as `` `key` ``, or in a table row starting with `` `section.`` that names `` `leaf` ``
    (the reference groups keys of a section in one row: ``| `kafka.group_id`, `client_id` | ...``)."""
    if f"`{key}`" in text:
        return True
    section, _, leaf = key.rpartition(".")
    for line in text.splitlines():
        cells = line.split("|")
        if line.startswith("| `") and len(cells) > 2:
            first = cells[1].strip()
            if first.startswith(f"`{section}.") and f"`{leaf}`" in first:
                return True
    return False


def prose(text: str) -> str:
    """Markdown without fenced blocks and inline code, where a link is a link."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Anchors of a Markdown file's headings (a repeated heading gets ``-1``, ``-2``, ... as on GitHub)."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links() -> list[tuple[Path, str]]:
    """(file, target) of every relative link and image in README.md and docs/*.md."""
    out = []
    for path in [README, *DOCS]:
        for target in LINK.findall(prose(path.read_text(encoding="utf-8"))):
            if not re.match(r"[a-z][a-z0-9+.-]*:", target):
                out.append((path, target))
    return out


def blocks(lang: str) -> list[str]:
    """Bodies of the README's fenced blocks of one language."""
    return [body for kind, body in FENCE.findall(README.read_text(encoding="utf-8")) if kind == lang]


def readme_messages() -> list[dict[str, Any]]:
    """The README's example messages: each ``json`` block is one JSON object."""
    return [json.loads(body) for body in blocks("json")]


def readme_config() -> Config:
    (body,) = blocks("yaml")
    return parse_config(yaml.safe_load(body), "README.md")


class TestConfigReference:
    def test_docs_exist(self) -> None:
        """The reference lives in docs/: configuration, budget, estimates, operations, performance, replay."""
        names = {p.name for p in DOCS}
        assert {"configuration.md", "budget.md", "estimates.md", "operations.md", "performance.md"} <= names
        assert "replay.md" in names

    @pytest.mark.parametrize("key", list(config_keys()))
    def test_every_config_key_is_documented(self, key: str) -> None:
        """Each key of selector/config.py, by its dotted name, is documented somewhere in docs/."""
        text = "\n".join(p.read_text(encoding="utf-8") for p in DOCS)
        assert documented(key, text), f"config key {key!r} is not documented in docs/*.md"

    def test_the_walk_reaches_nested_keys(self) -> None:
        """The key walk descends into sections and stops at leaves (a mapping value is one key)."""
        keys = set(config_keys())
        assert {
            "classes",
            "budget.rate",
            "budget.caps",
            "kafka.outage_deadline_s",
            "label_studio.token",
        } <= keys
        assert "budget" not in keys


class TestLinks:
    def test_there_are_links_to_check(self) -> None:
        """README.md links into docs/ (the check below is not vacuous)."""
        assert any(target.startswith("docs/") for path, target in links() if path == README)

    @pytest.mark.parametrize(("path", "target"), links(), ids=[f"{p.name}->{t}" for p, t in links()])
    def test_relative_link_resolves(self, path: Path, target: str) -> None:
        """A relative link names an existing file, and its #anchor an existing heading of that file."""
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        assert dest.exists(), f"{path.name}: link to {target!r}, no such file"
        if anchor:
            assert dest.suffix == ".md", f"{path.name}: anchor into a non-Markdown file: {target!r}"
            assert anchor in anchors(dest), f"{path.name}: no heading for #{anchor} in {dest.name}"


class TestReadme:
    def test_stays_short(self) -> None:
        """README.md is a walk-in, not the reference: under 16 kB."""
        size = len(README.read_bytes())
        assert size < README_MAX_BYTES, (
            f"README.md is {size} bytes (limit {README_MAX_BYTES}): move text to docs/"
        )

    def test_example_config_is_valid(self) -> None:
        """The README's config.yaml example passes the configuration's validation."""
        config = readme_config()
        assert config.classes == ["ok", "scratch", "dent", "crack"]

    def test_example_prediction_decodes(self) -> None:
        """The example prediction fits the contract; the monitor's decoder accepts it under that config."""
        (prediction,) = [
            m for m in readme_messages() if "probs" in m and "confidence" not in m and "route" not in m
        ]
        Prediction.model_validate(prediction)
        config = readme_config()
        batch = decode_batch(
            [json.dumps(prediction).encode()], np.zeros(1, dtype=np.int64), **config.decode_options()
        )
        assert batch.ids == [prediction["id"]], batch.rejects

    def test_example_outputs_match_their_contracts(self) -> None:
        """The example to-label and accepted records are valid records of their (closed) contracts."""
        messages = readme_messages()
        (to_label,) = [m for m in messages if "route" in m]
        (accepted,) = [m for m in messages if "confidence" in m]
        ToLabel.model_validate(to_label)
        Accepted.model_validate(accepted)

    def test_example_label_is_ingested(self) -> None:
        """The example label message is what the label loop accepts, for the item of the examples."""
        (label,) = [m for m in readme_messages() if "annotator" in m]
        event = parse_label(json.dumps(label).encode(), readme_config().classes, 0.0)
        assert isinstance(event, LabelEvent), event
        assert (event.id, event.label) == (label["id"], label["label"])
