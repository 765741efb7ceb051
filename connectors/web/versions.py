"""The model registry's newest versions and the gate's verdict on each, for the label loop's status and page.

The registry is passed in (any object with ``root``, ``versions()``, ``current()`` and ``manifest()``, as
:class:`connectors.model.registry.ModelRegistry` has), so this room reads no model code.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Protocol

from connectors.web.server import Part
from selector.errors import SelectorError

RECENT_VERSIONS = 8
"""How many of the registry's newest versions the status lists."""


class Versions(Protocol):
    """What is read of the model registry."""

    @property
    def root(self) -> Path: ...

    def versions(self) -> list[str]: ...

    def current(self) -> str | None: ...

    def manifest(self, version: str) -> dict[str, Any]: ...


def with_registry(part: Part, registry: Versions, keep: int = RECENT_VERSIONS) -> Part:
    """``part`` whose status carries ``registry``: ``{path, current, versions}``, the newest ``keep`` versions
    first, each ``{version, status, current, created_at, parent, candidate_macro_f1, current_macro_f1,
    holdout}`` (``status``: the gate's ``promoted`` or ``rejected``, or ``unreadable`` with an ``error``);
    None while the directory does not exist, with ``error`` (and no versions) while it cannot be read. Read by
    the endpoint's history thread every few seconds, never by the loop nor at request time; a version's
    manifest is read until it was read whole once (versions are immutable)."""
    gates: dict[str, dict[str, Any]] = {}
    seen: dict[str, Any] = {"registry": None}

    def sample(now: float) -> None:
        if part.sample is not None:
            part.sample(now)
        if not registry.root.is_dir():
            seen["registry"] = None
            return
        try:
            newest = registry.versions()[::-1][:keep]
            current = registry.current()
        except OSError as exc:  # the history thread goes on for every part
            path, error = str(registry.root), str(exc)
            seen["registry"] = {"path": path, "current": None, "versions": [], "error": error}
            return
        read = {v: gates.get(v) or _gate(registry, v) for v in newest}
        gates.update({v: g for v, g in read.items() if g["status"] != "unreadable"})
        seen["registry"] = {
            "path": str(registry.root),
            "current": current,
            "versions": [{**read[v], "current": v == current} for v in newest],
        }

    def status() -> dict[str, Any]:
        return {**part.status(), "registry": seen["registry"]}

    return dataclasses.replace(part, status=status, sample=sample)


def _gate(registry: Versions, version: str) -> dict[str, Any]:
    """A version's gate outcome and the numbers it was decided on."""
    try:
        manifest = registry.manifest(version)
    except (SelectorError, OSError) as exc:
        return {"version": version, "status": "unreadable", "error": str(exc)}
    found = manifest.get("metrics")
    metrics: dict[str, Any] = found if isinstance(found, dict) else {}
    return {
        "version": version,
        "status": manifest.get("status"),
        "created_at": manifest.get("created_at"),
        "parent": manifest.get("parent"),
        "candidate_macro_f1": metrics.get("candidate_macro_f1"),
        "current_macro_f1": metrics.get("current_macro_f1"),
        "holdout": metrics.get("holdout"),
    }
