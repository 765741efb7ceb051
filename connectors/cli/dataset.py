"""``selector dataset``: ``export`` writes the labeled examples of the dataset store as JSON lines or Parquet;
``import`` stores a labeled set the team already has as seed examples (:mod:`connectors.model.seeds`)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from connectors.cli.base import EXIT_CONFIG, EXIT_ERROR, EXIT_OK, existing_store, log
from connectors.settings.startup import Reserved, StartupError, writable_file
from selector.config import Config

HELP = "the labeled examples of the dataset store: export them, or import a labeled set as seeds"


def add_arguments(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The ``export`` and ``import`` subcommands; they are what take the common options."""
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
    seed = sub.add_parser(
        "import",
        help="store a labeled set (label, embedding; optional id, annotator, ts) as seed examples",
    )
    seed.add_argument("file", metavar="FILE", help="JSON lines or Parquet, one labeled item per row")
    seed.add_argument(
        "--format",
        choices=["jsonl", "parquet"],
        default=None,
        help="file format (default: parquet for a .parquet file, else JSON lines)",
    )
    seed.add_argument(
        "--weight", type=float, default=1.0, help="training weight of each seed example (default: 1)"
    )
    seed.add_argument("--dry-run", action="store_true", help="check the file and say what would be stored")
    return [export, seed]


def handle(args: argparse.Namespace, config: Config, reserved: Reserved) -> int:
    del reserved
    if args.dataset_command == "import":
        return _import(args, config)
    fmt = args.format or ("parquet" if args.output.endswith(".parquet") else "jsonl")
    with existing_store(config) as store:
        if store is None:
            return EXIT_ERROR
        from connectors.labels.revote import label_consensus  # noqa: PLC0415 (export only)

        write = store.export_parquet if fmt == "parquet" else store.export_jsonl
        d = config.dataset
        pseudo = d.pseudo_label_weight if d.pseudo_label_share > 0 else None
        quorum = args.quorum or d.quorum
        agreed = label_consensus(config, store.book(), quorum)
        written = write(args.output, quorum, pseudo, agreed.items if agreed is not None else None)
    sources = ", ".join(f"{n:,} {source}" for source, n in sorted(written.items()))
    print(
        f"selector dataset export: {written.total():,} labeled examples written to {args.output}"
        + (f" ({sources})" if sources else "")
    )
    return EXIT_OK


def _import(args: argparse.Namespace, config: Config) -> int:
    """Check the whole file, then store its rows as seed examples in one transaction (exit 2 on a bad
    file or option, nothing stored)."""
    from connectors.model.dataset import DatasetStore  # noqa: PLC0415 (serve-model and run need no store)
    from connectors.model.seeds import SeedFileError, SeedImport, import_seeds  # noqa: PLC0415

    path = config.dataset.path
    exists = Path(path).exists()

    def run(store: DatasetStore | None, dry_run: bool) -> SeedImport:
        return import_seeds(
            store,
            args.file,
            config.classes,
            config.input.embedding_dim,
            weight=args.weight,
            fmt=args.format,
            dry_run=dry_run,
            now=time.time(),
        )

    try:
        if not exists:  # a new deployment starts here: check the file before the store is created
            done = run(None, True)
            if not args.dry_run:
                writable_file(path, "dataset.path")
        if exists or not args.dry_run:
            store = DatasetStore(path)
            try:
                done = run(store, args.dry_run)
            finally:
                store.close()
    except (SeedFileError, StartupError) as exc:
        log.error("selector dataset import: %s", exc)
        return EXIT_CONFIG
    print(f"selector dataset import{' --dry-run' if args.dry_run else ''}: {done.summary()}")
    return EXIT_OK
