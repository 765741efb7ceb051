"""``selector schema``: the JSON Schemas of every message contract."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from connectors.cli.base import EXIT_OK
from selector.messages.contracts import json_schemas

HELP = "print the JSON Schemas of the message contracts"
NEEDS_CONFIG = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--write", metavar="DIR", help="write one <name>.schema.json per contract into DIR")


def handle(args: argparse.Namespace, config: object, reserved: object) -> int:
    del config, reserved
    schemas = json_schemas()
    if args.write is None:
        print(json.dumps(schemas, indent=2))
        return EXIT_OK
    out = Path(args.write)
    out.mkdir(parents=True, exist_ok=True)
    for name, schema in schemas.items():
        (out / f"{name}.schema.json").write_text(json.dumps(schema, indent=2) + "\n", encoding="utf-8")
    return EXIT_OK
