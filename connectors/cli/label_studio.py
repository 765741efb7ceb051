"""``selector label-studio``: the bridge from the to-label topic to a Label Studio project and back."""

from __future__ import annotations

import argparse

from connectors.cli.base import EXIT_CONFIG, EXIT_OK, add_duration, needs_cluster, stop_after_round
from connectors.settings.startup import Reserved
from selector.config import Config

HELP = "bridge the to-label topic to a Label Studio project and back"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_duration(parser)


def handle(args: argparse.Namespace, config: Config, reserved: Reserved) -> int:
    del reserved
    if not needs_cluster(config, "label-studio"):
        return EXIT_CONFIG
    from connectors.label_studio.bridge import LabelStudioBridge  # noqa: PLC0415 (bridge-only module)

    bridge = LabelStudioBridge(config, config.kafka.bootstrap_servers)
    with stop_after_round(bridge):
        bridge.run(args.duration)
    return EXIT_OK
