"""``selector retrain``: train a candidate on the dataset store; promote it if it beats the current model."""

from __future__ import annotations

import argparse
import json

from connectors.cli.base import EXIT_ERROR, EXIT_OK, existing_store
from connectors.kafka.broker import EMBEDDED
from connectors.settings.startup import Reserved
from selector.config import Config

HELP = "train a candidate on the dataset store; promote it if it beats the current model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the models event as JSON")


def handle(args: argparse.Namespace, config: Config, reserved: Reserved) -> int:
    del reserved
    from connectors.labels.retraining import retrain_and_announce  # noqa: PLC0415 (imports torch)

    with existing_store(config) as store:
        if store is None:
            return EXIT_ERROR
    embedded = config.kafka.bootstrap_servers == EMBEDDED
    event = retrain_and_announce(config, None if embedded else config.kafka.bootstrap_servers)
    if args.json:
        print(json.dumps(event, indent=2))
        return EXIT_OK
    print(
        f"selector retrain: {event['version']} {event['type']} ({event['reason']}); registry "
        f"{config.retrain.registry}{'' if embedded else f', announced on {config.topics.models!r}'}"
    )
    print(json.dumps(event["metrics"], indent=2))
    return EXIT_OK
