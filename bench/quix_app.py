"""A Quix Streams application doing the monitor's work in its simplest form, for the side-by-side bench.

Per record: parse the JSON prediction (Quix's JSON deserializer), compute the normalized entropy of ``probs``,
and route the record (with its ``entropy`` and ``routed_ms``, the moment it was routed) to ``to_label`` when
the entropy reaches :data:`THRESHOLD`, else to ``accepted``. Processing guarantee at-least-once, Quix's
default, with its default checkpoint every 5 s (flush the producer, then commit the offsets).

Quix installs signal handlers, which only the main thread of a process may do, so the application runs in
a spawned process; :class:`QuixRelay` drives it from the bench process with the interface of
:class:`bench.e2e.RawRelay` (``handled``, ``assigned``, ``run``, ``request_stop``) through shared counters.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from typing import Any

from bench.cpu import process_seconds
from bench.e2e import Progress
from selector.config import Config

QUIX = "Quix Streams app"
THRESHOLD = 0.5
"""Normalized entropy from which a prediction is routed to labeling."""


@dataclass(frozen=True)
class QuixTimes:
    """What the child reports: first and last processed record (perf_counter), CPU seconds over them."""

    first: float
    last: float
    cpu_own: float
    cpu_broker: float


def entropy(probs: list[float]) -> float:
    """Normalized Shannon entropy ``-sum p log p / log C`` in [0, 1]."""
    h = -sum(p * math.log(p) for p in probs if p > 0.0)
    return h / math.log(len(probs)) if len(probs) > 1 else 0.0


def run_app(
    servers: str,
    topics: tuple[str, str, str],
    group: str,
    expected: int,
    handled: Synchronized[int],
    assigned: Synchronized[int],
    stop: Synchronized[int],
    broker_pids: list[int],
    conn: Connection,
) -> None:
    """Child process: run the application until ``expected`` records were processed (if > 0) or ``stop``."""
    import logging  # noqa: PLC0415 (child process only)

    from quixstreams import Application  # noqa: PLC0415 (imported in the child only)

    predictions, accepted, to_label = topics
    marks: dict[str, float] = {}

    def on_processed(_topic: str, _partition: int, _offset: int) -> None:
        n = handled.value + 1
        handled.value = n
        if n == 1:
            marks["first"], marks["cpu0"] = time.perf_counter(), time.process_time()
            marks["broker0"] = sum(process_seconds(p) for p in broker_pids)
        if n == expected:
            marks["last"], marks["cpu1"] = time.perf_counter(), time.process_time()
            marks["broker1"] = sum(process_seconds(p) for p in broker_pids)
            app.stop()

    with tempfile.TemporaryDirectory(prefix="quix-state-") as state_dir:
        app = Application(
            broker_address=servers,
            consumer_group=group,
            auto_offset_reset="earliest",
            state_dir=state_dir,
            on_message_processed=on_processed,
            loglevel=logging.WARNING,
            consumer_extra_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000},
            producer_extra_config={"acks": "all"},
        )
        source = app.topic(predictions, value_deserializer="json")
        sinks = {True: app.topic(to_label, value_serializer="json"), False: app.topic(accepted)}

        def score(value: dict[str, Any]) -> dict[str, Any]:
            value["entropy"] = entropy(value["probs"])
            value["routed_ms"] = time.time() * 1000.0
            return value

        sdf = app.dataframe(source).apply(score)
        sdf.to_topic(lambda value, _key, _ts, _headers: sinks[value["entropy"] >= THRESHOLD])

        joined = app._on_assign  # noqa: SLF001 (the bench needs to know when the group was joined)

        def on_assign(*args: Any) -> None:
            joined(*args)
            assigned.value = 1

        app._on_assign = on_assign  # type: ignore[method-assign]  # noqa: SLF001

        def watch() -> None:
            while not stop.value:
                time.sleep(0.02)
            app.stop()

        threading.Thread(target=watch, daemon=True).start()
        app.run()
    if "last" in marks:
        conn.send(
            QuixTimes(
                marks["first"],
                marks["last"],
                marks["cpu1"] - marks["cpu0"],
                marks["broker1"] - marks["broker0"],
            )
        )
    else:
        conn.send(None)
    conn.close()


class QuixRelay:
    """The Quix application in a spawned process, with the interface of :class:`bench.e2e.RawRelay`.

    ``progress`` records no per-batch latency (Quix confirms deliveries only at its checkpoint); its
    routed latency is read back from the output records' ``routed_ms``.
    """

    def __init__(self, config: Config, expected: int | None = None, track_latency: bool = False) -> None:
        self.config = config
        self.expected = expected or 0
        self.progress = Progress(expected, False)
        ctx = mp.get_context("spawn")
        self._ctx = ctx
        self._handled = ctx.Value("q", 0, lock=False)
        self._assigned = ctx.Value("i", 0, lock=False)
        self._stop = ctx.Value("i", 0, lock=False)
        self.times: QuixTimes | None = None
        self.started = 0.0
        self.broker_pids: list[int] = []

    @property
    def handled(self) -> int:
        return int(self._handled.value)

    @property
    def outputs(self) -> int:
        return self.handled

    @property
    def assigned(self) -> set[int]:
        return {0} if self._assigned.value else set()

    def request_stop(self) -> None:
        self._stop.value = 1

    def run(self, duration_s: float | None = None) -> None:
        t = self.config.topics
        parent, child = self._ctx.Pipe(duplex=False)
        args = (
            self.config.kafka.bootstrap_servers,
            (t.predictions, t.accepted, t.to_label),
            self.config.kafka.group_id,
            self.expected,
            self._handled,
            self._assigned,
            self._stop,
            self.broker_pids,
            child,
        )
        proc = self._ctx.Process(target=run_app, args=args, name="quix-app")
        proc.start()
        child.close()
        end = None if duration_s is None else time.monotonic() + duration_s
        try:
            while proc.is_alive() and not parent.poll(0.05):
                if end is not None and time.monotonic() > end:
                    self.request_stop()
            if parent.poll(30):
                self.times = parent.recv()
        finally:
            self.request_stop()
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
