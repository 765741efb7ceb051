"""``selector calibrate``: fit the temperature that calibrates labeled predictions."""

from __future__ import annotations

import argparse
import sys

from connectors.settings.startup import Reserved
from selector.config import Config

HELP = "fit the temperature that calibrates labeled predictions"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input", metavar="FILE", required=True, help="JSON-lines predictions with 'label' ('-': stdin)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a report")


def handle(args: argparse.Namespace, config: Config, reserved: Reserved) -> int:
    del reserved
    from connectors.offline.calibrate import run_calibrate  # noqa: PLC0415 (calibrate-only module)

    return run_calibrate(config, args.input, sys.stdout, as_json=args.json, err=sys.stderr)
