"""Kafka outages: noticed busy or idle, said once (then reminded), bounded by ``kafka.outage_deadline_s``.

A :class:`BrokerProbe` asks the cluster to describe itself every ``PROBE_INTERVAL_S`` on its own thread and
with its own client, so an outage is seen whatever the process's loop is doing: waiting in a poll,
blocked in a delivery, or idle. Each answer goes to an :class:`OutageWatch`, which

- logs one WARNING when the cluster stops answering (``Kafka unreachable since HH:MM:SS``), then a reminder
  every ``REMINDER_S`` while it lasts, and one INFO line when it answers again;
- reports it to ``/readyz`` (503), ``/api/status`` and the ``selector_kafka_unreachable`` and
  ``selector_kafka_outages_total`` metrics;
- tells the loop when the outage has lasted ``kafka.outage_deadline_s``: :meth:`OutageWatch.raise_if_expired`
  raises :class:`~selector.errors.KafkaOutageError` (exit 4).

kafka-python narrates an outage with a line per connection attempt; :func:`quiet_kafka_logs` keeps its
warnings and errors, each distinct message at most once per ``REMINDER_S``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import (
    Cancelled,
    CommitFailedError,
    IllegalGenerationError,
    KafkaError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)
from kafka.structs import OffsetAndMetadata

from connectors.kafka.clients import make_admin
from selector.config import Config
from selector.errors import KafkaOutageError

log = logging.getLogger("selector.outage")

HARD_EXIT_GRACE_S = 15.0
"""How long past ``kafka.outage_deadline_s`` the probe waits for the process to exit 4 on its own before it
ends it (a loop blocked inside a client call that waits for the dead cluster would otherwise outlive it)."""
EXIT_OUTAGE = 4

PROBE_INTERVAL_S = 1.0
"""Seconds between two probes of the cluster."""
REMINDER_S = 60.0
"""Seconds between two reminders that the cluster is still unreachable (and between two copies of one
kafka-python warning)."""


def clock_text(t: float) -> str:
    """Local wall-clock time ``HH:MM:SS`` (what an operator compares with their own clock)."""
    return datetime.fromtimestamp(t).strftime("%H:%M:%S")  # noqa: DTZ006 (local time on purpose)


class OutageWatch:
    """Whether the cluster answers, since when it does not, and whether that lasted past the deadline.

    Written by the probe thread, read by the loop and the HTTP handlers (under a lock). Time is injected:
    every method that needs it takes ``now`` (wall-clock seconds).
    """

    def __init__(self, servers: str, deadline_s: float, *, reminder_s: float = REMINDER_S) -> None:
        self.servers = servers
        self.deadline_s = deadline_s
        self.reminder_s = reminder_s
        self.outages = 0
        """outages seen since start (each counted once, when it is first noticed)"""
        self._since: float | None = None
        self._reminded = 0.0
        self._last_error = ""
        self._lock = threading.Lock()

    @property
    def reachable(self) -> bool:
        return self._since is None

    @property
    def since(self) -> float | None:
        """Wall-clock start of the current outage (None while the cluster answers)."""
        return self._since

    def failed(self, began: float, now: float, error: str) -> None:
        """A probe that began at ``began`` got no answer by ``now``: the first one starts an outage."""
        with self._lock:
            self._last_error = error
            if self._since is None:
                self._since, self._reminded = began, now
                self.outages += 1
                log.warning(
                    "Kafka unreachable since %s (%s at %r); still trying: the process exits (code 4) at %s "
                    "unless it answers before then ('kafka.outage_deadline_s' %g s)",
                    clock_text(began),
                    error,
                    self.servers,
                    clock_text(began + self.deadline_s),
                    self.deadline_s,
                )
            elif now - self._reminded >= self.reminder_s:
                self._reminded = now
                log.warning(
                    "Kafka still unreachable since %s (%.0f s, %s); exiting at %s",
                    clock_text(self._since),
                    now - self._since,
                    error,
                    clock_text(self._since + self.deadline_s),
                )

    def answered(self, now: float) -> None:
        """The cluster answered a probe: any outage is over."""
        with self._lock:
            if self._since is not None:
                log.info("Kafka reachable again after %.0f s unreachable", now - self._since)
            self._since = None

    def expired(self, now: float) -> bool:
        since = self._since
        return since is not None and now - since >= self.deadline_s

    def remaining_s(self, now: float) -> float:
        """Seconds until the deadline: the whole ``deadline_s`` while the cluster answers."""
        since = self._since
        return self.deadline_s if since is None else max(0.0, since + self.deadline_s - now)

    def raise_if_expired(self, now: float) -> None:
        """Raises :class:`KafkaOutageError` once the current outage has lasted ``deadline_s``."""
        since = self._since
        if since is not None and now - since >= self.deadline_s:
            raise KafkaOutageError(
                self.servers, clock_text(since), now - since, self.deadline_s, self._last_error
            )

    def status(self) -> dict[str, Any]:
        """The ``kafka`` section of ``/api/status``."""
        since = self._since
        return {"reachable": since is None, "unreachable_since": since, "outages": self.outages}


class BrokerProbe:
    """A thread that probes the cluster every ``interval_s`` and tells an :class:`OutageWatch`.

    The probe is a DescribeCluster request of its own admin client with a short timeout (a quarter of the
    deadline, 1 to 5 s): a killed broker refuses it, a frozen one lets it time out, and it needs no topic to
    exist. The client is of the library ``kafka.client`` names (:func:`connectors.kafka.clients.make_admin`)
    and is built on the probe thread, never in the constructor.
    """

    def __init__(
        self,
        config: Config,
        servers: str,
        watch: OutageWatch,
        *,
        interval_s: float = PROBE_INTERVAL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.servers = servers
        self.watch = watch
        self.interval_s = interval_s
        self.timeout_s = min(5.0, max(1.0, config.kafka.outage_deadline_s / 4))
        self.clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kafka-probe", daemon=True)
        self._admin: KafkaAdminClient | None = None

    def start(self) -> BrokerProbe:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.timeout_s + 2)

    def probe_once(self) -> None:
        """One probe: an answer, or a failure that began now."""
        began = self.clock()
        try:
            if self._admin is None:
                self._admin = self._connect()
            self._admin.describe_cluster()
        except (KafkaError, OSError, ValueError) as exc:
            self.watch.failed(began, self.clock(), _reason(exc))
        else:
            self.watch.answered(self.clock())

    def _exit_if_stuck(self, now: float) -> None:
        """The last resort of the outage bound: the deadline passed ``HARD_EXIT_GRACE_S`` ago and the process
        is still here. Say so as the command line would, and exit 4 at once: nothing is committed (the
        outputs of undelivered records are decided again after a restart)."""
        since = self.watch.since
        if since is None or now - since < self.watch.deadline_s + HARD_EXIT_GRACE_S:
            return
        try:
            self.watch.raise_if_expired(now)
        except KafkaOutageError as exc:
            logging.getLogger("selector").error("%s", exc)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(EXIT_OUTAGE)

    def _connect(self) -> KafkaAdminClient:
        timeout_ms = int(self.timeout_s * 1000)
        return make_admin(
            self.config, self.servers, connect_timeout_ms=timeout_ms, request_timeout_ms=timeout_ms
        )

    def _run(self) -> None:
        while not self._stop.is_set():
            self.probe_once()
            self._exit_if_stuck(self.clock())
            self._stop.wait(self.interval_s)
        if self._admin is not None:
            try:
                self._admin.close()
            except KafkaError as exc:  # closing a client of a dead cluster
                log.debug("probe client close: %s", exc)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def watch_outages(config: Config, servers: str) -> tuple[OutageWatch, BrokerProbe]:
    """A watch for ``kafka.outage_deadline_s`` and its probe (not started)."""
    watch = OutageWatch(servers, config.kafka.outage_deadline_s)
    return watch, BrokerProbe(config, servers, watch)


class _OncePerWindow(logging.Filter):
    """Lets each distinct message template of a logger through at most once per ``window_s``."""

    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window_s = window_s
        self.clock = clock
        self._seen: dict[tuple[str, object], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.msg)
        now = self.clock()
        last = self._seen.get(key)
        if last is not None and now - last < self.window_s:
            return False
        if len(self._seen) > 1000:  # messages built without a template: keep the table bounded
            self._seen.clear()
        self._seen[key] = now
        return True


def quiet_kafka_logs(window_s: float = REMINDER_S) -> None:
    """kafka-python's loggers: warnings and errors only, each distinct message at most once per window, an
    exception as one line instead of a traceback, and nothing about requests cancelled because this process
    closed its client (``Metadata refresh: failed Cancelled`` at a clean stop: nothing to act on).

    Call after logging is configured: a filter goes on each of the root logger's handlers (a logger's own
    filters never see records propagated from its children; each handler counts its own window, so a second
    handler is not starved by the first) and passes every record not from ``kafka.*``.
    """
    logging.getLogger("kafka").setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_kafka_filter(window_s))


def _kafka_filter(window_s: float) -> Callable[[logging.LogRecord], bool]:
    once = _OncePerWindow(window_s)

    def only_kafka(record: logging.LogRecord) -> bool:
        if not (record.name == "kafka" or record.name.startswith("kafka.")):
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        thrown = record.exc_info[1] if record.exc_info else None
        if any(isinstance(a, Cancelled) for a in (*args, thrown)):
            return False
        if thrown is not None:  # a network error's stack helps no operator
            record.msg = f"{record.msg} ({type(thrown).__name__}: {str(thrown).replace('%', '%%')})"
            record.exc_info, record.exc_text = None, None
        if isinstance(thrown, AttributeError) and record.name == "kafka.net.transport":
            # kafka-python reading from a socket it has already closed (a race of its own when a connection
            # drops, e.g. a group member killed): it closes the transport and reconnects; nothing to act on
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return once.filter(record)

    return only_kafka


GROUP_MOVED_ON = (CommitFailedError, UnknownMemberIdError, IllegalGenerationError, RebalanceInProgressError)
"""Commit failures that mean this member's generation is over: it rejoins at its next poll."""


def commit_offsets(
    consumer: KafkaConsumer, offsets: dict[TopicPartition, OffsetAndMetadata] | None, timeout_s: float
) -> bool:
    """Commit ``offsets`` (None: the consumer's positions); False when they were not committed and will be
    again later: the group moved on (the member rejoins at its next poll and its partitions' new owner starts
    from the last commit) or the cluster did not answer in ``timeout_s``.

    Raises:
        KafkaError: a failure neither retriable nor a rebalance (an authorization error, say).
    """
    try:
        consumer.commit(offsets, timeout_ms=int(max(0.5, timeout_s) * 1000))
    except GROUP_MOVED_ON as exc:
        log.warning(
            "offset commit refused, the consumer group moved on (%s): this member rejoins and its "
            "partitions go on from their last commit and state snapshot",
            _reason(exc),
        )
        return False
    except KafkaError as exc:
        if not exc.retriable:
            raise
        log.warning("offset commit failed (%s); retried at the next commit", _reason(exc))
        return False
    return True


def close_clients(consumer: KafkaConsumer | None, producer: KafkaProducer | None, *, cut_short: bool) -> None:
    """Close a consumer and a producer; ``cut_short`` (after an outage) waits at most a second for each and
    drops what the producer still holds (nothing of it was committed). Never raises a Kafka error."""
    if consumer is not None:
        try:
            consumer.close(autocommit=False, timeout_ms=1000 if cut_short else None)
        except KafkaError as exc:
            log.warning("consumer close: %s", _reason(exc))
    if producer is not None:
        try:
            producer.close(timeout=1 if cut_short else 5)
        except KafkaError as exc:
            log.warning("producer close: %s (records it still held were not committed)", _reason(exc))
