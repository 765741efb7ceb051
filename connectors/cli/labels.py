"""``selector labels``: the label loop (decisions and labels into the dataset store, retrain triggers)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from connectors.cli.base import EXIT_CONFIG, EXIT_OK, add_duration, needs_cluster, stop_after_round
from connectors.model.registry import ModelRegistry
from connectors.settings.startup import Reserved
from connectors.web.metrics import serve
from connectors.web.server import Part
from selector.config import Config
from selector.errors import SelectorError

HELP = "ingest decisions and labels into the dataset store (one per deployment)"

RECENT_VERSIONS = 8
"""How many of the registry's newest versions the label loop's status lists."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_duration(parser)


def handle(args: argparse.Namespace, config: Config, reserved: Reserved) -> int:
    if not needs_cluster(config, "labels"):
        reserved.close()
        return EXIT_CONFIG
    from connectors.labels.loop import LabelLoop  # noqa: PLC0415 (labels-only module)
    from connectors.labels.metrics import labels_part  # noqa: PLC0415 (with it)

    loop = LabelLoop(config, config.kafka.bootstrap_servers)
    if config.metrics.enabled:
        m = config.metrics
        part = with_registry(labels_part(loop), config.retrain.registry)
        serve([part], m.host, m.labels_port, sock=reserved.take("labels_port"))
    with stop_after_round(loop):
        try:
            loop.run(args.duration)
        finally:
            loop.store.close()
    return EXIT_OK


def with_registry(part: Part, root: str | Path, keep: int = RECENT_VERSIONS) -> Part:
    """``part`` whose status carries ``registry``: ``{path, current, versions}``, the newest ``keep`` versions
    first, each ``{version, status, created_at, parent, candidate_macro_f1, current_macro_f1, holdout}``
    (``status``: the gate's ``promoted`` or ``rejected``, or ``unreadable`` with an ``error``); None while the
    directory does not exist. Read by the endpoint's history thread every few seconds, never by the loop nor
    at request time; a version's manifest is read once (versions are immutable)."""
    registry = ModelRegistry(root)
    manifests: dict[str, dict[str, Any]] = {}
    seen: dict[str, Any] = {"registry": None}

    def sample(now: float) -> None:
        if part.sample is not None:
            part.sample(now)
        if not registry.root.is_dir():
            seen["registry"] = None
            return
        newest = registry.versions()[::-1][:keep]
        for version in newest:
            if version not in manifests:
                manifests[version] = _gate(registry, version)
        current = registry.current()
        seen["registry"] = {
            "path": str(root),
            "current": current,
            "versions": [{**manifests[v], "current": v == current} for v in newest],
        }

    def status() -> dict[str, Any]:
        return {**part.status(), "registry": seen["registry"]}

    return dataclasses.replace(part, status=status, sample=sample)


def _gate(registry: ModelRegistry, version: str) -> dict[str, Any]:
    """A version's gate outcome and the numbers it was decided on."""
    try:
        manifest = registry.manifest(version)
    except SelectorError as exc:
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
