"""``selector check-config``: validate the configuration and print it, secrets masked."""

from __future__ import annotations

import argparse
import sys

import yaml

from connectors.cli.base import EXIT_CONFIG, EXIT_OK
from connectors.settings.startup import Reserved, StartupError, compression_library
from selector.config import Config

HELP = "validate the configuration and print it, secrets masked"
PREFLIGHT = False
"""it checks the configuration; it binds no port and writes no file"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # the common -c and --log-level only


def handle(args: argparse.Namespace, config: Config, reserved: Reserved) -> int:
    del args, reserved
    try:
        compression_library(config)
    except StartupError as exc:
        print(f"selector: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"# effective configuration (hash {config.config_hash()}); secrets masked")
    print(yaml.safe_dump(config.masked(), sort_keys=False), end="")
    return EXIT_OK
