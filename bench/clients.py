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

import cProfile
import importlib.util
import pstats
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bench import latency, workload
from bench.confluent_relay import RAW_CONFLUENT, ConfluentRelay
from bench.cpu import CpuMeter, broker_pids
from bench.e2e import RAW, BenchMonitor, RawRelay, Throughput, timed
from bench.markdown import count, percent, table
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


def versions() -> str:
    """The versions of the clients compared."""
    names = ("kafka-python", "confluent-kafka", "quixstreams")
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} not installed")
    ck = importlib.util.find_spec("confluent_kafka")
    if ck is not None:
        import confluent_kafka  # noqa: PLC0415 (only for its librdkafka version)

        found.append(f"librdkafka {confluent_kafka.libversion()[0]}")
    return ", ".join(found)


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


def throughput(
    name: str,
    records: list[tuple[bytes, bytes]],
    timeout_s: float = 300.0,
    profiler: cProfile.Profile | None = None,
) -> Throughput:
    """Pre-produce ``records`` to a fresh broker, then run the consumer called ``name`` over them, timed
    (under ``profiler`` if given: the consumer's run only, group join included)."""
    unique = "".join(c if c.isalnum() else "-" for c in name)
    with EmbeddedBroker() as broker:
        config = config_for(name, broker.bootstrap_servers, unique)
        workload.create_topics(config)
        acked = workload.produce(broker.bootstrap_servers, [config.topics.predictions], records)
        if acked != len(records):
            raise RuntimeError(f"pre-producing: {acked} of {len(records)} records acknowledged")
        consumer = make(name, config, expected=len(records))
        if name != QUIX:
            if profiler is None:
                return timed(name, consumer, len(records), timeout_s)
            profiler.enable()
            try:
                return timed(name, consumer, len(records), timeout_s)
            finally:
                profiler.disable()
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


def profile_monitor(name: str, n: int, top: int = 12) -> list[tuple[str, int, float]]:
    """One throughput run of the monitor called ``name`` under cProfile: (function, calls, share of own time)
    for the ``top`` functions by own time (its run only, group join included; waits show as the client's
    blocking calls)."""
    records = lean_records(n)
    prof = cProfile.Profile()
    throughput(name, records, profiler=prof)
    stats = pstats.Stats(prof)
    rows = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in rows.values()) or 1.0
    ranked = sorted(rows.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    out = []
    for (path, line, func), (_, calls, own, _, _) in ranked:
        where = f"{Path(path).name}:{line}" if line else "built-in"
        out.append((f"`{func}` ({where})", calls, own / total))
    return out


def report(n: int, rounds: int, rates: Sequence[float], duration_s: float, profile: bool = True) -> Report:
    """Print the side-by-side tables (Markdown) and return the figures."""
    print("\n### Side by side: raw clients, Quix Streams, the monitor on each client\n")
    config = workload.bench_config()
    missing = [m for m in CONSUMERS if not available(m)]
    print(
        f"{n:,} lean predictions (~130 bytes: `id`, 10 `probs`, `model`; none malformed, since the Quix app "
        "has no dead-letter path) pre-produced to a 4-partition topic of a fresh embedded broker for each "
        f"consumer; {rounds} round(s), every consumer once per round, interleaved; median of the rounds. "
        f"acks=all, at least once. Raw relays: per batch of up to {config.kafka.max_poll_records:,} "
        "records, produce each unchanged, flush, commit. Quix Streams app: parse, normalized entropy, route "
        "to one of two topics, its default checkpoint (flush and commit every 5 s). Monitor: the shipped "
        f"defaults with 10 classes (offsets committed at most every {config.kafka.commit_interval_s:g} s). "
        "Timed from the first polled record to the last one handled. CPU: cores busy, consumer / broker. "
        f"Versions: {versions()}.\n"
    )
    results = compare(n, rounds)
    by = {c.name: c for c in results}
    rows = []
    for m in CONSUMERS:
        if m not in by:
            rows.append([m, "—", "—", "not available yet", "—", "—"])
            continue
        c = by[m]
        own, broker = c.cores()
        runs = " / ".join(count(r.rate) for r in c.runs)
        rows.append(
            [
                m,
                count(c.runs[-1].items),
                count(c.outputs),
                f"**{count(c.rate)}**",
                runs,
                f"{own:.2f} / {broker:.2f}",
            ]
        )
    print(
        table(
            ["Consumer", "Inputs", "Records produced", "Items/s (median)", "Each round", "CPU cores"],
            rows,
            "lrrrrr",
        )
    )
    figures = Report(results, {}, [])
    lines = []
    for monitor, raw in ((SELECTOR_KAFKA_PYTHON, RAW), (SELECTOR_CONFLUENT, RAW_CONFLUENT)):
        if monitor in by and raw in by:
            lines.append(f"{monitor} / {raw}: **{percent(by[monitor].rate / by[raw].rate)}** (target ≥ 50%)")
        if monitor in by and QUIX in by:
            lines.append(f"{monitor} / {QUIX}: **{by[monitor].rate / by[QUIX].rate:.2f}x** (target > 1)")
    if missing:
        lines.append(f"not measured: {', '.join(missing)} (not available yet)")
    print("\n" + ";\n".join(lines) + ".")
    print(
        f"\n#### Latency over offered rates\n\nA load generator process offers lean predictions at each rate "
        f"for {duration_s:g} s (first {latency.WARMUP_S:g} s excluded), one consumer per fresh broker, all "
        "on the same 2 cores. *Routed*: from the prediction's send to its output record handed to the "
        "producer (the output's Kafka timestamp; Quix: its `routed_ms`), read back after the run, every "
        "routed item (the monitor's skips have none). *Delivered*: to the end of the batch that held it, "
        "acknowledged and committed (the Quix app confirms deliveries only at its checkpoint: not seen). "
        "Sustained: the backlog drained within 1 s of the last send. CPU: consumer / broker / load "
        "generator (the Quix app's own process is not counted).\n"
    )
    curves = curve(rates, duration_s)
    figures.curves.update(curves)
    rows = []
    for m, trials in curves.items():
        for t in trials:
            r50, r99 = latency.percentiles(t.produced_ms)
            d50, d99 = latency.percentiles(t.delivered_ms)
            delivered = "—" if m == QUIX else f"{d50:.0f} / {d99:.0f} ms"
            own = "—" if m == QUIX else f"{t.cpu_consumer:.2f}"
            rows.append(
                [
                    m,
                    count(t.offered),
                    count(t.achieved),
                    "yes" if t.sustained else "**no**",
                    f"{r50:.0f} / {r99:.0f} ms",
                    delivered,
                    f"{own} / {t.cpu_broker:.2f} / {t.cpu_load:.2f}",
                ]
            )
    print(
        table(
            [
                "Consumer",
                "Offered/s",
                "Sent/s",
                "Sustained",
                "Routed p50 / p99",
                "Delivered p50 / p99",
                "CPU",
            ],
            rows,
            "lrrlrrr",
        )
    )
    if profile:
        name = SELECTOR_CONFLUENT if available(SELECTOR_CONFLUENT) else SELECTOR_KAFKA_PYTHON
        print(
            f"\nWhere the time goes: {name}, one throughput run of {n:,} items under cProfile (own time):\n"
        )
        prof = profile_monitor(name, n)
        figures.profile.extend(prof)
        print(table(["Function", "Calls", "Share"], [[f, count(c), percent(s)] for f, c, s in prof], "lrr"))
    return figures


@dataclass
class Report:
    """The figures of one side-by-side run."""

    throughput: list[Compared]
    curves: dict[str, list[latency.Trial]]
    profile: list[tuple[str, int, float]]


def summary_rows(side: Report, offered: float) -> list[list[str]]:
    """Rows of the run's "against the design's figures" table."""
    by = {c.name: c for c in side.throughput}
    rows = []
    for monitor, raw in ((SELECTOR_KAFKA_PYTHON, RAW), (SELECTOR_CONFLUENT, RAW_CONFLUENT)):
        if monitor not in by or raw not in by:
            rows.append([f"End to end vs {raw}", "≥ 50%", "not available yet", "—"])
            continue
        ratio = by[monitor].rate / by[raw].rate
        rows.append([f"End to end vs {raw}", "≥ 50%", percent(ratio), "yes" if ratio >= 0.5 else "**no**"])
        if QUIX in by:
            ahead = by[monitor].rate / by[QUIX].rate
            rows.append([f"{monitor} vs {QUIX}", "ahead", f"{ahead:.2f}x", "yes" if ahead > 1 else "**no**"])
    for monitor in (SELECTOR_KAFKA_PYTHON, SELECTOR_CONFLUENT):
        trial = next((t for t in side.curves.get(monitor, []) if t.offered == offered), None)
        if trial is None:
            continue
        p99 = latency.percentiles(trial.delivered_ms, (99,))[0]
        ok = trial.sustained and p99 <= 100.0
        rows.append(
            [
                f"p99 delivered latency at {count(offered)} items/s, {monitor}",
                "≤ 100 ms",
                f"{p99:.0f} ms" + ("" if trial.sustained else " (not sustained)"),
                "yes" if ok else "**no**",
            ]
        )
    return rows
