"""Side by side through the embedded broker: raw relays of both clients, Quix Streams, the monitor on each.

Five consumers read the same records (lean JSON predictions of ~130 bytes: ``id``, 10 ``probs``, ``model``)
from a 4-partition topic with acks=all, at least once:

- **raw kafka-python** / **raw confluent-kafka**: consume a batch, produce every record unchanged, flush,
  commit (:class:`bench.e2e.RawRelay`, :class:`bench.confluent_relay.ConfluentRelay`);
- **Quix Streams app**: parse, normalized entropy, route to one of two topics (:mod:`bench.quix_app`);
- **selector monitor** with ``kafka.client: kafka-python`` and with ``kafka.client: confluent-kafka``: the
  unchanged :class:`connectors.monitor.loop.Monitor`.

Throughput: each on a fresh broker holding only its input, timed from its first polled record to the last one
handled, interleaved over rounds (every consumer once per round) and reported as the median. Latency: a
load generator in another process offers a steady rate; *routed* is the time from the prediction's send to
its output record being handed to the producer (the output's Kafka timestamp; Quix: the ``routed_ms`` it
adds), read back after the run; *delivered* is the time to the end of the batch that held it (acknowledged
and committed), for the consumers whose loop the bench can see (not Quix, which confirms deliveries at its
checkpoint).
"""

from __future__ import annotations

import importlib.util
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from bench import latency, workload
from bench.confluent_relay import RAW_CONFLUENT, ConfluentRelay
from bench.cpu import CpuMeter, broker_pids
from bench.e2e import RAW, BenchMonitor, RawRelay, Throughput, timed
from bench.quix_app import QUIX, QuixRelay
from connectors.demo.simulate import simulate_probs
from connectors.kafka.broker import EmbeddedBroker
from selector.config import Config, parse_config

SELECTOR_CONFLUENT = "selector monitor (confluent-kafka)"
SELECTOR_KAFKA_PYTHON = "selector monitor (kafka-python)"
CONSUMERS = (RAW, RAW_CONFLUENT, QUIX, SELECTOR_KAFKA_PYTHON, SELECTOR_CONFLUENT)
CLIENT = {SELECTOR_KAFKA_PYTHON: "kafka-python", SELECTOR_CONFLUENT: "confluent-kafka"}


def monitor_on_confluent() -> bool:
    """Whether the monitor can run on confluent-kafka here (its adapter exists, the client is installed)."""
    return all(importlib.util.find_spec(m) for m in ("confluent_kafka", "connectors.kafka.confluent"))


def available(name: str) -> bool:
    return name != SELECTOR_CONFLUENT or monitor_on_confluent()


def lean_records(n: int, seed: int = 3) -> list[tuple[bytes, bytes]]:
    """``n`` (key, value) predictions of ~130 bytes: ``id``, 10 ``probs`` to 4 decimals, ``model``."""
    _, probs = simulate_probs(np.random.default_rng(seed), n, len(workload.CLASSES))
    out = []
    for i, row in enumerate(np.round(probs, 4).tolist()):
        rid = f"item-{i:09d}"
        out.append((rid.encode(), orjson.dumps({"id": rid, "probs": row, "model": "line-model-v1"})))
    return out


def config_for(name: str, servers: str, unique: str) -> Config:
    """The bench config (shipped defaults, 10 classes, own topics and group) with the consumer's client."""
    base = workload.bench_config(servers=servers, unique=unique).model_dump(mode="python")
    base["kafka"]["client"] = CLIENT.get(name, "kafka-python")
    return parse_config(base)


def make(name: str, config: Config, expected: int | None = None, track_latency: bool = False) -> Any:
    """The consumer called ``name``, one of :data:`CONSUMERS`."""
    if name == RAW:
        return RawRelay(config, expected, track_latency)
    if name == RAW_CONFLUENT:
        return ConfluentRelay(config, expected, track_latency)
    if name == QUIX:
        return QuixRelay(config, expected, track_latency)
    return BenchMonitor(config, expected, track_latency)


def throughput(name: str, records: list[tuple[bytes, bytes]], timeout_s: float = 300.0) -> Throughput:
    """Pre-produce ``records`` to a fresh broker, then run the consumer called ``name`` over them, timed."""
    unique = "".join(c if c.isalnum() else "-" for c in name)
    with EmbeddedBroker() as broker:
        config = config_for(name, broker.bootstrap_servers, unique)
        workload.create_topics(config)
        acked = workload.produce(broker.bootstrap_servers, [config.topics.predictions], records)
        if acked != len(records):
            raise RuntimeError(f"pre-producing: {acked} of {len(records)} records acknowledged")
        consumer = make(name, config, expected=len(records))
        if name != QUIX:
            return timed(name, consumer, len(records), timeout_s)
        consumer.broker_pids = broker_pids()
        consumer.run(duration_s=timeout_s)
        times = consumer.times
        if times is None:
            n = len(records)
            raise RuntimeError(f"{name} handled {consumer.handled} of {n} records in {timeout_s} s")
        seconds = times.last - times.first
        cpu = CpuMeter(wall=seconds, own=times.cpu_own, broker=times.cpu_broker)
        return Throughput(name, consumer.handled, consumer.handled, seconds, float("nan"), cpu)


@dataclass(frozen=True)
class Compared:
    """Every round's run of one consumer."""

    name: str
    runs: list[Throughput]

    @property
    def rate(self) -> float:
        return statistics.median(r.rate for r in self.runs)

    @property
    def outputs(self) -> int:
        return self.runs[-1].outputs

    def cores(self) -> tuple[float, float]:
        own = statistics.median(r.cpu.cores(r.cpu.own) for r in self.runs)
        broker = statistics.median(r.cpu.cores(r.cpu.broker) for r in self.runs)
        return own, broker


def compare(n: int, rounds: int, names: Sequence[str] = CONSUMERS) -> list[Compared]:
    """Throughput of every available consumer in ``names`` over the same ``n`` records, interleaved."""
    records = lean_records(n)
    names = [m for m in names if available(m)]
    runs: dict[str, list[Throughput]] = {m: [] for m in names}
    for _ in range(rounds):
        for m in names:
            runs[m].append(throughput(m, records))
    return [Compared(m, runs[m]) for m in names]


def curve(
    rates: Sequence[float], duration_s: float, names: Sequence[str] = CONSUMERS
) -> dict[str, list[latency.Trial]]:
    """A latency trial at each offered rate against every available consumer, each on a fresh broker."""
    out = {}
    for m in names:
        if not available(m):
            continue
        trials, _, _ = latency.measure(
            m,
            rates,
            duration_s,
            fallback=False,
            factory=make,
            config_for=config_for,
            lean=True,
            routed_of_all=True,
        )
        out[m] = trials
    return out
