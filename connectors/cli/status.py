"""``selector status``: labels, estimated model quality and agreement from the dataset store."""

from __future__ import annotations

import argparse
import json

from connectors.cli.base import EXIT_ERROR, EXIT_OK, existing_store
from connectors.settings.startup import Reserved
from selector.config import Config

HELP = "labels, estimated model quality and agreement from the dataset store"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a report")


def handle(args: argparse.Namespace, config: Config, reserved: Reserved) -> int:
    del reserved
    from connectors.labels.report import render  # noqa: PLC0415 (status-only modules)
    from connectors.labels.status import label_status  # noqa: PLC0415

    with existing_store(config) as store:
        if store is None:
            return EXIT_ERROR
        status = label_status(store, config)
    print(json.dumps(status.as_dict(), indent=2) if args.json else render(status))
    return EXIT_OK
