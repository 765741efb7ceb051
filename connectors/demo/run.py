"""`selector demo`: the whole loop in one process, on the embedded broker and real data.

Handwritten digits (:mod:`connectors.demo.line`, the digit 8 rare as the "defect") flow as features into the
inference connector, which scores them with the registry's ONNX model; the monitor decides every prediction;
simulated annotators answer the to-label items after a delay, sometimes wrongly; the label loop ingests their
labels, estimates the model's accuracy and triggers retraining; the trainer (its own process) promotes a
better model, and the inference connector swaps to it. A summary line every few seconds shows the routes, the
label rate against the budget, the model version being served and its estimated accuracy.

Everything the demo writes lives in a temporary directory, like the in-memory broker's topics: each demo
starts afresh. It starts as a new deployment would, through the commands' own functions: its seed digits are
imported from ``seed.jsonl`` as ``selector dataset import`` does, its first model is trained as ``selector
retrain`` trains one on seeds alone, and its effective configuration is left in ``config.yaml``, so
``selector status -c <workdir>/config.yaml`` shows its store afterwards.
"""

from __future__ import annotations

import logging
import math
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import yaml

from connectors.demo.line import CLASSES, RARE, Annotators, Digits, FeatureLine
from connectors.kafka.clients import make_consumer, make_producer, prepare_topics
from connectors.labels.loop import LabelLoop
from connectors.labels.metrics import labels_part
from connectors.model.dataset import DatasetStore
from connectors.model.registry import ModelRegistry
from connectors.model.seeds import import_seeds
from connectors.model.serving import ModelServer, serve_part
from connectors.monitor.cap_watch import describe, ledgers_of
from connectors.monitor.loop import Monitor
from connectors.monitor.metrics import monitor_part
from connectors.settings.startup import Reserved
from connectors.web.metrics import serve
from connectors.web.server import Endpoint
from connectors.web.versions import with_registry
from selector.budget.cap_pause import cap_pauses
from selector.config import HORIZONS_S, Config
from selector.errors import SelectorError

log = logging.getLogger(__name__)

SEED_ITEMS = 40
"""Labeled digits the first model is trained on (common digits only): a weak start to improve on."""
SEED_FILE = "seed.jsonl"
"""The seed digits in the work directory, as a team's labeled set would be given to ``selector dataset
import``."""
CONFIG_FILE = "config.yaml"
"""The demo's effective configuration in its work directory: ``selector status -c`` it afterwards."""


ANNOTATORS_KAFKA = {
    "auto_offset_reset": "earliest",
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
    "max_poll_interval_ms": 10000,
}
"""The simulated annotators' consumer settings: every to-label item from the first, and a group that forms
in seconds rather than the configured timeouts' tens of seconds."""

CAP_HEADROOM = 1.5
"""The demo raises every cap below this multiple of what its line's rate spends at the target rate in the
cap's window, so that a cap meant for a real line does not stop the demo's labels after two minutes."""


def caps_for_rate(config: Config, items_per_s: float) -> tuple[dict[str, int], list[str]]:
    """The caps the demo runs at ``items_per_s``: each at least ``CAP_HEADROOM`` times ``rate x budget.rate
    x window``; and one note per cap raised, saying from what to what."""
    caps: dict[str, int] = {}
    notes: list[str] = []
    for horizon, cap in config.budget.caps.items():
        need = math.ceil(CAP_HEADROOM * items_per_s * config.budget.rate * HORIZONS_S[horizon])
        caps[horizon] = max(cap, need)
        if cap < need:
            notes.append(f"budget.caps.{horizon} {cap} -> {need}")
    return caps, notes


def demo_config(config: Config, workdir: Path, items_per_s: float | None = None) -> Config:
    """The configuration the demo runs: the user's, with the digits' classes, embedding length and the
    label loop's files in ``workdir``; class-specific keys of the user's file do not apply to digits. With
    ``items_per_s``, caps too low for that rate are raised (:func:`caps_for_rate`)."""
    r = config.retrain
    data = config.model_dump()
    if items_per_s is not None:
        data["budget"]["caps"] = caps_for_rate(config, items_per_s)[0]
    data["classes"] = CLASSES
    data["input"]["embedding_dim"] = 64
    data["accept"]["thresholds"] = {}
    data["budget"]["class_shares"] = {RARE: 0.2}
    data["budget"]["segment_shares"] = {}
    data["dataset"].update(path=str(workdir / "dataset.sqlite"), defect_classes=[RARE])
    data["retrain"].update(
        builtin=True,
        registry=str(workdir / "models"),
        every_labels=min(r.every_labels or 150, 150),
        min_interval_s=min(r.min_interval_s, 20.0),
        min_examples=40,
        epochs=min(r.epochs, 80),
    )
    return Config.model_validate(data)


def prepare(config: Config, seed: Digits, now: float) -> str:
    """The demo's work directory as a new deployment would start it, through the public path: the
    effective configuration as ``config.yaml`` (secrets masked, as ``selector check-config`` prints it);
    the seed digits as ``seed.jsonl``, imported as ``selector dataset import`` does; the first model trained
    and promoted as ``selector retrain`` does. Returns the promoted version."""
    from connectors.model.first_model import train_first_model  # noqa: PLC0415 (imports torch)

    workdir = Path(config.dataset.path).parent
    workdir.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(config.masked(), sort_keys=False)
    header = "# selector demo: effective configuration; secrets masked\n"
    (workdir / CONFIG_FILE).write_text(header + text, encoding="utf-8")
    rows = [{"label": CLASSES[y], "embedding": x.tolist()} for x, y in zip(seed.x, seed.y, strict=True)]
    (workdir / SEED_FILE).write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    store = DatasetStore(config.dataset.path)
    try:
        import_seeds(store, workdir / SEED_FILE, config.classes, config.input.embedding_dim, now=now)
    finally:
        store.close()
    first = train_first_model(config, now)
    current = ModelRegistry(config.retrain.registry).current()
    if first is None and current is None:
        raise SelectorError(f"the demo's first model was not trained (registry {config.retrain.registry})")
    return first.version if first is not None else str(current)


def inspect_lines(workdir: Path) -> str:
    """How to look at what the demo left behind."""
    config = workdir / CONFIG_FILE
    return (
        f"inspect: selector status -c {config}\n"
        f"inspect: selector dataset export -c {config} --output examples.jsonl"
    )


class Demo:
    """The demo's components, started and stopped together."""

    def __init__(
        self,
        config: Config,
        servers: str,
        rate: float,
        seed: int = 0,
        label_delay: float = 3.0,
        annotator_error: float = 0.05,
    ) -> None:
        self.config = config
        self.workdir = Path(config.dataset.path).parent
        first, pool, _test = Digits.load().split(seed, SEED_ITEMS)
        self.version = prepare(config, first, time.time())
        t = config.topics
        self.producer = make_producer(config, servers)  # the simulated line writes as any producer would
        self.monitor = Monitor(config, servers)
        self.server = ModelServer(config, servers)
        self.loop = LabelLoop(config, servers, DatasetStore(config.dataset.path), status_interval_s=1.0)
        self.line = FeatureLine(self.producer, t.features, pool, rate)
        self.annotators = Annotators(
            annotators_consumer(config, servers),
            self.producer,
            t.labels,
            self.line.truth,
            delay_s=label_delay,
            error_rate=annotator_error,
        )
        self.endpoints: list[Endpoint] = []
        self.notes: list[str] = []
        """what the demo changed in the user's configuration, for the intro"""
        self._threads = [
            threading.Thread(target=self.server.run, name="serve-model", daemon=True),
            threading.Thread(target=self.loop.run, kwargs={"poll_s": 1.0}, name="label-loop", daemon=True),
        ]

    def intro(self) -> str:
        c = self.config
        return (
            f"selector demo: handwritten digits at {self.line.rate_per_s:g} items/s ('{RARE}' is the rare "
            f"defect, about 1%); first model {self.version} trained on {SEED_ITEMS} imported seed labels; "
            f"budget {c.budget.rate:.1%}; simulated annotators (mean delay {self.annotators.delay_s:g} s, "
            f"{self.annotators.error_rate:.0%} wrong); a retrain every {c.retrain.every_labels} labels "
            f"at most every {c.retrain.min_interval_s:g} s; files in {self.workdir}; Ctrl-C stops"
            + (
                f"\ncaps raised to follow the line's rate: {', '.join(self.notes)} (a cap that binds pauses "
                "labeling, and the summary line says until when)"
                if self.notes
                else ""
            )
        )

    def run(self, duration: float | None, interval: float) -> None:
        """Start everything, print a summary every ``interval`` seconds until the monitor stops (after
        ``duration`` or on a signal), then stop everything."""
        done = threading.Event()

        def summaries() -> None:
            while not done.wait(interval):
                print(self.summary(), flush=True)

        printer = threading.Thread(target=summaries, name="summary", daemon=True)
        self.start()
        printer.start()
        try:
            self.monitor.run(duration)
        finally:
            done.set()
            self.stop()
        print(self.summary(), flush=True)
        print(inspect_lines(self.workdir), flush=True)

    def start_metrics(self, reserved: Reserved | None = None) -> None:
        """One dashboard over all three parts on ``metrics.port``; each part's metrics alone on its own port
        (as the three processes of a deployment would serve them). ``reserved``: the ports bound at
        start-up (:func:`connectors.settings.startup.preflight`)."""
        m = self.config.metrics
        if m.enabled:
            take = reserved.take if reserved is not None else lambda _key: None
            registry = ModelRegistry(self.config.retrain.registry)
            parts = [
                monitor_part(self.monitor),
                with_registry(labels_part(self.loop), registry),
                serve_part(self.server),
            ]
            self.endpoints = [
                serve(parts, m.host, m.port, metrics_of=parts[:1], sock=take("port")),
                serve([parts[1]], m.host, m.labels_port, sock=take("labels_port")),
                serve([parts[2]], m.host, m.serve_port, dashboard=False, sock=take("serve_port")),
            ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()
        self.line.start()
        self.annotators.start()

    def stop(self) -> None:
        self.monitor.request_stop()
        self.line.stop_event.set()
        self.annotators.stop_event.set()
        self.server.request_stop()
        self.loop.request_stop()
        for thread in [self.line, self.annotators, *self._threads]:
            thread.join(timeout=30)
        self.producer.close(timeout=5)
        self.loop.store.close()
        for endpoint in self.endpoints:
            endpoint.close()

    def summary(self) -> str:
        return summary_line(self.line.sent, self.monitor, self.server, self.loop, time.time())


def summary_line(sent: int, monitor: Monitor, server: ModelServer, loop: LabelLoop, now: float) -> str:
    """The demo's summary: routes, label rate against the budget, labels, the served model's estimated
    accuracy (prediction-powered: its items' confidence corrected by their labels), retrains; and, when a
    hard cap holds labeling back, which and until when."""
    s = monitor.router.stats
    total = s.total
    labeled = s.items["query"] + s.items["audit"]
    served = server.model.version if server.model else "none"
    st = loop.status
    scope = st.models["since_start"].get(served)
    estimate = "awaiting labels"
    if scope is not None and scope.labels:
        acc = scope.accuracy("prediction_powered")
        estimate = f"{acc.estimate:5.1%} [{acc.low:5.1%}, {acc.high:5.1%}] ({scope.labels} labels)"
    retrains = loop.retrainer.outcomes if loop.retrainer else {}
    caps = "".join(f" | {describe(p)}" for p in cap_pauses(ledgers_of(monitor.router), now))
    return (
        f"items {sent:>7} decided {total:>7} | accept {s.items['accept']:>6} query "
        f"{s.items['query']:>4} audit {s.items['audit']:>3} | label rate {labeled / max(total, 1):6.2%} "
        f"(budget {monitor.config.budget.rate:.2%}) | labels {st.label_messages:>4} | model {served} "
        f"accuracy {estimate} | retrains {retrains.get('promoted', 0)} promoted "
        f"{retrains.get('rejected', 0)} rejected{caps}"
    )


def annotators_consumer(config: Config, servers: str) -> Any:
    """The simulated annotators' consumer of the to-label topic, subscribed, in their own group: of the
    library ``kafka.client`` names, with :data:`ANNOTATORS_KAFKA` over the configured ``kafka.*`` keys."""
    kafka = config.kafka.model_copy(update=ANNOTATORS_KAFKA)
    consumer = make_consumer(
        config.model_copy(update={"kafka": kafka}), servers, group_id=f"{config.kafka.group_id}-annotators"
    )
    consumer.subscribe([config.topics.to_label])
    return consumer


def create_demo(
    config: Config, servers: str, rate: float, label_delay: float = 3.0, annotator_error: float = 0.05
) -> Demo:
    """The demo's configuration, topics, first model and components, in a fresh temporary directory."""
    workdir = Path(tempfile.mkdtemp(prefix="selector-demo-"))
    effective = demo_config(config, workdir, rate)
    prepare_topics(effective, servers)
    demo = Demo(effective, servers, rate, label_delay=label_delay, annotator_error=annotator_error)
    demo.notes = caps_for_rate(config, rate)[1]
    return demo
