"""Throughput of the decision core in process: decide, decode + decide, decode + decide + encode.

Each stage runs the same calls the monitor makes for one polled batch, minus Kafka:

- **decide**: :meth:`Router.decide` + :meth:`Router.commit` on batches decoded beforehand (the ids, which the
  audit draw hashes, are part of the input): every score, the budget walk, the route, the counters;
- **decode + decide**: :func:`decode_batch` from the raw JSON bytes first;
- **decode + decide + encode**: and :func:`encode_outputs` builds the accepted and to-label records.

Time is :func:`time.perf_counter` around whole passes over a pool of items; a pass is repeated and the
median and best rates are reported (decide-only passes after an untimed warm-up pass). Decision times
follow a stream clock that advances at :data:`STREAM_ITEMS_PER_S`, so sliding-window caps see a realistic
time axis.
"""

from __future__ import annotations

import cProfile
import functools
import pstats
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import selector
from bench import workload
from selector.arrays import FloatArray
from selector.config import Config
from selector.draws import id_hashes
from selector.messages.outputs import encode_outputs
from selector.messages.prediction import Batch, decode_batch
from selector.messages.timestamps import rfc3339
from selector.routing import Router
from selector.scores import compute
from selector.scores.base import MEASURES

TARGET_ITEMS_PER_S = 1_000_000
"""The design's figure for the decision core (score + budget + route) on one core."""

STREAM_ITEMS_PER_S = 10_000.0
"""Items per second of stream time: the rate of the production line the decisions are timed against."""

STAGES = ("decide", "decode + decide", "decode + decide + encode")

RawBatch = tuple[list[bytes], np.ndarray[Any, Any]]


class StreamClock:
    """Decision times of consecutive batches: one time per batch (as the monitor uses), advancing per item."""

    def __init__(self, items_per_s: float = STREAM_ITEMS_PER_S, start: float = 1.7e9) -> None:
        self.items_per_s = items_per_s
        self.now = start

    def batch_times(self, n: int) -> FloatArray:
        t = np.full(n, self.now)
        self.now += n / self.items_per_s
        return t


@dataclass(frozen=True)
class Rate:
    """Items per second of repeated passes."""

    rates: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.rates)

    @property
    def best(self) -> float:
        return max(self.rates)


def repeat(one_pass: Callable[[], int], reps: int, warm_up: bool = True) -> Rate:
    """Run ``one_pass`` (which returns the items it handled) ``reps`` times, after an untimed one."""
    if warm_up:
        one_pass()
    rates = []
    for _ in range(reps):
        started = time.perf_counter()
        items = one_pass()
        rates.append(items / (time.perf_counter() - started))
    return Rate(rates)


class Pipeline:
    """One stage of the in-process pipeline over a pool of pre-split batches, with its own router."""

    def __init__(self, stage: str, config: Config, raw: Sequence[RawBatch], decoded: Sequence[Batch]) -> None:
        self.stage = stage
        self.config = config
        self.raw = raw
        self.decoded = decoded
        self.router = Router(config)
        self.clock = StreamClock()
        self.info = {"version": selector.__version__, "config_hash": config.config_hash()}

    def one_pass(self) -> int:
        cfg, router, clock = self.config, self.router, self.clock
        items = 0
        for k, (values, ts) in enumerate(self.raw):
            if self.stage == "decide":
                batch = self.decoded[k]
            else:
                batch = decode_batch(
                    values,
                    ts,
                    **cfg.decode_options(),
                )
            t = clock.batch_times(len(batch))
            decisions = router.decide(0, batch, t)
            if self.stage == "decode + decide + encode":
                encode_outputs(batch, decisions, cfg.classes, rfc3339(clock.now), self.info)
            router.commit(0, decisions)
            items += len(batch)
        return items


def split(values: list[bytes], batch: int) -> list[RawBatch]:
    """Raw values in batches, each with broker timestamps as the consumer would hand them over."""
    out = []
    for i in range(0, len(values) - batch + 1, batch):
        chunk = values[i : i + batch]
        out.append((chunk, np.full(len(chunk), 1_700_000_000_000, dtype=np.int64)))
    return out


def decode_all(raw: Sequence[RawBatch], config: Config) -> list[Batch]:
    return [decode_batch(v, ts, **config.decode_options()) for v, ts in raw]


@dataclass(frozen=True)
class StageResult:
    stage: str
    budget: str
    batch: int
    rate: Rate


def stages(values: list[bytes], batch_sizes: Sequence[int], reps: int) -> list[StageResult]:
    """Every stage at every batch size, for each budget scenario (decide only for the second scenario)."""
    configs = {name: workload.bench_config(budget) for name, budget in workload.BUDGETS.items()}
    out = []
    for batch in batch_sizes:
        raw = split(values, batch)
        decoded = decode_all(raw, configs["default caps"])  # the same for every budget
        for budget_name, config in configs.items():
            for stage in STAGES if budget_name == "default caps" else STAGES[:1]:
                # decoding is per-record Python work with nothing to warm up; deciding gets a warm-up pass
                rate = repeat(Pipeline(stage, config, raw, decoded).one_pass, reps, warm_up=stage == "decide")
                out.append(StageResult(stage, budget_name, batch, rate))
    return sorted(out, key=lambda r: (list(configs).index(r.budget), r.batch))


def _scored(measure: Callable[[FloatArray], FloatArray], probs: FloatArray) -> int:
    return len(measure(probs))


def components(values: list[bytes], reps: int) -> list[tuple[str, Rate]]:
    """Throughput of the parts of :meth:`Router.decide` on one batch of all of ``values`` (no caps).

    Only stable entry points are timed on their own (the scores and the per-id hash of the random draws);
    the budget controller and routing are the whole minus those, so the table survives changes inside it.
    """
    config = workload.bench_config(workload.BUDGETS["no caps"])
    batch = decode_all(split(values, len(values)), config)[0]
    probs, n = batch.probs, len(batch)
    out: list[tuple[str, Rate]] = []
    for name, measure in MEASURES.items():
        out.append((f"score: {name}", repeat(functools.partial(_scored, measure, probs), reps)))
    scores = repeat(lambda: n if compute(probs, list(MEASURES)) else 0, reps)
    out.append(("all scores (`compute`)", scores))
    hashes = repeat(lambda: len(id_hashes(batch.ids)), reps)
    out.append(("id hashes for the per-item draws", hashes))
    router = Router(config)
    clock = StreamClock()

    def decide() -> int:
        router.commit(0, router.decide(0, batch, clock.batch_times(n)))
        return n

    whole = repeat(decide, reps)
    rest_s = 1 / whole.median - 1 / scores.median - 1 / hashes.median
    out.append(("budget controller + routing + commit (the rest)", Rate([1 / rest_s if rest_s > 0 else 0.0])))
    out.append(("whole decide + commit", whole))
    return out


def profile(one_pass: Callable[[], int], top: int = 10) -> list[tuple[str, int, float]]:
    """(function, calls, share of own time) of the ``top`` functions by own time in one profiled pass."""
    profiler = cProfile.Profile()
    profiler.runcall(one_pass)
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values()) or 1.0
    ranked = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    rows = []
    for (file, line, func), (_cc, calls, own, _cum, _callers) in ranked:
        where = f"{Path(file).parent.name}/{Path(file).name}:{line}" if file != "~" else "built-in"
        rows.append((f"`{func}` ({where})", calls, own / total))
    return rows


def profile_pipeline(values: list[bytes], batch: int, stage: str) -> list[tuple[str, int, float]]:
    """Profile one pass of a stage (default caps)."""
    config = workload.bench_config(workload.BUDGETS["default caps"])
    raw = split(values, batch)
    decoded = decode_all(raw, config) if stage == "decide" else []
    return profile(Pipeline(stage, config, raw, decoded).one_pass)
