"""``selector run``: the monitor."""

from __future__ import annotations

import argparse
from pathlib import Path

from connectors.cli.base import EXIT_OK, add_duration, bootstrap, stop_on_signals
from connectors.monitor.loop import Monitor
from connectors.monitor.metrics import monitor_part
from connectors.settings.startup import Reserved
from connectors.web.metrics import serve
from selector.config import Config

HELP = "run the monitor"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_duration(parser)


def handle(args: argparse.Namespace, config: Config, reserved: Reserved) -> int:
    path = Path(args.config)
    watched = path if path.exists() else None  # hot reload follows the file it was read from
    with bootstrap(config) as (servers, effective):
        monitor = Monitor(effective, servers, config_path=watched)
        if effective.metrics.enabled:
            m = effective.metrics
            part = monitor_part(monitor)
            serve([part], m.host, m.port, sock=reserved.take("port"), labels_url=m.labels_url)
        with stop_on_signals(monitor):
            monitor.run(args.duration)
    return EXIT_OK
