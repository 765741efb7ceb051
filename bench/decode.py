"""Decode + decide + encode, the code of a base commit beside the working tree's, in one run.

``python bench/decode.py [--base COMMIT] [--items N] [--reps R] [--no-freeze] [--profile | --parts]``

The base commit's ``decode_batch`` and ``encode_outputs`` (with the helpers they import from
``selector/messages``) are read with ``git show`` into private modules at bench time, so both versions run in
the same process on the same records, their passes interleaved so that a busy machine slows both alike. Each
pass decodes, decides (``Router.decide`` + ``commit``, a fresh router per version) and encodes every item in
batches of 2,000; the table gives the median items per CPU second of each and their ratio. Three record
shapes: the simulated line's probability-only records (with ``model``, ``segment``, ``payload``, ``meta``),
records with a 128-number embedding, records with 10x10 MC-dropout samples. ``--parts`` times each part alone
instead (CPU microseconds per item), with parsing alone (``orjson.loads`` with the collector paused, as the
decoder parses) as the floor no decoder can go below.

As the long-running commands do after start-up (connectors/cli/main.py), the process freezes what it holds
once the records are made (``gc.freeze()``), so that full collections do not rescan the imported modules;
``--no-freeze`` leaves that out. The new ``decode_batch`` pauses the collector itself and the monitor's batch
loop adds no pause of its own, so a pass does what the loop does.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ["OPENBLAS_NUM_THREADS"] = os.environ.get("OPENBLAS_NUM_THREADS", "1")
os.environ["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench` is not installed, run as a script

import argparse
import cProfile
import functools
import gc
import pstats
import statistics
import subprocess
import time
import types
from collections.abc import Callable
from typing import Any

import orjson

import selector
from bench import core, measures, workload
from bench.markdown import count, table
from selector.config import Config
from selector.messages.outputs import encode_outputs
from selector.messages.parsing import collector_paused
from selector.messages.prediction import decode_batch
from selector.messages.timestamps import rfc3339
from selector.routing import Router

REPO = Path(__file__).resolve().parents[1]
BASE = "5c84675"
"""The commit before the bulk decoder (issue 15)."""
BATCH = 2_000

Decode = Callable[..., Any]
Encode = Callable[..., Any]


def _module(name: str, commit: str, path: str, **inject: Any) -> types.ModuleType:
    """The file at ``commit`` as a private module; ``inject`` replaces its imports of the same names."""
    source = subprocess.run(
        ["git", "show", f"{commit}:{path}"], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout
    for alias in inject:
        source = source.replace(f"from selector.messages import {alias}\n", "\n")
    module = types.ModuleType(name)
    module.__dict__.update(inject)
    sys.modules[name] = module  # dataclasses look their module up while the source runs
    exec(compile(source, f"{commit}:{path}", "exec"), module.__dict__)  # the base commit of this repository
    return module


def base_functions(commit: str) -> tuple[Decode, Encode]:
    """``decode_batch`` and ``encode_outputs`` as they were at ``commit``."""
    fields = _module("_base_fields", commit, "selector/messages/fields.py")
    prediction = _module("_base_prediction", commit, "selector/messages/prediction.py", fields=fields)
    outputs = _module("_base_outputs", commit, "selector/messages/outputs.py")
    return prediction.decode_batch, outputs.encode_outputs


class Pass:
    """Decode + decide + encode of every batch with one version of the functions."""

    def __init__(self, config: Config, raw: list[core.RawBatch], decode: Decode, encode: Encode) -> None:
        self.config, self.raw, self.decode, self.encode = config, raw, decode, encode
        self.router = Router(config)
        self.clock = core.StreamClock()
        self.info = {"version": selector.__version__, "config_hash": config.config_hash()}

    def __call__(self) -> int:
        items = 0
        for values, ts in self.raw:
            batch = self.decode(values, ts, **self.config.decode_options())
            decisions = self.router.decide(0, batch, self.clock.batch_times(len(batch)))
            self.encode(batch, decisions, self.config.classes, rfc3339(self.clock.now), self.info)
            self.router.commit(0, decisions)
            items += len(batch)
        return items


def side_by_side(old: Pass, new: Pass, reps: int) -> tuple[float, float]:
    """Median items per CPU second of each, passes interleaved after one untimed pass each. CPU time of this
    process (one thread), not wall time: on a shared machine, waiting for a core is not the code's cost."""
    old()
    new()
    rates: dict[str, list[float]] = {"old": [], "new": []}
    for _ in range(reps):
        for name, one in (("old", old), ("new", new)):
            started = time.process_time()
            items = one()
            rates[name].append(items / (time.process_time() - started))
    return statistics.median(rates["old"]), statistics.median(rates["new"])


def cpu_us(one: Callable[[], object], items: int, reps: int) -> float:
    """Median CPU microseconds per item of ``one`` (after an untimed call)."""
    one()
    spent = []
    for _ in range(reps):
        started = time.process_time()
        one()
        spent.append(time.process_time() - started)
    return statistics.median(spent) / items * 1e6


def paused_loads(values: list[bytes]) -> list[Any]:
    """``orjson.loads`` of every record, the collector paused as ``decode_batch`` pauses it."""
    with collector_paused():
        return list(map(orjson.loads, values))


def parts(values: list[bytes], config: Config, old: tuple[Decode, Encode], reps: int) -> list[float]:
    """CPU us per item of: parsing alone (``orjson.loads``, the floor), base decode, new decode, decide +
    commit, base encode, new encode (both encode the new decoder's batches)."""
    raw = core.split(values, BATCH)
    opts = config.decode_options()
    batches = [decode_batch(v, ts, **opts) for v, ts in raw]
    router, clock = Router(config), core.StreamClock()
    decisions = [router.decide(0, b, clock.batch_times(len(b))) for b in batches]
    info = {"version": selector.__version__, "config_hash": config.config_hash()}
    n = sum(len(v) for v, _ in raw)

    def decide() -> None:
        router, clock = Router(config), core.StreamClock()
        for b in batches:
            router.commit(0, router.decide(0, b, clock.batch_times(len(b))))

    def encode(e: Encode) -> None:
        for b, d in zip(batches, decisions, strict=True):
            e(b, d, config.classes, "t", info)

    return [
        # one batch alive at a time, as in the monitor (the collector's work grows with what lives)
        cpu_us(lambda: [len(paused_loads(v)) for v, _ in raw], n, reps),
        cpu_us(lambda: [len(old[0](v, ts, **opts)) for v, ts in raw], n, reps),
        cpu_us(lambda: [len(decode_batch(v, ts, **opts)) for v, ts in raw], n, reps),
        cpu_us(decide, n, reps),
        *(cpu_us(functools.partial(encode, e), n, reps) for e in (old[1], encode_outputs)),
    ]


def shapes(items: int) -> dict[str, tuple[list[bytes], Config]]:
    """The three record shapes, each with the config that decides it."""
    line = [v for _, v in workload.predictions(items)]
    synthetic = measures.workload(items)
    return {
        "probabilities only (simulated line)": (line, workload.bench_config()),
        "128-number embedding": (measures.records(synthetic, "embedding"), measures.config()),
        "10x10 MC-dropout samples": (measures.records(synthetic, "samples"), measures.config()),
    }


def profile(one: Pass, top: int) -> None:
    profiler = cProfile.Profile()
    profiler.runcall(one)
    pstats.Stats(profiler).sort_stats("tottime").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=BASE, help="the commit to compare with")
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="print a cProfile of each version instead")
    parser.add_argument("--parts", action="store_true", help="CPU time of each part instead")
    parser.add_argument(
        "--no-freeze", action="store_true", help="do not gc.freeze() after making the records"
    )
    args = parser.parse_args()
    old_decode, old_encode = base_functions(args.base)
    rows = []
    workloads = shapes(args.items)
    if not args.no_freeze:
        gc.freeze()  # as `selector run` does after start-up
    for name, (values, config) in workloads.items():
        raw = core.split(values, BATCH)
        if args.parts:
            cells = parts(values, config, (old_decode, old_encode), args.reps)
            rows.append([name, *(f"{us:.1f}" for us in cells)])
            continue
        old = Pass(config, raw, old_decode, old_encode)
        new = Pass(config, raw, decode_batch, encode_outputs)
        if args.profile:
            for version, one in (("base", old), ("new", new)):
                print(f"\n## {name}: {version}\n")
                profile(one, 12)
            continue
        old_rate, new_rate = side_by_side(old, new, args.reps)
        rows.append([name, count(old_rate), count(new_rate), f"{new_rate / old_rate:.2f}x"])
        print(rows[-1], file=sys.stderr, flush=True)
    if rows and args.parts:
        print(f"CPU microseconds per item, batches of {BATCH:,}, median of {args.reps}; base {args.base}.\n")
        heads = ["Records", "Parse alone", "Base decode", "New decode", "Decide", "Base encode"]
        print(table([*heads, "New encode"], rows, "lrrrrrr"))
    elif rows:
        print(
            f"Decode + decide + encode, batches of {BATCH:,}, {args.items:,} items, items per CPU second, "
            f"median of {args.reps} interleaved passes; base {args.base}"
            f"{'' if args.no_freeze else ', start-up frozen (gc.freeze)'}.\n"
        )
        print(table(["Records", "Base items/s", "New items/s", "Ratio"], rows, "lrrr"))


if __name__ == "__main__":
    main()
