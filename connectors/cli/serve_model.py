"""``selector serve-model``: the inference connector (features to predictions with the registry's model)."""

from __future__ import annotations

import argparse

from connectors.cli.base import EXIT_CONFIG, EXIT_OK, add_duration, needs_cluster, stop_after_round
from connectors.settings.startup import Reserved
from connectors.web.metrics import serve
from selector.config import Config

HELP = "score the features topic with the registry's model (ONNX)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_duration(parser)


def handle(args: argparse.Namespace, config: Config, reserved: Reserved) -> int:
    if not needs_cluster(config, "serve-model"):
        reserved.close()
        return EXIT_CONFIG
    from connectors.model.serving import ModelServer, serve_part  # noqa: PLC0415 (needs onnxruntime)

    server = ModelServer(config, config.kafka.bootstrap_servers)
    if config.metrics.enabled:
        m = config.metrics
        serve([serve_part(server)], m.host, m.serve_port, dashboard=False, sock=reserved.take("serve_port"))
    with stop_after_round(server):
        server.run(args.duration)
    return EXIT_OK
