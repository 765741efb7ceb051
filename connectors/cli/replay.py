"""``selector replay``: what-if on recorded predictions with this configuration."""

from __future__ import annotations

import argparse

from connectors.settings.startup import Reserved
from selector.config import Config

HELP = "what-if: decide recorded predictions with this configuration, or compare two replays"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", metavar="FILE", help="JSON-lines predictions, one per line ('-': stdin)")
    source.add_argument("--topic", help="read this topic of kafka.bootstrap_servers from the beginning")
    source.add_argument(
        "--compare",
        nargs=2,
        metavar=("A.json", "B.json"),
        help="print two replay summaries' key figures side by side with B - A (rates, spend, accept "
        "precision, defect capture, reserved shares binding or not, the configuration keys that differ); "
        "replays nothing, refuses summaries of different inputs",
    )
    parser.add_argument("--output", metavar="FILE", help="write one JSON line per decided record")
    parser.add_argument(
        "--report",
        metavar="FILE",
        help="write a self-contained HTML report (with --compare: the comparison as an HTML page)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        metavar="ITEMS_PER_S",
        help="decide file records without 'ts' at this steady rate (default: they are invalid)",
    )


def handle(args: argparse.Namespace, config: Config, reserved: Reserved) -> int:
    del reserved
    from connectors.offline.replay import run_compare, run_replay  # noqa: PLC0415 (replay-only module)

    if args.compare is not None:
        return run_compare(tuple(args.compare), report=args.report, output=args.output, rate_per_s=args.rate)
    return run_replay(
        config,
        input_path=args.input,
        topic=args.topic,
        output=args.output,
        report=args.report,
        rate_per_s=args.rate,
    )
