"""``selector retrain``: train a candidate on the dataset store; promote it if it beats the current model.

Before any model is promoted, a store that holds seed examples and no human label has nothing to judge a
candidate against: the first model is trained on the seeds and promoted as it is
(:mod:`connectors.model.first_model`)."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

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
    from connectors.model.first_model import train_first_model  # noqa: PLC0415

    with existing_store(config) as store:
        if store is None:
            return EXIT_ERROR
    embedded = config.kafka.bootstrap_servers == EMBEDDED
    servers = None if embedded else config.kafka.bootstrap_servers
    first = train_first_model(config, time.time())
    if first is None:  # what it always did: a candidate, judged by the promotion gate
        event = retrain_and_announce(config, servers)
        said = f"{event['version']} {event['type']} ({event['reason']})"
    else:
        event, said = first.event, first.summary()
        if servers is not None:
            _announce(config, servers, event)
    if args.json:
        print(json.dumps(event, indent=2))
        return EXIT_OK
    print(
        f"selector retrain: {said}; registry "
        f"{config.retrain.registry}{'' if embedded else f', announced on {config.topics.models!r}'}"
    )
    print(json.dumps(event["metrics"], indent=2))
    return EXIT_OK


def _announce(config: Config, servers: str, event: dict[str, Any]) -> None:
    """The first model's event on the models topic, as the trainer announces a promotion."""
    from connectors.kafka.clients import make_producer  # noqa: PLC0415
    from connectors.labels.retraining import publish  # noqa: PLC0415

    producer = make_producer(config, servers)
    try:
        publish(producer, config, config.topics.models, event["version"], event)
    finally:
        producer.close(timeout=5)
