"""``selector retrain``: train a candidate on the dataset store; the promotion gate decides whether it
replaces the current model (paired on held-out human labels, with intervals:
:mod:`selector.quality.evaluation`).

Before any model is promoted, a store that holds seed examples and no human label has nothing to judge a
candidate against: the first model is trained on the seeds and promoted as it is
(:mod:`connectors.model.first_model`)."""

from __future__ import annotations

import argparse
import json
import time

from connectors.cli.base import EXIT_ERROR, EXIT_OK, existing_store
from connectors.kafka.broker import EMBEDDED
from connectors.settings.startup import Reserved
from selector.config import Config

HELP = "train a candidate on the dataset store; promote it only if it is surely better than the current one"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the models event as JSON")


def handle(args: argparse.Namespace, config: Config, reserved: Reserved) -> int:
    del reserved
    from connectors.labels.retraining import announce, retrain_and_announce  # noqa: PLC0415 (torch)
    from connectors.model.first_model import train_first_model  # noqa: PLC0415

    with existing_store(config) as store:
        if store is None:
            return EXIT_ERROR
    embedded = config.kafka.bootstrap_servers == EMBEDDED
    servers = None if embedded else config.kafka.bootstrap_servers
    first = train_first_model(config, time.time())
    if first is None:  # what it always did: a candidate, judged by the promotion gate
        event = retrain_and_announce(config, servers)
        said = event["reason"]  # e.g. "rejected v4: macro-F1 +0.012 [-0.031, +0.055] vs v3 on ..."
    else:
        event, said = first.event, first.summary()
        announce(config, servers, event)
    if args.json:
        print(json.dumps(event, indent=2))
        return EXIT_OK
    print(
        f"selector retrain: {said}; registry "
        f"{config.retrain.registry}{'' if embedded else f', announced on {config.topics.models!r}'}"
    )
    print(json.dumps(event["metrics"], indent=2))
    return EXIT_OK
