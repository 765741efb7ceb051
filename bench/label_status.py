"""The label loop's estimates at scale: ``python bench/label_status.py [--quick]``.

A dataset store on disk with 100,000 decisions sent for labeling (80% labeled, 3 model versions, 8 segments,
over three days) and a population of 200,000 predictions counted through
:meth:`connectors.labels.population.Population.ingest` in the loop's chunks of 20,000. Measured: the
counting rate (decode, calibrate, tally, one transaction per chunk), the rows the population table keeps,
and the time of what ``selector status`` and every status refresh of the label loop do:
:func:`label_status` (the whole store read, every scope by every method), the text report, the JSON of
``/api/status`` and one scrape of the collector. Prints a Markdown table.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench` is not installed, run as a script

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np
import orjson
from kafka.consumer.fetcher import ConsumerRecord
from prometheus_client import CollectorRegistry, generate_latest

from bench.markdown import count, ms, table
from connectors.labels.loop import LabelLoop
from connectors.labels.metrics import LabelLoopCollector
from connectors.labels.population import Population
from connectors.labels.report import render
from connectors.labels.status import label_status
from connectors.model.dataset import DatasetStore
from selector.config import Config, parse_config
from selector.messages.timestamps import rfc3339
from selector.quality.labels import LabelEvent

CLASSES = ["ok", "scratch", "dent", "crack"]
END = 1_795_000_000.0
SPAN_S = 3 * 86400.0
MODELS = ("v1", "v2", "v3")
SEGMENTS = tuple(f"line-{k}" for k in range(8))


def timed(fn: Callable[[], object], repeat: int = 3) -> float:
    """Median wall time of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def fill(store: DatasetStore, decisions: int, rng: np.random.Generator) -> None:
    probs = rng.dirichlet([20.0, 1.0, 1.0, 1.0], decisions)
    truth = (np.cumsum(probs, axis=1) < rng.random(decisions)[:, None]).sum(axis=1).clip(0, 3)
    ts = np.sort(END - rng.uniform(0, SPAN_S, decisions))
    at = {k: rfc3339(float(np.floor(t))) for k, t in enumerate(ts)}
    store.add_decisions(
        {"id": f"d-{k}", "route": "query", "predicted": CLASSES[int(probs[k].argmax())],
         "probs": probs[k].tolist(), "embedding": None, "query_probability": float(rng.uniform(0.01, 0.5)),
         "model": MODELS[k % 3], "segment": SEGMENTS[k % 8], "decided_at": at[k], "accept_eligible": False}
        for k in range(decisions)
    )  # fmt: skip
    labeled = np.flatnonzero(rng.random(decisions) < 0.8)
    store.add_labels(LabelEvent(f"d-{k}", CLASSES[int(truth[k])], "ann", float(ts[k]) + 60) for k in labeled)


def predictions(n: int, rng: np.random.Generator) -> list[ConsumerRecord]:
    probs = rng.dirichlet([20.0, 1.0, 1.0, 1.0], n)
    ts = np.sort(END - rng.uniform(0, SPAN_S, n))
    return [
        ConsumerRecord("predictions", k % 4, -1, k // 4, 0, 0, None,
                       orjson.dumps({"id": f"p-{k}", "probs": probs[k].tolist(), "ts": int(ts[k] * 1000),
                                     "model": MODELS[k % 3], "segment": SEGMENTS[k % 8]}),
                       [], None, -1, -1, -1)
        for k in range(n)
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 decisions and 50,000 predictions")
    args = parser.parse_args()
    decisions, items = (20_000, 50_000) if args.quick else (100_000, 200_000)
    rng = np.random.default_rng(0)
    cfg: Config = parse_config({"classes": CLASSES, "kafka": {"bootstrap_servers": "127.0.0.1:9"}})
    with tempfile.TemporaryDirectory() as tmp:
        store = DatasetStore(Path(tmp) / "d.sqlite")
        fill(store, decisions, rng)
        population = Population(store, cfg)
        records = predictions(items, rng)
        t = time.perf_counter()
        for start in range(0, items, 20_000):
            population.ingest(records[start : start + 20_000], now=END)
        counting = time.perf_counter() - t
        rows = len(population.cells())
        status = label_status(store, cfg, now=END)
        loop = LabelLoop(cfg, "127.0.0.1:9", store, clock=lambda: END)
        registry = CollectorRegistry()
        registry.register(LabelLoopCollector(loop))
        figures = [
            ("population counted", f"{count(items / counting)} predictions/s"),
            ("population table rows", count(rows)),
            ("label_status (whole store, every scope)", ms(timed(lambda: label_status(store, cfg, now=END)))),
            ("render (selector status text)", ms(timed(lambda: render(status)))),
            ("as_dict + JSON (/api/status)", ms(timed(lambda: json.dumps(status.as_dict())))),
            ("one scrape of the collector", ms(timed(lambda: generate_latest(registry)))),
        ]
        store.close()
    print(f"{count(decisions)} decisions (80% labeled), {count(items)} predictions, {len(MODELS)} models, "
          f"{len(SEGMENTS)} segments, 3 days\n")  # fmt: skip
    print(table(["what", "figure"], figures, "lr"))


if __name__ == "__main__":
    main()
