"""The model registry: a directory of immutable model versions and a pointer to the promoted one.

Layout::

    root/
      CURRENT            the promoted version's name ("v3"), replaced atomically (os.replace)
      v1/model.onnx      the exported graph
      v1/manifest.json   what it is, where it came from and how it scored
      v2/...

A version is written into a hidden temporary directory and renamed into place, so a reader sees either no
``vN`` or a complete one; CURRENT moves only after the version it names is complete. Versions are never
rewritten: a rejected candidate stays (``status: "rejected"``) as the record of why it was not served.

Manifest fields: ``version``, ``parent`` (the version current when it was trained, or null), ``created_at``
(RFC 3339 UTC), ``status`` (``promoted`` | ``rejected``), ``sha256`` (of ``model.onnx``), ``classes``,
``embedding_dim``, ``members``, ``metrics``, ``data`` (counts: train, holdout, by label) and ``settings``.

Example:
    >>> import tempfile
    >>> registry = ModelRegistry(tempfile.mkdtemp())
    >>> registry.add(b"graph", {"created_at": 0.0, "classes": ["ok"]}, promote=True)["version"]
    'v1'
    >>> registry.current(), registry.verify("v1")
    ('v1', b'graph')
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from selector.errors import SelectorError

_VERSION = re.compile(r"v([1-9][0-9]*)")
_RESERVED = ("version", "status", "sha256")
"""Manifest fields the registry sets itself."""


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


class ModelRegistry:
    """Model versions under ``root`` (created on the first :meth:`add`)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def versions(self) -> list[str]:
        """The complete versions, oldest first (by number, so v10 comes after v9)."""
        if not self.root.is_dir():
            return []
        found = [p.name for p in self.root.iterdir() if p.is_dir() and _VERSION.fullmatch(p.name)]
        return sorted(found, key=_number)

    def next_version(self) -> str:
        """The name the next :meth:`add` will take (unless another writer takes it first)."""
        existing = self.versions()
        return f"v{_number(existing[-1]) + 1}" if existing else "v1"

    def current(self) -> str | None:
        """The promoted version, or None before the first promotion."""
        try:
            name = (self.root / "CURRENT").read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return name or None

    def model_path(self, version: str) -> Path:
        return self._dir(version) / "model.onnx"

    def manifest(self, version: str) -> dict[str, Any]:
        """The manifest of ``version``.

        Raises:
            SelectorError: no such version, or its manifest is not JSON.
        """
        path = self._dir(version) / "manifest.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise SelectorError(f"model {version}: no manifest at {path}") from exc
        except json.JSONDecodeError as exc:
            raise SelectorError(f"model {version}: manifest {path} is not JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise SelectorError(f"model {version}: manifest {path} is not a JSON object")
        return data

    def verify(self, version: str) -> bytes:
        """The bytes of ``version``'s model, after checking them against the manifest's sha256.

        Raises:
            SelectorError: the version, its manifest or its model file is missing, or the file's sha256 is
                not the manifest's (the file was altered or truncated: do not serve it).
        """
        manifest = self.manifest(version)
        path = self.model_path(version)
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise SelectorError(f"model {version}: {path} is missing") from exc
        expected = manifest.get("sha256")
        actual = hashlib.sha256(data).hexdigest()
        if expected != actual:
            raise SelectorError(f"model {version}: sha256 mismatch (manifest {expected}, file {actual})")
        return data

    def add(self, onnx_bytes: bytes, manifest_fields: dict[str, Any], promote: bool) -> dict[str, Any]:
        """Store a new version and, if ``promote``, make it current; returns its manifest.

        ``manifest_fields`` holds the descriptive fields; ``created_at`` may be a POSIX time (converted to
        RFC 3339) or already a string, and ``parent`` defaults to the version current now. The registry sets
        ``version``, ``status`` and ``sha256`` itself.

        Steps (a crash between any two leaves a consistent registry):

        1. write ``model.onnx`` and ``manifest.json`` (fsynced) into a hidden temporary directory;
        2. rename it to ``vN``; if another writer took ``vN`` meanwhile, rewrite as ``vN+1`` and retry;
        3. if promoted, write ``CURRENT`` to a temporary file and ``os.replace`` it over the old one.

        Raises:
            SelectorError: ``manifest_fields`` names a field the registry sets, or lacks ``created_at``.
        """
        clash = sorted(set(_RESERVED) & set(manifest_fields))
        if clash:
            raise SelectorError(f"manifest fields {clash} are set by the registry, not the caller")
        if "created_at" not in manifest_fields:
            raise SelectorError("manifest fields need 'created_at' (the time the model was trained)")
        fields = dict(manifest_fields)
        if isinstance(fields["created_at"], int | float):
            fields["created_at"] = _rfc3339(float(fields["created_at"]))
        fields.setdefault("parent", self.current())
        self.root.mkdir(parents=True, exist_ok=True)
        sha = hashlib.sha256(onnx_bytes).hexdigest()
        tried = 0
        while True:
            tried = max(tried + 1, _number(self.next_version()))
            version = f"v{tried}"
            manifest = {"version": version, "status": "promoted" if promote else "rejected", "sha256": sha}
            manifest.update(fields)
            staging = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=self.root))
            try:
                _write_synced(staging / "model.onnx", onnx_bytes)
                text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
                _write_synced(staging / "manifest.json", text.encode())
                target = self.root / version
                if target.exists():
                    continue  # another writer took this number: take the next one
                try:
                    os.rename(staging, target)
                except OSError:
                    if target.exists():
                        continue
                    raise
                break
            finally:
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)
        if promote:
            self._set_current(version)
        return manifest

    def _set_current(self, version: str) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-CURRENT-", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(f"{version}\n".encode())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.root / "CURRENT")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _dir(self, version: str) -> Path:
        # Versions arrive in models-topic events: a name like "../x" must never become a path.
        if not _VERSION.fullmatch(version):
            raise SelectorError(f"model version must look like 'v1', 'v2', ...: {version!r}")
        return self.root / version


def _number(version: str) -> int:
    return int(version[1:])
