"""Retraining: the label loop's triggers, the retrain-request events, and the built-in trainer's runs.

:class:`Retrainer` lives in the label loop. After every round it feeds the trigger policy
(:mod:`selector.quality.triggers`) with the newly labeled items (items whose votes now resolve to a label:
a second vote, a retraction and re-vote or a duplicate message does not count an item again), the audits of
auto-acceptable items and their errors,
and a Page-Hinkley detector (:mod:`selector.quality.drift`) run over the confidence of audited items (audits
are a
uniform random sample of the stream, so their confidence tracks the model's input distribution without the
selection bias of queries). When a trigger holds and the debounce interval has passed, it publishes a
retrain-request event on the retrain topic (for external pipelines) and, with ``retrain.builtin``, starts
:func:`retrain_once` in a separate process, so training never blocks ingestion. The trainer's outcome is
announced on the models topic (``promoted`` events make ``selector serve-model`` swap). Trigger and detector
state are kept in the dataset store, so a restart forgets no pending reason.

Event formats (JSON, keyed by request number or model version):

- retrain topic: ``{"type": "retrain_request", "request": n, "reasons": [...], "labels": k, "at": rfc3339}``
- models topic: ``{"type": "promoted" | "rejected", "version", "parent", "sha256", "reason", "metrics",
  "at"}``
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

import numpy as np
import orjson
from kafka import KafkaProducer

from connectors.kafka.clients import make_producer, redact, secrets_of
from connectors.kafka.delivery import deliver
from connectors.labels.revote import label_consensus
from connectors.model.dataset import DatasetStore
from selector.config import Config
from selector.messages.timestamps import rfc3339
from selector.quality.drift import PageHinkley, PageHinkleyState
from selector.quality.triggers import TriggerPolicy, TriggerState

log = logging.getLogger(__name__)

OUTCOMES = ("promoted", "rejected", "failed")
REASONS = ("labels", "schedule", "audit_error", "drift")


def retrain_once(config: Config, now: float) -> dict[str, Any]:
    """Train a candidate on the dataset store, gate it against the current model and register it; returns
    its models-topic event. Imports torch: run it in a trainer process, not in a poll loop.

    Raises:
        SelectorError: too few labeled examples with embeddings, or a failed parity check.
    """
    from connectors.model.registry import ModelRegistry  # noqa: PLC0415 (trainer process only)
    from connectors.model.trainer import retrain, settings_of  # noqa: PLC0415 (imports torch)

    r = config.retrain
    store = DatasetStore(config.dataset.path)
    try:
        d = config.dataset
        pseudo = d.pseudo_label_weight if d.pseudo_label_share > 0 else None
        book = store.book()
        agreed = label_consensus(config, book)
        resolved = agreed.items if agreed is not None else None
        examples = list(store.examples(d.quorum, book, pseudo_weight=pseudo, consensus=resolved))
    finally:
        store.close()
    registry = ModelRegistry(r.registry)
    result = retrain(
        examples,
        config.classes,
        registry,
        settings_of(r),
        holdout_share=r.holdout_share,
        min_examples=r.min_examples,
        min_improvement=r.min_improvement,
        min_holdout_effective=r.min_holdout_effective,
        gate_weight_cap=r.gate_weight_cap,
        defects=config.defects(),
        now=now,
    )
    manifest = registry.manifest(result.version)
    return {
        "type": "promoted" if result.promoted else "rejected",
        "version": result.version,
        "parent": manifest.get("parent"),
        "sha256": manifest["sha256"],
        "reason": result.reason,
        "metrics": result.metrics,
        "at": rfc3339(now),
    }


def resolved_items(store: DatasetStore, quorum: int) -> int:
    """How many stored items have a decision and votes that resolve to a label under ``quorum``: the
    labeled items a retrain can use, each counted once however many votes it has."""
    book = store.book()
    return len(store.known({i for i in book.votes if book.resolve(i, quorum).label is not None}))


def publish(producer: KafkaProducer, config: Config, topic: str, key: str, event: dict[str, Any]) -> None:
    """Deliver one event (waits for the ack, resends until ``kafka.outage_deadline_s``)."""
    secrets = secrets_of(config)
    deliver(
        producer,
        [(topic, key.encode(), orjson.dumps(event), None)],
        config.kafka.outage_deadline_s,
        lambda exc: f"event undeliverable to {topic}: {redact(str(exc), secrets)}",
    )


def retrain_and_announce(config: Config, servers: str | None) -> dict[str, Any]:
    """:func:`retrain_once`, then its event on the models topic (when ``servers`` names a cluster)."""
    event = retrain_once(config, time.time())
    announce(config, servers, event)
    return event


def announce(config: Config, servers: str | None, event: dict[str, Any]) -> None:
    """A trainer's event on the models topic, keyed by its version (nothing when ``servers`` is None)."""
    if servers is None:
        return
    producer = make_producer(config, servers)
    try:
        publish(producer, config, config.topics.models, event["version"], event)
    finally:
        producer.close(timeout=5)


class Retrainer:
    """Trigger policy, drift detector and the trainer process of one label loop."""

    def __init__(self, config: Config, servers: str, store: DatasetStore, now: float) -> None:
        r = config.retrain
        self.config = config
        self.servers = servers
        self.store = store
        self.policy = TriggerPolicy(
            every_labels=r.every_labels,
            schedule_s=r.schedule_s,
            audit_error_above=r.audit_error_above,
            audit_min_labels=r.audit_min_labels,
            drift=r.drift,
            min_interval_s=r.min_interval_s,
        )
        self.detector = PageHinkley(delta=r.drift_delta, threshold=r.drift_threshold)
        saved = store.get_meta("retrain") or {}
        self.triggers = (
            TriggerState.from_dict(saved["triggers"]) if "triggers" in saved else TriggerState.start(now)
        )
        self.drift = PageHinkleyState.from_dict(saved["drift"]) if "drift" in saved else PageHinkleyState()
        seen = saved.get("audits_seen", [0, 0])
        self.audits_seen = (int(seen[0]), int(seen[1]))
        """(audits, errors) of auto-acceptable items already fed to the policy"""
        # A store from before items were counted starts from its present count: its labels were counted.
        self.resolved_seen = int(saved.get("resolved_seen", resolved_items(store, config.dataset.quorum)))
        """the most labeled items the store has held: only items beyond it are new"""
        self.requests = dict.fromkeys(REASONS, 0)
        self.outcomes = dict.fromkeys(OUTCOMES, 0)
        self.alarms = {"up": 0, "down": 0}
        self.last_event: dict[str, Any] | None = None
        self.last_retrain = 0.0
        self._pool: ProcessPoolExecutor | None = None
        self._running: Future[dict[str, Any]] | None = None

    def step(
        self,
        producer: KafkaProducer,
        now: float,
        *,
        new_labels: int,
        audit_confidences: list[float],
        audits: tuple[int, int],
    ) -> None:
        """One round: observe, maybe request a retrain (and start the trainer), persist the state.

        ``new_labels`` is the number of label messages this round stored: with none, no item's label
        changed, so the store's labeled items are not counted again. The labels trigger counts items beyond
        the most the store ever held (:attr:`resolved_seen`): an item retracted and labeled again, or voted
        on twice, counts once.
        """
        alarm = False
        if self.config.retrain.drift and audit_confidences:
            self.drift, at, direction = self.detector.update(self.drift, np.asarray(audit_confidences, float))
            if at is not None and direction is not None:
                self.alarms[direction] += 1
                alarm = True
                log.warning("drift alarm: the confidence of audited items moved %s", direction)
        n, errors = audits
        seen_n, seen_errors = self.audits_seen
        fresh = 0
        if new_labels:
            resolved = resolved_items(self.store, self.config.dataset.quorum)
            fresh = max(0, resolved - self.resolved_seen)
            self.resolved_seen = max(resolved, self.resolved_seen)
        self.triggers = self.policy.observe(
            self.triggers,
            new_labels=fresh,
            audits=max(0, n - seen_n),
            audit_errors=max(0, min(n - seen_n, errors - seen_errors)),
            drift_alarm=alarm,
        )
        self.audits_seen = (max(n, seen_n), max(errors, seen_errors))
        self.collect()
        reasons = self.policy.due(self.triggers, now)
        if reasons and self._running is None:
            self._request(producer, now, reasons)
        self.store.put_meta(
            "retrain",
            {
                "triggers": self.triggers.to_dict(),
                "drift": self.drift.to_dict(),
                "audits_seen": list(self.audits_seen),
                "resolved_seen": self.resolved_seen,
            },
        )

    def _request(self, producer: KafkaProducer, now: float, reasons: tuple[str, ...]) -> None:
        number = self.triggers.requests + 1
        event = {
            "type": "retrain_request",
            "request": number,
            "reasons": list(reasons),
            "labels": self.triggers.labels_since,
            "at": rfc3339(now),
        }
        publish(producer, self.config, self.config.topics.retrain, str(number), event)
        self.triggers = self.policy.fired(self.triggers, now)
        for reason in reasons:
            self.requests[reason] += 1
        log.info("retrain requested (%s)", ", ".join(reasons))
        if self.config.retrain.builtin:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
            self._running = self._pool.submit(retrain_and_announce, self.config, self.servers)

    def collect(self, wait: bool = False) -> None:
        """Count the outcome of a finished trainer run (``wait``: block until the running one ends)."""
        job = self._running
        if job is None or not (wait or job.done()):
            return
        self._running = None
        self.last_retrain = time.time()
        try:
            event = job.result()
        except Exception as exc:  # the trainer's failure is counted and logged; the label loop goes on
            self.outcomes["failed"] += 1
            log.error("retrain failed: %s", exc)
            return
        self.last_event = event
        self.outcomes[event["type"]] += 1
        log.info("retrain: %s", event["reason"])

    @property
    def running(self) -> bool:
        return self._running is not None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
