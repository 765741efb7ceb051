"""Decode + decide + encode, the code of a base commit beside the working tree's, in one run.

``python bench/decode.py [--base COMMIT] [--items N] [--reps R] [--profile]``

The base commit's ``decode_batch`` and ``encode_outputs`` (with the helpers they import from
``selector/messages``) are read with ``git show`` into private modules at bench time, so both versions run in
the same process on the same records, their passes interleaved so that a busy machine slows both alike. Each
pass decodes, decides (``Router.decide`` + ``commit``, a fresh router per version) and encodes every item in
batches of 2,000; the table gives the median items per CPU second of each and their ratio. Three record shapes: the
simulated line's probability-only records (with ``model``, ``segment``, ``payload``, ``meta``), records with
a 128-number embedding, records with 10x10 MC-dropout samples.
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
import pstats
import statistics
import subprocess
import time
import types
from collections.abc import Callable
from typing import Any

import selector
from bench import core, measures, workload
from bench.markdown import count, table
from selector.config import Config
from selector.messages.outputs import encode_outputs
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
    args = parser.parse_args()
    old_decode, old_encode = base_functions(args.base)
    rows = []
    for name, (values, config) in shapes(args.items).items():
        raw = core.split(values, BATCH)
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
    if rows:
        print(
            f"Decode + decide + encode, batches of {BATCH:,}, {args.items:,} items, items per CPU second, median "
            f"of {args.reps} interleaved passes; base {args.base}.\n"
        )
        print(table(["Records", "Base items/s", "New items/s", "Ratio"], rows, "lrrr"))


if __name__ == "__main__":
    main()
