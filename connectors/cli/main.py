"""The ``selector`` command line: run, demo, check-config, schema.

Exit codes: 0 success (including a drained stop on SIGTERM/SIGINT), 2 invalid configuration or usage,
3 Kafka unreachable past ``kafka.connect_deadline_s`` at start-up, 4 Kafka unreachable (or outputs
undeliverable) past ``kafka.outage_deadline_s`` while running, 1 anything else.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Protocol

import yaml

import selector
from connectors.kafka.broker import EMBEDDED, EmbeddedBroker
from connectors.kafka.outage import quiet_kafka_logs
from connectors.labels.metrics import labels_part
from connectors.model.dataset import DatasetStore
from connectors.monitor.loop import Monitor
from connectors.monitor.metrics import monitor_part
from connectors.settings.configfile import load_config
from connectors.settings.startup import Reserved, StartupError, compression_library, preflight
from connectors.web.metrics import serve
from selector.config import Config
from selector.errors import (
    BrokerUnavailableError,
    ConfigError,
    DeliveryError,
    KafkaOutageError,
    SelectorError,
)
from selector.messages.contracts import json_schemas

log = logging.getLogger("selector")

EXIT_OK, EXIT_ERROR, EXIT_CONFIG, EXIT_BROKER, EXIT_DELIVERY = 0, 1, 2, 3, 4


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="selector", description="Streaming selective-sampling monitor for production ML."
    )
    p.add_argument("--version", action="version", version=f"selector {selector.__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument(
            "-c", "--config", default="config.yaml", help="configuration file (default: config.yaml)"
        )
        sp.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
        return sp

    run = with_config(sub.add_parser("run", help="run the monitor"))
    run.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    demo = with_config(
        sub.add_parser(
            "demo",
            help="the whole loop on the embedded broker: digits, model, monitor, annotators, retraining",
        )
    )
    demo.add_argument(
        "--duration", type=float, default=None, help="stop after this many seconds (default: Ctrl-C)"
    )
    demo.add_argument(
        "--rate", type=float, default=500.0, help="items per second on the simulated line (default: 500)"
    )
    demo.add_argument(
        "--interval", type=float, default=2.0, help="seconds between summary lines (default: 2)"
    )
    demo.add_argument(
        "--label-delay",
        type=float,
        default=3.0,
        help="mean seconds a simulated annotator takes to answer (default: 3)",
    )
    demo.add_argument(
        "--annotator-error",
        type=float,
        default=0.05,
        help="share of simulated answers that are wrong (default: 0.05)",
    )
    with_config(
        sub.add_parser("check-config", help="validate the configuration and print it, secrets masked")
    )
    replay = with_config(
        sub.add_parser("replay", help="what-if: decide recorded predictions with this configuration")
    )
    source = replay.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", metavar="FILE", help="JSON-lines predictions, one per line ('-': stdin)")
    source.add_argument("--topic", help="read this topic of kafka.bootstrap_servers from the beginning")
    replay.add_argument("--output", metavar="FILE", help="write one JSON line per decided record")
    replay.add_argument("--report", metavar="FILE", help="write a self-contained HTML report")
    replay.add_argument(
        "--rate",
        type=float,
        default=None,
        metavar="ITEMS_PER_S",
        help="decide file records without 'ts' at this steady rate (default: they are invalid)",
    )
    calibrate = with_config(
        sub.add_parser("calibrate", help="fit the temperature that calibrates labeled predictions")
    )
    calibrate.add_argument(
        "--input", metavar="FILE", required=True, help="JSON-lines predictions with 'label' ('-': stdin)"
    )
    calibrate.add_argument("--json", action="store_true", help="print one JSON object instead of a report")
    labels = with_config(
        sub.add_parser(
            "labels", help="ingest decisions and labels into the dataset store (one per deployment)"
        )
    )
    labels.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    serve = with_config(
        sub.add_parser("serve-model", help="score the features topic with the registry's model (ONNX)")
    )
    serve.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    retrain = with_config(
        sub.add_parser(
            "retrain", help="train a candidate on the dataset store; promote it if it beats the current model"
        )
    )
    retrain.add_argument("--json", action="store_true", help="print the models event as JSON")
    studio = with_config(
        sub.add_parser("label-studio", help="bridge the to-label topic to a Label Studio project and back")
    )
    studio.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    status = with_config(
        sub.add_parser("status", help="labels, estimated model quality and agreement from the dataset store")
    )
    status.add_argument("--json", action="store_true", help="print one JSON object instead of a report")
    dataset = sub.add_parser("dataset", help="the labeled examples of the dataset store")
    dataset_sub = dataset.add_subparsers(dest="dataset_command", required=True)
    export = with_config(
        dataset_sub.add_parser("export", help="write the labeled examples as JSON lines or Parquet")
    )
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
    schema = sub.add_parser("schema", help="print the JSON Schemas of the message contracts")
    schema.add_argument("--write", metavar="DIR", help="write one <name>.schema.json per contract into DIR")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "schema":
        return _schema(args.write)
    logging.basicConfig(
        level=getattr(args, "log_level", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    quiet_kafka_logs()  # kafka-python narrates every connection at INFO, and an outage many times a second
    path = Path(args.config)
    try:
        config = load_config(path if path.exists() or args.config != "config.yaml" else None)
    except ConfigError as exc:
        print(f"selector: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check-config":
        try:
            compression_library(config)
        except StartupError as exc:
            print(f"selector: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        print(f"# effective configuration (hash {config.config_hash()}); secrets masked")
        print(yaml.safe_dump(config.masked(), sort_keys=False), end="")
        return EXIT_OK
    try:  # before any heavy work: a taken port or an unwritable path is one line and exit 2, at once
        reserved = preflight(config, args.command)
    except StartupError as exc:
        print(f"selector: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        if args.command == "replay":
            from connectors.offline.replay import run_replay  # noqa: PLC0415 (replay-only module)

            return run_replay(
                config,
                input_path=args.input,
                topic=args.topic,
                output=args.output,
                report=args.report,
                rate_per_s=args.rate,
            )
        if args.command == "calibrate":
            from connectors.offline.calibrate import run_calibrate  # noqa: PLC0415 (calibrate-only module)

            return run_calibrate(config, args.input, sys.stdout, as_json=args.json, err=sys.stderr)
        if args.command == "labels":
            return _labels(config, args.duration, reserved)
        if args.command == "serve-model":
            return _serve_model(config, args.duration, reserved)
        if args.command == "label-studio":
            return _label_studio(config, args.duration)
        if args.command == "dataset":
            fmt = args.format or ("parquet" if args.output.endswith(".parquet") else "jsonl")
            return _export(config, args.output, args.quorum, fmt)
        if args.command == "retrain":
            return _retrain(config, as_json=args.json)
        if args.command == "status":
            return _status(config, as_json=args.json)
        watched = path if path.exists() else None
        if args.command == "run":
            return _run(config, args.duration, watched, reserved)
        return _demo(
            config, args.duration, args.rate, args.interval, args.label_delay, args.annotator_error, reserved
        )
    except BrokerUnavailableError as exc:
        log.error("%s", exc)
        return EXIT_BROKER
    except (DeliveryError, KafkaOutageError) as exc:
        log.error("%s", exc)
        return EXIT_DELIVERY
    except SelectorError as exc:
        log.error("%s", exc)
        return EXIT_ERROR


def _schema(write: str | None) -> int:
    schemas = json_schemas()
    if write is None:
        print(json.dumps(schemas, indent=2))
        return EXIT_OK
    out = Path(write)
    out.mkdir(parents=True, exist_ok=True)
    for name, schema in schemas.items():
        (out / f"{name}.schema.json").write_text(json.dumps(schema, indent=2) + "\n", encoding="utf-8")
    return EXIT_OK


EMBEDDED_GROUP_TIMEOUTS = {
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
    "max_poll_interval_ms": 10000,
}
"""One local process on the in-memory broker: short group timeouts make joins take ~3 s, not ~23 s."""


@contextlib.contextmanager
def _bootstrap(config: Config) -> Iterator[tuple[str, Config]]:
    """The bootstrap servers and configuration to use, starting the embedded broker for ``embedded``."""
    if config.kafka.bootstrap_servers != EMBEDDED:
        yield config.kafka.bootstrap_servers, config
        return
    local = config.model_copy(update={"kafka": config.kafka.model_copy(update=EMBEDDED_GROUP_TIMEOUTS)})
    with EmbeddedBroker() as broker:
        log.info(
            "embedded broker: produce predictions to %s, topic %r",
            broker.bootstrap_servers,
            config.topics.predictions,
        )
        yield broker.bootstrap_servers, local


@contextlib.contextmanager
def _stop_on_signals(monitor: Monitor) -> Iterator[None]:
    """SIGTERM and SIGINT ask the monitor to drain and commit (a second one exits at once); SIGHUP reloads."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        if monitor.stopping:
            raise SystemExit(128 + signum)
        log.info("received %s: draining and committing", signal.Signals(signum).name)
        monitor.request_stop()

    def reload(_signum: int, _frame: FrameType | None) -> None:
        monitor.request_reload()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, reload)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def _existing_store(config: Config) -> Iterator[DatasetStore | None]:
    """The dataset store, or None (logged) when ``selector labels`` never created it."""
    if not Path(config.dataset.path).exists():
        log.error("no dataset store at %s (dataset.path): run 'selector labels' first", config.dataset.path)
        yield None
        return
    store = DatasetStore(config.dataset.path)
    try:
        yield store
    finally:
        store.close()


def _export(config: Config, output: str, quorum: int | None, fmt: str) -> int:
    with _existing_store(config) as store:
        if store is None:
            return EXIT_ERROR
        write = store.export_parquet if fmt == "parquet" else store.export_jsonl
        d = config.dataset
        n = write(output, quorum or d.quorum, d.pseudo_label_weight if d.pseudo_label_share > 0 else None)
    print(f"selector dataset export: {n} labeled examples written to {output}")
    return EXIT_OK


def _retrain(config: Config, *, as_json: bool) -> int:
    from connectors.labels.retraining import retrain_and_announce  # noqa: PLC0415 (imports torch)

    with _existing_store(config) as store:
        if store is None:
            return EXIT_ERROR
    embedded = config.kafka.bootstrap_servers == EMBEDDED
    event = retrain_and_announce(config, None if embedded else config.kafka.bootstrap_servers)
    if as_json:
        print(json.dumps(event, indent=2))
        return EXIT_OK
    m = event["metrics"]
    print(
        f"selector retrain: {event['version']} {event['type']} ({event['reason']}); registry "
        f"{config.retrain.registry}{'' if embedded else f', announced on {config.topics.models!r}'}"
    )
    print(json.dumps(m, indent=2))
    return EXIT_OK


def _status(config: Config, *, as_json: bool) -> int:
    from connectors.labels.status import label_status, render  # noqa: PLC0415 (status-only module)

    with _existing_store(config) as store:
        if store is None:
            return EXIT_ERROR
        status = label_status(store, config)
    print(json.dumps(status.as_dict(), indent=2) if as_json else render(status))
    return EXIT_OK


def _needs_cluster(config: Config, command: str) -> bool:
    if config.kafka.bootstrap_servers != EMBEDDED:
        return True
    log.error(
        "selector %s works with the topics of a running cluster: set kafka.bootstrap_servers "
        "(an embedded broker lives and dies inside one 'selector run' or 'selector demo')",
        command,
    )
    return False


class _Stoppable(Protocol):
    def request_stop(self) -> None: ...


@contextlib.contextmanager
def _stop_after_round(loop: _Stoppable) -> Iterator[None]:
    """SIGTERM and SIGINT ask a loop to stop once the round in hand is done."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: stopping after this round", signal.Signals(signum).name)
        loop.request_stop()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _labels(config: Config, duration: float | None, reserved: Reserved) -> int:
    if not _needs_cluster(config, "labels"):
        reserved.close()
        return EXIT_CONFIG
    from connectors.labels.loop import LabelLoop  # noqa: PLC0415 (labels-only module)

    loop = LabelLoop(config, config.kafka.bootstrap_servers)
    if config.metrics.enabled:
        m = config.metrics
        serve([labels_part(loop)], m.host, m.labels_port, dashboard=False, sock=reserved.take("labels_port"))
    with _stop_after_round(loop):
        try:
            loop.run(duration)
        finally:
            loop.store.close()
    return EXIT_OK


def _label_studio(config: Config, duration: float | None) -> int:
    if not _needs_cluster(config, "label-studio"):
        return EXIT_CONFIG
    from connectors.label_studio.bridge import LabelStudioBridge  # noqa: PLC0415 (bridge-only module)

    bridge = LabelStudioBridge(config, config.kafka.bootstrap_servers)
    with _stop_after_round(bridge):
        bridge.run(duration)
    return EXIT_OK


def _serve_model(config: Config, duration: float | None, reserved: Reserved) -> int:
    if not _needs_cluster(config, "serve-model"):
        reserved.close()
        return EXIT_CONFIG
    from connectors.model.serving import ModelServer, serve_part  # noqa: PLC0415 (needs onnxruntime)

    server = ModelServer(config, config.kafka.bootstrap_servers)
    if config.metrics.enabled:
        m = config.metrics
        serve([serve_part(server)], m.host, m.serve_port, dashboard=False, sock=reserved.take("serve_port"))
    with _stop_after_round(server):
        server.run(duration)
    return EXIT_OK


def _start_metrics(monitor: Monitor, config: Config, reserved: Reserved) -> None:
    if config.metrics.enabled:
        serve([monitor_part(monitor)], config.metrics.host, config.metrics.port, sock=reserved.take("port"))


def _run(config: Config, duration: float | None, config_path: Path | None, reserved: Reserved) -> int:
    with _bootstrap(config) as (servers, effective):
        monitor = Monitor(effective, servers, config_path=config_path)
        _start_metrics(monitor, effective, reserved)
        with _stop_on_signals(monitor):
            monitor.run(duration)
    return EXIT_OK


def _demo(
    config: Config,
    duration: float | None,
    rate: float,
    interval: float,
    label_delay: float,
    annotator_error: float,
    reserved: Reserved,
) -> int:
    if not 0.0 <= annotator_error <= 1.0 or label_delay < 0:
        reserved.close()
        log.error("--annotator-error must lie in [0, 1] and --label-delay be >= 0")
        return EXIT_CONFIG
    from connectors.demo.run import create_demo  # noqa: PLC0415 (demo-only: scikit-learn, torch, onnxruntime)

    with _bootstrap(config) as (servers, effective):
        demo = create_demo(effective, servers, rate, label_delay, annotator_error)
        demo.start_metrics(reserved)
        print(demo.intro(), flush=True)
        with _stop_on_signals(demo.monitor):
            demo.run(duration, interval)
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
