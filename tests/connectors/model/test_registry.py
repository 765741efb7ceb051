"""The model registry on a real directory: version numbering, CURRENT moving only on promotion, manifests that
match their files, tampering detected, and no partially written version ever visible."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from connectors.model.registry import ModelRegistry
from selector.errors import SelectorError

NOW = 1_764_000_000.5
"""2025-11-24T16:00:00.500Z"""


def fields(**extra: Any) -> dict[str, Any]:
    base = {
        "created_at": NOW,
        "classes": ["ok", "dent"],
        "embedding_dim": 8,
        "members": 3,
        "metrics": {"candidate_macro_f1": 0.9},
        "data": {"train": 40, "holdout": 10, "by_label": {"ok": 30, "dent": 20}},
        "settings": {"epochs": 5},
    }
    return {**base, **extra}


class TestVersions:
    def test_an_empty_registry_has_nothing_and_creates_nothing(self, tmp_path: Path) -> None:
        """A registry directory that does not exist reads as empty and is not created by reading."""
        registry = ModelRegistry(tmp_path / "models")
        assert (registry.versions(), registry.next_version(), registry.current()) == ([], "v1", None)
        assert not (tmp_path / "models").exists()

    def test_versions_are_numbered_and_sorted_by_number(self, tmp_path: Path) -> None:
        """Each add takes the next number, created on the first add; v10 sorts after v9."""
        registry = ModelRegistry(tmp_path / "models")
        names = [registry.add(f"m{i}".encode(), fields(), promote=False)["version"] for i in range(11)]
        assert names == [f"v{i}" for i in range(1, 12)]
        assert registry.versions() == names
        assert registry.next_version() == "v12"

    def test_current_moves_only_on_promotion(self, tmp_path: Path) -> None:
        """A rejected version never becomes current; a promoted one does."""
        registry = ModelRegistry(tmp_path)
        registry.add(b"a", fields(), promote=False)
        assert registry.current() is None
        registry.add(b"b", fields(), promote=True)
        registry.add(b"c", fields(), promote=False)
        assert registry.current() == "v2"
        assert (tmp_path / "CURRENT").read_text() == "v2\n"
        registry.add(b"d", fields(), promote=True)
        assert registry.current() == "v4"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["CURRENT", "v1", "v2", "v3", "v4"]


class TestManifest:
    def test_manifest_records_status_hash_time_and_fields(self, tmp_path: Path) -> None:
        """The registry sets version, status and sha256 and converts the time; the rest is kept as given."""
        registry = ModelRegistry(tmp_path)
        returned = registry.add(b"graph-bytes", fields(), promote=True)
        stored = registry.manifest("v1")
        assert stored == returned
        assert stored["version"] == "v1" and stored["status"] == "promoted"
        assert stored["sha256"] == hashlib.sha256(b"graph-bytes").hexdigest()
        assert stored["sha256"] == hashlib.sha256(registry.model_path("v1").read_bytes()).hexdigest()
        assert stored["created_at"] == "2025-11-24T16:00:00.500Z"
        assert stored["parent"] is None
        assert stored["data"]["by_label"] == {"ok": 30, "dent": 20}
        assert json.loads((tmp_path / "v1" / "manifest.json").read_text()) == stored

    def test_parent_defaults_to_the_current_version(self, tmp_path: Path) -> None:
        """A version added without a parent descends from the version current when it was added."""
        registry = ModelRegistry(tmp_path)
        registry.add(b"a", fields(), promote=True)
        assert registry.add(b"b", fields(), promote=False)["parent"] == "v1"
        assert registry.add(b"c", fields(parent=None), promote=False)["parent"] is None
        assert registry.manifest("v2")["status"] == "rejected"

    def test_fields_the_registry_sets_are_refused(self, tmp_path: Path) -> None:
        """A caller cannot forge the hash, status or number; a manifest needs its training time."""
        registry = ModelRegistry(tmp_path)
        with pytest.raises(SelectorError, match=r"\['sha256'\] are set by the registry"):
            registry.add(b"a", fields(sha256="0" * 64), promote=True)
        with pytest.raises(SelectorError, match="need 'created_at'"):
            registry.add(b"a", {"classes": ["ok"]}, promote=True)
        assert registry.versions() == []


class TestVerify:
    def test_verify_returns_the_untouched_bytes(self, tmp_path: Path) -> None:
        registry = ModelRegistry(tmp_path)
        registry.add(b"\x00model\xff", fields(), promote=True)
        assert registry.verify("v1") == b"\x00model\xff"

    def test_a_tampered_file_is_refused(self, tmp_path: Path) -> None:
        """A model file that is not the one the manifest describes is reported with both hashes."""
        registry = ModelRegistry(tmp_path)
        registry.add(b"original", fields(), promote=True)
        registry.model_path("v1").write_bytes(b"tampered")
        expected = hashlib.sha256(b"original").hexdigest()
        actual = hashlib.sha256(b"tampered").hexdigest()
        with pytest.raises(SelectorError) as info:
            registry.verify("v1")
        assert str(info.value) == f"model v1: sha256 mismatch (manifest {expected}, file {actual})"

    def test_missing_files_and_unknown_versions_are_named(self, tmp_path: Path) -> None:
        registry = ModelRegistry(tmp_path)
        registry.add(b"a", fields(), promote=True)
        registry.model_path("v1").unlink()
        with pytest.raises(SelectorError, match=r"model v1: .*model\.onnx is missing"):
            registry.verify("v1")
        with pytest.raises(SelectorError, match=r"model v7: no manifest at .*v7"):
            registry.verify("v7")

    @pytest.mark.parametrize("name", ["../v1", "v0", "v01", "current", "v1/../v2", ""])
    def test_version_names_never_become_arbitrary_paths(self, tmp_path: Path, name: str) -> None:
        """Version names come from models-topic events: only vN is accepted."""
        registry = ModelRegistry(tmp_path)
        with pytest.raises(SelectorError, match="must look like 'v1'"):
            registry.manifest(name)


class TestAtomicity:
    def test_a_failed_rename_leaves_no_version_and_no_temporary_dir(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A crash before the rename leaves the registry as it was: no vN, no staging dir, CURRENT kept."""
        registry = ModelRegistry(tmp_path)
        registry.add(b"a", fields(), promote=True)

        def broken_rename(src: object, dst: object) -> None:
            raise OSError("disk full")

        monkeypatch.setattr(os, "rename", broken_rename)
        with pytest.raises(OSError, match="disk full"):
            registry.add(b"b", fields(), promote=True)
        assert registry.versions() == ["v1"] and registry.current() == "v1"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["CURRENT", "v1"]

    def test_a_leftover_staging_dir_is_not_a_version(self, tmp_path: Path) -> None:
        """The hidden directory a killed writer left behind is neither listed nor in the way."""
        registry = ModelRegistry(tmp_path)
        registry.add(b"a", fields(), promote=False)
        staging = tmp_path / ".tmp-v2-abc123"
        staging.mkdir()
        (staging / "model.onnx").write_bytes(b"half")
        assert registry.versions() == ["v1"]
        assert registry.add(b"b", fields(), promote=True)["version"] == "v2"
        assert registry.verify("v2") == b"b"

    def test_a_number_taken_by_another_writer_is_skipped(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """If another process publishes vN between our staging and our rename, ours becomes vN+1 and
        theirs is left intact."""
        registry = ModelRegistry(tmp_path)
        real_rename = os.rename
        raced: list[str | Path] = []

        def racing_rename(src: str | Path, dst: str | Path) -> None:
            if not raced:
                raced.append(dst)
                Path(dst).mkdir()
                (Path(dst) / "model.onnx").write_bytes(b"theirs")
            real_rename(src, dst)

        monkeypatch.setattr(os, "rename", racing_rename)
        manifest = registry.add(b"ours", fields(), promote=True)
        assert raced == [tmp_path / "v1"]
        assert manifest["version"] == "v2" and registry.current() == "v2"
        assert registry.verify("v2") == b"ours"
        assert (tmp_path / "v1" / "model.onnx").read_bytes() == b"theirs"
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
