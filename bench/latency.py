"""Decision latency at a fixed offered load: how long after the model sent a prediction was it handled.

A separate process (so it does not share the consumer's interpreter lock) plays the production model: it
sends predictions at a steady rate, each carrying its send time (``ts`` and ``meta.sent_ms``, epoch
milliseconds; its Kafka timestamp is the same moment), with confluent-kafka's producer, ``linger.ms=0`` and at
most 5 requests in flight (as kafka-python). The consumer under test runs in this process: the unchanged
:class:`~connectors.monitor.loop.Monitor`, or for comparison the plain kafka-python consume-and-produce loop
of :mod:`bench.e2e` (:mod:`bench.clients` adds the others). Latencies, from the send time:

- **delivered**: when the consumer finished the polled batch holding the item — its output records
  acknowledged by the broker (and, for the monitor, its decision committed to the budget state); every item;
- **produced** (or *routed*): the Kafka timestamp of the item's output record, set when the consumer handed
  it to its producer (a Quix app's ``routed_ms``), read back from the output topics after the run; skips
  have none.

The first second of every trial is left out (warm-up). If a consumer cannot keep up with the offered rate
(its backlog takes more than a second to drain once the load stops), the next trial offers 80% of the rate it
managed, so the table also shows the highest sustainable rate.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from typing import Protocol

import numpy as np
import orjson
from confluent_kafka import Producer
from kafka import KafkaConsumer, TopicPartition

from bench import workload
from bench.cpu import CpuMeter
from bench.e2e import BenchMonitor, Progress, make
from connectors.demo.simulate import simulate_probs
from connectors.kafka.broker import EmbeddedBroker
from selector.config import Config

WARMUP_S = 1.0
LOAD_LINGER_MS = 0
"""The load generator sends without batching delay, so a record's send time is when it left for the broker."""
LOAD_IN_FLIGHT = 5
"""kafka-python's default. librdkafka's (a million) floods the embedded broker with one tiny request per
record at this linger, and every record then waits seconds (measured: p50 1.8 s at 10,000 items/s)."""
MAX_DRAIN_S = 1.0
"""A trial is sustained when the backlog left at the end of the load drains within this time."""


def offer_load(
    servers: str, topic: str, rate: float, duration_s: float, trial: int, conn: Connection, lean: bool = False
) -> None:
    """Child process: send ``rate * duration_s`` predictions at ``rate`` per second, then report back
    (sent, first and last send time in epoch ms, CPU seconds used).

    The producer is confluent-kafka's (librdkafka sends from its own threads, so the generator keeps up with
    30,000 items/s on a small machine). ``lean``: records of ~170 bytes (``id``, ``probs`` to 4 decimals,
    ``model``, ``meta``) instead of ~400 (with ``ts``, ``segment``, ``payload`` and the true class).
    """
    total = int(rate * duration_s)
    truth, probs = simulate_probs(np.random.default_rng(trial), total, len(workload.CLASSES))
    rows = np.round(probs, 4).tolist() if lean else probs.tolist()
    labels = [workload.CLASSES[c] for c in truth.tolist()]
    producer = Producer(
        {
            "bootstrap.servers": servers,
            "acks": "all",
            "linger.ms": LOAD_LINGER_MS,
            "batch.size": 256 * 1024,
            "max.in.flight.requests.per.connection": LOAD_IN_FLIGHT,
        }
    )
    conn.send("ready")
    cpu0 = time.process_time()
    sent = 0
    start = time.monotonic()
    first_ms = last_ms = 0.0
    while sent < total:
        due = min(total, int((time.monotonic() - start) * rate) + 1)
        while sent < due:
            rid = f"lat-{trial}-{sent:09d}"
            now_ms = time.time() * 1000.0
            value: dict[str, object]
            if lean:
                meta = {"sent_ms": now_ms, "trial": trial}
                value = {"id": rid, "probs": rows[sent], "model": "line-model-v1", "meta": meta}
            else:
                value = {
                    "id": rid,
                    "probs": rows[sent],
                    "ts": now_ms,
                    "model": "line-model-v1",
                    "segment": f"camera-{sent % 3}",
                    "payload": {"image": f"s3://line-images/{rid}.png"},
                    "meta": {"true_class": labels[sent], "sent_ms": now_ms, "trial": trial},
                }
            producer.produce(topic, orjson.dumps(value), rid.encode(), timestamp=int(now_ms))
            first_ms = first_ms or now_ms
            last_ms = now_ms
            sent += 1
        producer.poll(0)
        time.sleep(max(0.0005, start + sent / rate - time.monotonic()))  # sends in bursts of ~0.5 ms
    producer.flush(60)
    cpu = time.process_time() - cpu0
    conn.send((sent, first_ms, last_ms, cpu))
    conn.close()


class Relay(Protocol):
    """A consumer under test, run in a thread: ``RawRelay`` or ``BenchMonitor`` of :mod:`bench.e2e`."""

    progress: Progress
    assigned: set[int]

    @property
    def handled(self) -> int: ...

    def run(self, duration_s: float | None = None) -> None: ...

    def request_stop(self) -> None: ...


@dataclass(frozen=True)
class Trial:
    """One fixed-rate load against a running consumer."""

    consumer: str
    offered: float
    sent: int
    first_ms: float
    last_ms: float
    drain_s: float
    """from the last send until every item of the trial was handled"""
    cpu_consumer: float
    cpu_broker: float
    cpu_load: float
    """cores busy during the trial: consumer process, broker, load generator"""
    delivered_ms: np.ndarray
    """delivered latency of every item sent after the warm-up"""
    produced_ms: np.ndarray | None = None
    """produced latency of every accepted or to-label item sent after the warm-up (monitor only)"""

    @property
    def achieved(self) -> float:
        """Send rate the load generator reached."""
        return self.sent / max(1e-9, (self.last_ms - self.first_ms) / 1000.0)

    @property
    def handled_rate(self) -> float:
        """Items per second handled, from the first send until the backlog was gone."""
        return self.sent / max(1e-9, (self.last_ms - self.first_ms) / 1000.0 + self.drain_s)

    @property
    def sustained(self) -> bool:
        return self.drain_s <= MAX_DRAIN_S and self.achieved >= 0.95 * self.offered


def _trial(
    name: str, relay: Relay, config: Config, rate: float, duration_s: float, trial: int, lean: bool = False
) -> Trial:
    before = relay.handled
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    args = (config.kafka.bootstrap_servers, config.topics.predictions, rate, duration_s, trial, child, lean)
    proc = ctx.Process(target=offer_load, args=args, name="load-generator")
    proc.start()
    child.close()
    try:
        parent.recv()  # ready: imports done, about to send
        meter = CpuMeter().start()
        sent, first_ms, last_ms, cpu_load = parent.recv()
    except EOFError as exc:
        proc.join(timeout=30)
        raise RuntimeError(f"the load generator exited with code {proc.exitcode} before reporting") from exc
    deadline = time.monotonic() + 120.0
    while relay.handled < before + sent and time.monotonic() < deadline:
        time.sleep(0.005)
    drain_s = max(0.0, time.time() - last_ms / 1000.0)
    meter.stop()
    proc.join(timeout=30)  # after the drain: the generator's exit is not the consumer's backlog
    lo, hi = np.floor(first_ms + WARMUP_S * 1000.0), np.floor(last_ms)  # Kafka timestamps are whole ms
    lat = [done - ts[(ts >= lo) & (ts <= hi)] for done, ts in relay.progress.done]
    delivered = np.concatenate(lat) if lat else np.zeros(0)
    return Trial(
        name,
        rate,
        sent,
        first_ms,
        last_ms,
        drain_s,
        meter.cores(meter.own),
        meter.cores(meter.broker),
        cpu_load / meter.wall if meter.wall else 0.0,
        delivered,
    )


def measure(
    name: str,
    rates: Sequence[float],
    duration_s: float,
    fallback: bool = True,
    *,
    factory: Callable[..., Relay] = make,
    config_for: Callable[[str, str, str], Config] | None = None,
    lean: bool = False,
    routed_of_all: bool = False,
) -> tuple[list[Trial], int, int]:
    """Trials against the consumer called ``name`` on a fresh broker (see :func:`run`).

    ``factory(name, config, track_latency=True)`` builds the consumer, ``config_for(name, servers, unique)``
    its config (default: :func:`bench.workload.bench_config`); ``lean`` records (see :func:`offer_load`).
    Returns the trials; for the monitor (for every consumer if ``routed_of_all``) also the routed records
    expected and read back (else 0, 0).
    """
    unique = "lat-" + "".join(c if c.isalnum() else "-" for c in name)
    with EmbeddedBroker() as broker:
        if config_for is None:
            config = workload.bench_config(servers=broker.bootstrap_servers, unique=unique)
        else:
            config = config_for(name, broker.bootstrap_servers, unique)
        relay = factory(name, config, track_latency=True)
        trials = run(name, relay, config, rates, duration_s, fallback, lean)
        if isinstance(relay, BenchMonitor):
            expected = relay.outputs - relay.router.stats.dead_letters["decode"]
        elif routed_of_all:
            expected = relay.handled
        else:
            return trials, 0, 0
        trials, read = with_produced(config, trials, expected)
        return trials, expected, read


def run(
    name: str,
    relay: Relay,
    config: Config,
    rates: Sequence[float],
    duration_s: float,
    fallback: bool = True,
    lean: bool = False,
) -> list[Trial]:
    """A trial at each of ``rates`` against one running consumer; after an unsustained trial (if
    ``fallback``), one more at 80% of the rate it managed when that is above the next rate to try."""
    workload.create_topics(config)
    thread = threading.Thread(target=relay.run, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60.0
    while not relay.assigned and time.monotonic() < deadline:
        time.sleep(0.05)
    if not relay.assigned:
        relay.request_stop()
        raise RuntimeError(f"{name} did not join its consumer group within 60 s")
    time.sleep(0.5)  # let the consumer reset its positions before the load starts
    trials: list[Trial] = []
    todo = list(rates)
    try:
        while todo:
            trial = _trial(name, relay, config, todo.pop(0), duration_s, len(trials), lean)
            trials.append(trial)
            lower = 500.0 * int(0.8 * trial.handled_rate / 500.0)
            if fallback and not trial.sustained and lower > max(todo, default=0.0):
                todo.insert(0, lower)
    finally:
        relay.request_stop()
        thread.join(timeout=30)
    return trials


def with_produced(
    config: Config, trials: list[Trial], expected: int, timeout_s: float = 120.0
) -> tuple[list[Trial], int]:
    """Add the produced latencies, read back from the accepted and to-label topics without a group.

    Returns the trials and the number of routed records read (all ``expected`` unless some went missing).
    """
    consumer = KafkaConsumer(
        bootstrap_servers=config.kafka.bootstrap_servers,
        enable_auto_commit=False,
        group_id=None,
        max_poll_records=10_000,
        check_crcs=False,  # read-back speed only; the consumers under test keep the default
    )
    tps = [
        TopicPartition(topic, p)
        for topic in (config.topics.accepted, config.topics.to_label)
        for p in sorted(consumer.partitions_for_topic(topic) or ())
    ]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    rows: list[tuple[int, float, float]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(rows) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    value = orjson.loads(r.value)
                    meta = value["meta"]
                    routed = value.get("routed_ms", r.timestamp)  # Quix keeps the input's timestamp
                    rows.append((meta["trial"], meta["sent_ms"], routed - meta["sent_ms"]))
    finally:
        consumer.close()
    table = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
    out = []
    for k, trial in enumerate(trials):
        mine = table[(table[:, 0] == k) & (table[:, 1] >= trial.first_ms + WARMUP_S * 1000.0)]
        out.append(replace(trial, produced_ms=mine[:, 2]))
    return out, len(rows)


def percentiles(values: np.ndarray | None, qs: Sequence[float] = (50, 99)) -> list[float]:
    """Percentiles in ms (NaN when there are none)."""
    if values is None or not len(values):
        return [float("nan")] * len(qs)
    return [float(v) for v in np.percentile(values, qs)]
