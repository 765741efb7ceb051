"""``selector demo``: the whole loop on the embedded broker with a simulated line and annotators."""

from __future__ import annotations

import argparse

from connectors.cli.base import EXIT_CONFIG, EXIT_OK, add_duration, bootstrap, log, stop_on_signals
from connectors.settings.startup import Reserved
from selector.config import Config

HELP = "the whole loop on the embedded broker: digits, model, monitor, annotators, retraining"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_duration(parser, " (default: Ctrl-C)")
    parser.add_argument(
        "--rate", type=float, default=500.0, help="items per second on the simulated line (default: 500)"
    )
    parser.add_argument(
        "--interval", type=float, default=2.0, help="seconds between summary lines (default: 2)"
    )
    parser.add_argument(
        "--label-delay",
        type=float,
        default=3.0,
        help="mean seconds a simulated annotator takes to answer (default: 3)",
    )
    parser.add_argument(
        "--annotator-error",
        type=float,
        default=0.05,
        help="share of simulated answers that are wrong (default: 0.05)",
    )


def handle(args: argparse.Namespace, config: Config, reserved: Reserved) -> int:
    if not 0.0 <= args.annotator_error <= 1.0 or args.label_delay < 0:
        reserved.close()
        log.error("--annotator-error must lie in [0, 1] and --label-delay be >= 0")
        return EXIT_CONFIG
    from connectors.demo.run import create_demo  # noqa: PLC0415 (demo-only: scikit-learn, torch, onnxruntime)

    with bootstrap(config) as (servers, effective):
        demo = create_demo(effective, servers, args.rate, args.label_delay, args.annotator_error)
        demo.start_metrics(reserved)
        print(demo.intro(), flush=True)
        with stop_on_signals(demo.monitor):
            demo.run(args.duration, args.interval)
    return EXIT_OK
