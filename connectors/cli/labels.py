"""``selector labels``: the label loop (decisions and labels into the dataset store, retrain triggers)."""

from __future__ import annotations

import argparse

from connectors.cli.base import EXIT_CONFIG, EXIT_OK, add_duration, needs_cluster, stop_after_round
from connectors.model.registry import ModelRegistry
from connectors.settings.startup import Reserved
from connectors.web.metrics import serve
from connectors.web.versions import with_registry
from selector.config import Config

HELP = "ingest decisions and labels into the dataset store (one per deployment)"


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
        part = with_registry(labels_part(loop), ModelRegistry(config.retrain.registry))
        serve([part], m.host, m.labels_port, sock=reserved.take("labels_port"))
    with stop_after_round(loop):
        try:
            loop.run(args.duration)
        finally:
            loop.store.close()
    return EXIT_OK
