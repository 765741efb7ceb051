"""`selector serve-model`: the inference connector. Features in, predictions out, models hot-swapped.

It consumes the features topic (``{id, embedding, payload?, meta?, ts?}``) in a consumer group, scores each
polled batch with the current ONNX model (onnxruntime), and publishes one prediction per item to the
predictions topic: the mean probabilities, the ensemble members' probabilities as ``committee`` (so the
monitor can use vote entropy, KL to consensus or the committee guard), the embedding, and the model version.
Offsets are committed only once the batch's predictions and dead letters are acknowledged (at least once).

Models come from the registry directory (:class:`connectors.model.registry.ModelRegistry`): the promoted
version at
start-up, then every ``promoted`` event on the models topic. A new model is verified (sha256 of the file
against its manifest and the event), loaded and probed (input and output shapes, classes, finite
probabilities that sum to 1) before it replaces the old one between two batches; a model that fails any check
is never served, the previous one keeps running and the refusal is counted and logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
from kafka.consumer.fetcher import ConsumerRecord
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from connectors.kafka.clients import make_consumer, make_producer, prepare_topics, redact, secrets_of
from connectors.kafka.delivery import deliver, refused_to_dead_letter
from connectors.kafka.outage import close_clients, commit_offsets, watch_outages
from connectors.kafka.topic_reader import TopicReader
from connectors.model.registry import ModelRegistry
from connectors.model.serve_records import STAGES, score_records
from connectors.web.metrics import build_info, histogram, kafka_outage
from connectors.web.server import Part
from selector.config import Config
from selector.errors import DeliveryError, KafkaOutageError, SelectorError
from selector.messages.contracts import parse_model_event
from selector.messages.timestamps import rfc3339
from selector.stats import BATCH_SECONDS_BUCKETS, batch_seconds_counts, observe_seconds

log = logging.getLogger(__name__)


class ModelError(SelectorError):
    """A model that must not be served: unreadable, tampered with, or producing wrong outputs."""


@dataclass(frozen=True)
class LoadedModel:
    """A verified ONNX model ready to score embeddings."""

    version: str
    session: Any
    classes: list[str]
    embedding_dim: int
    members: int
    outputs: tuple[str, ...]
    """the graph's outputs this connector reads: ``probs``, and ``members`` when it has them"""

    @classmethod
    def from_bytes(
        cls, data: bytes, version: str, classes: list[str], embedding_dim: int | None = None
    ) -> LoadedModel:
        """Load and probe a model (its embedding length must be ``embedding_dim`` when given); raises
        :class:`ModelError` naming what is wrong."""
        options = ort.SessionOptions()
        options.log_severity_level = 3  # onnxruntime's own warnings would repeat our error
        try:
            session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for every parse failure
            raise ModelError(f"model {version}: not a loadable ONNX model ({exc})") from exc
        inputs = session.get_inputs()
        outputs = {o.name for o in session.get_outputs()}
        if [i.name for i in inputs] != ["embedding"] or len(inputs[0].shape) != 2:
            raise ModelError(f"model {version}: needs one input 'embedding' of shape [batch, dim]")
        if "probs" not in outputs:
            raise ModelError(f"model {version}: has no output 'probs' (outputs: {sorted(outputs)})")
        dim = inputs[0].shape[1]
        if not isinstance(dim, int):
            raise ModelError(f"model {version}: the embedding length must be fixed, got {dim!r}")
        if embedding_dim is not None and dim != embedding_dim:
            configured = f"'input.embedding_dim' is {embedding_dim}"
            raise ModelError(f"model {version}: takes embeddings of {dim} numbers, {configured}")
        meta = session.get_modelmeta().custom_metadata_map
        if "classes" in meta and orjson.loads(meta["classes"]) != classes:
            theirs = orjson.loads(meta["classes"])
            raise ModelError(f"model {version}: classes {theirs} differ from the configured {classes}")
        model = cls(version, session, classes, dim, 0, tuple(n for n in ("probs", "members") if n in outputs))
        probe = np.random.default_rng(0).normal(size=(4, dim)).astype(np.float32)
        try:
            probs, members = model.predict(probe)
        except Exception as exc:
            raise ModelError(f"model {version}: failed on a probe batch ({exc})") from exc
        if probs.shape != (4, len(classes)):
            raise ModelError(
                f"model {version}: 'probs' has shape {probs.shape}, expected (4, {len(classes)})"
            )
        if not (np.isfinite(probs).all() and np.allclose(probs.sum(axis=1), 1.0, atol=1e-3)):
            raise ModelError(f"model {version}: 'probs' rows are not finite probabilities summing to 1")
        return replace(model, members=0 if members is None else members.shape[1])

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Mean probabilities (n, C) and member probabilities (n, K, C) when the graph has them."""
        got = dict(zip(self.outputs, self.session.run(list(self.outputs), {"embedding": x}), strict=True))
        return got["probs"], got.get("members")


def load_version(
    registry: ModelRegistry,
    version: str,
    classes: list[str],
    sha256: str | None = None,
    embedding_dim: int | None = None,
) -> LoadedModel:
    """Verify a registry version (file against manifest, and against ``sha256`` when an event names one),
    then load and probe it."""
    try:
        data = registry.verify(version)
    except SelectorError as exc:
        raise ModelError(str(exc)) from exc
    if sha256 is not None and registry.manifest(version)["sha256"] != sha256:
        raise ModelError(f"model {version}: the event's sha256 {sha256} is not the manifest's")
    return LoadedModel.from_bytes(data, version, classes, embedding_dim)


@dataclass
class ServeStats:
    """What the connector counts (read by its metrics collector)."""

    items: int = 0
    dead_letters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAGES, 0))
    """records dead-lettered, by stage"""
    loads: dict[str, int] = field(default_factory=lambda: {"loaded": 0, "refused": 0})
    batch_bucket_counts: list[int] = field(default_factory=batch_seconds_counts)
    batch_seconds_sum: float = 0.0
    last_progress: float = 0.0

    def count_dead_letters(self, stage: str, n: int) -> None:
        self.dead_letters[stage] = self.dead_letters.get(stage, 0) + n


class ModelServer:
    """Score the features topic with the registry's current model until :meth:`request_stop`."""

    def __init__(self, config: Config, servers: str, registry: ModelRegistry | None = None) -> None:
        self.config = config
        self.servers = servers
        self.registry = registry if registry is not None else ModelRegistry(config.retrain.registry)
        self.model: LoadedModel | None = None
        self.stats = ServeStats()
        self._stop = threading.Event()
        self._secrets = secrets_of(config)
        self.outage, self._probe = watch_outages(config, servers)

    def request_stop(self) -> None:
        self._stop.set()

    def swap(self, version: str, sha256: str | None = None) -> bool:
        """Load ``version`` and serve it from the next batch on; on any failure keep the current model."""
        try:
            model = load_version(
                self.registry, version, self.config.classes, sha256, self.config.input.embedding_dim
            )
        except ModelError as exc:
            self.stats.loads["refused"] += 1
            current = self.model.version if self.model else "none"
            log.error("refused %s; still serving %s", exc, current)
            return False
        self.model = model
        self.stats.loads["loaded"] += 1
        log.info("serving model %s (%d members, embedding %d)", version, model.members, model.embedding_dim)
        return True

    def run(self, duration_s: float | None = None) -> None:
        """Score until stopped (or ``duration_s`` passed); while Kafka does not answer, wait (at most
        ``kafka.outage_deadline_s``).

        Raises:
            KafkaOutageError: the cluster stopped answering for ``kafka.outage_deadline_s``.
            DeliveryError: predictions could not be delivered within it.
        """
        cfg = self.config
        if cfg.kafka.create_topics:
            prepare_topics(cfg, self.servers)
        self._probe.start()
        models = TopicReader(cfg, self.servers, cfg.topics.models)
        # past announcements first, then CURRENT (which reflects them): a promotion in between is either
        # in CURRENT already or announced after what was read
        models.read_all(timeout_s=10.0)
        current = self.registry.current()
        if current is not None:
            self.swap(current)
        consumer = make_consumer(cfg, self.servers, group_id=f"{cfg.kafka.group_id}-serve")
        consumer.subscribe([cfg.topics.features])
        producer = make_producer(cfg, self.servers)
        ends = None if duration_s is None else time.monotonic() + duration_s
        waiting_logged = False
        uncommitted, last_commit = False, time.monotonic()
        cut_short = False
        try:
            while not self._stop.is_set() and (ends is None or time.monotonic() < ends):
                self.outage.raise_if_expired(time.time())
                if self.outage.reachable:
                    self._follow(models)
                self.stats.last_progress = time.time()
                if self.model is None:
                    if not waiting_logged:
                        log.warning("no promoted model in %s yet: features wait", self.registry.root)
                        waiting_logged = True
                    self._stop.wait(0.5)
                    continue
                polled = consumer.poll(timeout_ms=cfg.serve.max_wait_ms, max_records=cfg.serve.batch_size)
                records = [r for batch in polled.values() for r in batch]
                if records:
                    started = time.perf_counter()
                    self.handle(producer, records)  # every record of the batch delivered, or it raises
                    uncommitted = True
                    self._observe(time.perf_counter() - started)
                # positions are past delivered records only: commit them at most every commit_interval_s
                # (a refused commit leaves them to the next one, or to the partitions' next owner)
                due = time.monotonic() - last_commit >= cfg.kafka.commit_interval_s
                if uncommitted and due and self.outage.reachable:
                    uncommitted = not commit_offsets(consumer, None, self._commit_timeout_s())
                    last_commit = time.monotonic()
            if uncommitted and self.outage.reachable:  # a clean stop: the last batches were delivered
                commit_offsets(consumer, None, self._commit_timeout_s())
        except (DeliveryError, KafkaOutageError):
            cut_short = True
            raise
        finally:
            self._probe.close()
            models.close()
            close_clients(consumer, producer, cut_short=cut_short or not self.outage.reachable)

    def _commit_timeout_s(self) -> float:
        return min(10.0, self.outage.remaining_s(time.time()))

    def _follow(self, models: TopicReader) -> None:
        for rec in models.read_new():
            event = parse_model_event(rec.value)
            if event is None:
                log.warning("ignored a record that is not a model event at offset %d", rec.offset)
            elif event.type == "promoted":
                self.swap(event.version, event.sha256)

    def handle(self, producer: Any, records: list[ConsumerRecord]) -> None:
        """Score one polled batch and deliver its predictions and dead letters (waits for the acks); a record
        that fails at any stage is dead-lettered and the batch goes on
        (:func:`connectors.model.serve_records.score_records`)."""
        model = self.model
        assert model is not None  # run() polls only with a model
        cfg = self.config
        at = rfc3339(time.time())
        scored = score_records(model, records, cfg, at, self._secrets)
        replaced = deliver(
            producer,
            scored.outgoing,
            self.outage.remaining_s(time.time()),
            lambda exc: f"predictions undeliverable: {redact(str(exc), self._secrets)}",
            # a prediction too large for the broker is dead-lettered in its place
            refused_to_dead_letter(cfg.topics.dead_letter, at, cfg.kafka.max_request_size),
        )
        refused = sum(("x-dlq-reason", b"refused") in (r[3] or []) for r in replaced)
        self.stats.items += scored.predictions - refused
        for stage, reasons in scored.dead_letters.items():
            self.stats.count_dead_letters(stage, len(reasons))
        if refused:
            self.stats.count_dead_letters("produce", refused)

    def _observe(self, seconds: float) -> None:
        self.stats.batch_seconds_sum += seconds
        observe_seconds(self.stats.batch_bucket_counts, seconds)


class ServeCollector:
    """Exports a :class:`ModelServer`'s counters and the model it serves."""

    def __init__(self, server: ModelServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        s = self.server.stats
        yield CounterMetricFamily(
            "selector_serve_items", "Items scored and published as predictions.", value=s.items
        )
        dlq = CounterMetricFamily(
            "selector_dead_letters", "Records sent to the dead-letter topic, by stage.", labels=["stage"]
        )
        for stage, n in sorted(s.dead_letters.items()):
            dlq.add_metric([stage], n)
        yield dlq
        loads = CounterMetricFamily(
            "selector_model_loads",
            "Model versions loaded, or refused (never served), by outcome.",
            labels=["outcome"],
        )
        for outcome, n in s.loads.items():
            loads.add_metric([outcome], n)
        yield loads
        info = GaugeMetricFamily(
            "selector_model_info", "The model version being served (value 1).", labels=["version"]
        )
        if self.server.model is not None:
            info.add_metric([self.server.model.version], 1.0)
        yield info
        yield histogram(
            "selector_batch_seconds",
            "Time to score, deliver and commit one polled batch of features.",
            BATCH_SECONDS_BUCKETS,
            s.batch_bucket_counts,
            s.batch_seconds_sum,
        )
        yield GaugeMetricFamily(
            "selector_last_progress_timestamp_seconds",
            "Wall-clock time of the serving loop's last iteration.",
            value=s.last_progress,
        )
        yield from kafka_outage(self.server.outage)
        yield build_info(self.server.config.config_hash())


def serve_part(server: ModelServer) -> Part:
    """The inference connector's collector, health, readiness (a model loaded) and status section."""

    def status() -> dict[str, Any]:
        model = server.model
        return {
            "model": model.version if model else None,
            "members": model.members if model else 0,
            "items": server.stats.items,
            "dead_letters": sum(server.stats.dead_letters.values()),
            "dead_letters_by_stage": dict(server.stats.dead_letters),
            "loads": dict(server.stats.loads),
            "last_progress": server.stats.last_progress,
        }

    return Part(
        "serve",
        ServeCollector(server),
        lambda: server.stats.last_progress,
        lambda: server.model is not None,
        status,
        kafka=server.outage,
    )
