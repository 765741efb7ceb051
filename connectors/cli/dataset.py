"""``selector dataset export``: the labeled examples of the dataset store, as JSON lines or Parquet."""

from __future__ import annotations

import argparse

from connectors.cli.base import EXIT_ERROR, EXIT_OK, existing_store
from connectors.settings.startup import Reserved
from selector.config import Config

HELP = "the labeled examples of the dataset store"


def add_arguments(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The ``export`` subcommand; it is what takes the common options."""
    sub = parser.add_subparsers(dest="dataset_command", required=True)
    export = sub.add_parser("export", help="write the labeled examples as JSON lines or Parquet")
    export.add_argument("--output", metavar="FILE", required=True, help="file to write")
    export.add_argument(
        "--format",
        choices=["jsonl", "parquet"],
        default=None,
        help="file format (default: parquet for a .parquet file, else JSON lines)",
    )
    export.add_argument(
        "--quorum", type=int, default=None, help="votes an item needs (default: dataset.quorum)"
    )
    return [export]


def handle(args: argparse.Namespace, config: Config, reserved: Reserved) -> int:
    del reserved
    fmt = args.format or ("parquet" if args.output.endswith(".parquet") else "jsonl")
    with existing_store(config) as store:
        if store is None:
            return EXIT_ERROR
        write = store.export_parquet if fmt == "parquet" else store.export_jsonl
        d = config.dataset
        pseudo = d.pseudo_label_weight if d.pseudo_label_share > 0 else None
        n = write(args.output, args.quorum or d.quorum, pseudo)
    print(f"selector dataset export: {n} labeled examples written to {args.output}")
    return EXIT_OK
