"""The ``selector`` command line: one entry point, a literal map of commands, the exit codes.

Commands: ``run`` (the monitor), ``demo``, ``check-config``, ``replay``, ``calibrate``, ``labels`` (the label
loop), ``serve-model``, ``retrain``, ``label-studio``, ``status``, ``dataset export``, ``dead-letters list``
and ``redrive``, ``schema``. Each lives in its own module of this package with its options and handler
(see :mod:`connectors.cli.base`).

Exit codes: 0 success (including a drained stop on SIGTERM/SIGINT), 2 invalid configuration or usage,
3 Kafka unreachable past ``kafka.connect_deadline_s`` at start-up, 4 Kafka unreachable (or outputs
undeliverable) past ``kafka.outage_deadline_s`` while running, 1 anything else.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import selector
from connectors.cli import (
    calibrate,
    check_config,
    dataset,
    dead_letters,
    demo,
    label_studio,
    labels,
    replay,
    retrain,
    run,
    schema,
    serve_model,
    status,
)
from connectors.cli.base import (
    EXIT_BROKER,
    EXIT_CONFIG,
    EXIT_DELIVERY,
    EXIT_ERROR,
    EXIT_OK,
    LONG_RUNNING,
    StoppedWhileStarting,
    log,
    stop_while_starting,
)
from connectors.kafka.outage import quiet_kafka_logs
from connectors.settings.configfile import load_config
from connectors.settings.startup import Reserved, StartupError, preflight
from selector.errors import (
    BrokerUnavailableError,
    ConfigError,
    DeliveryError,
    KafkaOutageError,
    SelectorError,
)

__all__ = ["COMMANDS", "EXIT_BROKER", "EXIT_CONFIG", "EXIT_DELIVERY", "EXIT_ERROR", "EXIT_OK", "main"]

COMMANDS: dict[str, ModuleType] = {
    "run": run,
    "demo": demo,
    "check-config": check_config,
    "replay": replay,
    "calibrate": calibrate,
    "labels": labels,
    "serve-model": serve_model,
    "retrain": retrain,
    "label-studio": label_studio,
    "status": status,
    "dataset": dataset,
    "dead-letters": dead_letters,
    "schema": schema,
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="selector", description="Streaming selective-sampling monitor for production ML."
    )
    p.add_argument("--version", action="version", version=f"selector {selector.__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        sp = sub.add_parser(name, help=command.HELP)
        takes_common = command.add_arguments(sp) or [sp]
        if getattr(command, "NEEDS_CONFIG", True):
            for target in takes_common:
                target.add_argument(
                    "-c", "--config", default="config.yaml", help="configuration file (default: config.yaml)"
                )
                target.add_argument(
                    "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
                )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = COMMANDS[args.command]
    if not getattr(command, "NEEDS_CONFIG", True):
        return int(command.handle(args, None, None))
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    quiet_kafka_logs()  # kafka-python narrates every connection at INFO, and an outage many times a second
    path = Path(args.config)
    try:
        config = load_config(path if path.exists() or args.config != "config.yaml" else None)
    except ConfigError as exc:
        print(f"selector: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:  # before any heavy work: a taken port or an unwritable path is one line and exit 2, at once
        reserved = preflight(config, args.command) if getattr(command, "PREFLIGHT", True) else Reserved()
    except StartupError as exc:
        print(f"selector: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command in LONG_RUNNING:
        # what start-up imported lives as long as the process: the collector need not scan it again at every
        # full collection (decode + decide + encode of probability records 1.0-1.2x: docs/performance.md)
        gc.freeze()
    starting = stop_while_starting() if args.command in LONG_RUNNING else contextlib.nullcontext()
    try:
        with starting:
            return int(command.handle(args, config, reserved))
    except StoppedWhileStarting as exc:
        log.info("received %s while starting: stopped before reading anything", exc)
        return EXIT_OK
    except BrokerUnavailableError as exc:
        log.error("%s", exc)
        protocol = config.kafka.security_protocol
        if protocol != "PLAINTEXT":  # the clients report a refused login or certificate as no connection
            sasl, tls = protocol.startswith("SASL"), protocol.endswith("SSL")
            causes = ["a refused login"] * sasl + ["an untrusted broker certificate"] * tls
            keys = [
                "'kafka.sasl_mechanism'",
                "'kafka.sasl_plain_username'",
                "'kafka.sasl_plain_password'",
            ] * sasl
            log.error(
                "with 'kafka.security_protocol' %s, %s also looks like this: check %s",
                protocol,
                " or ".join(causes),
                ", ".join(keys + ["'kafka.ssl_cafile'"] * tls),
            )
        return EXIT_BROKER
    except (DeliveryError, KafkaOutageError) as exc:
        log.error("%s", exc)
        return EXIT_DELIVERY
    except SelectorError as exc:
        log.error("%s", exc)
        return EXIT_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
