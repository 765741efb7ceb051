"""Memory over a long stream: resident set size while the router decides millions of items in process.

One batch of 100,000 simulated predictions is decided again and again (decode is excluded, the arrays are
reused), with the stream clock advancing, so everything that could accumulate per item (budget state, cap
ledgers, score windows, pending labels, counters) gets the chance to. RSS is read from
``/proc/self/status`` (``VmRSS``, peak ``VmHWM``).
"""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bench import workload
from bench.core import StreamClock
from connectors.demo.simulate import simulate_probs
from selector.messages.prediction import Batch
from selector.routing import Router


def rss_bytes(field: str = "VmRSS") -> int:
    """Resident set size of this process now (``VmHWM``: its peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


@dataclass(frozen=True)
class MemoryResult:
    items: int
    batch: int
    rss_start: int
    """after one warm-up batch"""
    rss_tenth: int
    """after the first tenth of the items"""
    rss_end: int
    rss_max_sampled: int
    peak_rss: int
    """the peak RSS of the process (``VmHWM``), set-up included"""
    state_start: int
    state_end: int
    """size of the partition's state snapshot (JSON bytes, as persisted) after warm-up and at the end"""


def run_isolated(items: int, batch: int = 100_000) -> MemoryResult:
    """:func:`run` in a fresh interpreter, so earlier sections' memory does not blur the figures."""
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(run, items, batch).result()


def run(items: int, batch: int = 100_000) -> MemoryResult:
    """Decide ``items`` items (a multiple of ``batch``) with the default budget and report RSS."""
    config = workload.bench_config(workload.BUDGETS["default caps"])
    _truth, probs = simulate_probs(np.random.default_rng(1), batch, len(config.classes))
    nothing: list[Any] = [None] * batch
    ids = [f"item-{i:09d}" for i in range(batch)]
    decoded = Batch(np.arange(batch), ids, probs, np.zeros(batch), nothing, nothing, nothing, nothing)
    router = Router(config)
    clock = StreamClock()
    router.commit(0, router.decide(0, decoded, clock.batch_times(batch)))
    state_start = len(orjson.dumps(router.state(0).to_dict(), option=orjson.OPT_SERIALIZE_NUMPY))
    start = rss_bytes()
    batches = items // batch
    tenth = start
    high = start
    for k in range(batches):
        router.commit(0, router.decide(0, decoded, clock.batch_times(batch)))
        if k % 10 == 9:
            high = max(high, rss_bytes())
        if k + 1 == max(1, batches // 10):
            tenth = rss_bytes()
    end = rss_bytes()
    state_end = len(orjson.dumps(router.state(0).to_dict(), option=orjson.OPT_SERIALIZE_NUMPY))
    return MemoryResult(
        items=batches * batch,
        batch=batch,
        rss_start=start,
        rss_tenth=tenth,
        rss_end=end,
        rss_max_sampled=max(high, end),
        peak_rss=rss_bytes("VmHWM"),
        state_start=state_start,
        state_end=state_end,
    )
