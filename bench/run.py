"""Print the performance tables of README.md: ``python bench/run.py [--quick] [--only SECTION ...]``.

Sections, in order: the machine, the decision core in process, memory over a long stream, end-to-end
throughput through the embedded broker (selector against raw kafka-python), and decision latency at a fixed
offered load. Everything prints as Markdown; the full run takes about three minutes, ``--quick`` well under a
minute (smaller sizes, fewer repetitions).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# One BLAS/OpenMP thread, set before numpy is first imported: the core's figure is "on one core".
os.environ["OPENBLAS_NUM_THREADS"] = os.environ.get("OPENBLAS_NUM_THREADS", "1")
os.environ["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS", "1")
os.environ["MKL_NUM_THREADS"] = os.environ.get("MKL_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench` is not installed, run as a script

import argparse
import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

from bench import core, e2e, latency, machine, memory, workload
from bench.markdown import count, mib, percent, table

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("core", "memory", "e2e", "latency")
OFFERED_RATE = 10_000.0
"""Items per second offered in the latency section (the design's figure: p99 <= 100 ms at this rate)."""


@dataclass(frozen=True)
class Plan:
    """Sizes of one benchmark run."""

    pool: int
    batch_sizes: tuple[int, ...]
    reps: int
    memory_items: int
    e2e_items: int
    latency_s: float
    latency_rates: tuple[float, ...]
    latency_fallback: bool

    @classmethod
    def full(cls) -> Plan:
        return cls(200_000, (2_000, 100_000), 5, 10_000_000, 100_000, 10.0, (OFFERED_RATE, 2_000.0), True)

    @classmethod
    def quick(cls) -> Plan:
        return cls(100_000, (2_000, 100_000), 2, 1_000_000, 20_000, 3.0, (OFFERED_RATE,), False)


@contextlib.contextmanager
def one_core() -> Iterator[str]:
    """Pin this process to one CPU while in-process sections run (restored afterwards)."""
    if not hasattr(os, "sched_setaffinity"):
        yield "not pinned (no sched_setaffinity on this OS)"
        return
    before = os.sched_getaffinity(0)
    cpu = min(before)
    os.sched_setaffinity(0, {cpu})
    try:
        yield f"pinned to CPU {cpu} with sched_setaffinity"
    finally:
        os.sched_setaffinity(0, before)


@contextlib.contextmanager
def timed_section(name: str) -> Iterator[None]:
    """Report a section's wall time on stderr (stdout stays pure Markdown)."""
    started = time.perf_counter()
    yield
    sys.stdout.flush()
    print(f"[bench] {name}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)


def section_machine() -> None:
    print("## Performance\n")
    print("Measured by `make bench` (`python bench/run.py`) on:\n")
    print(table(["", ""], machine.describe(REPO)))


def section_core(plan: Plan, pinned: str) -> list[core.StageResult]:
    print("\n### Decision core, in process (10 classes)\n")
    values = [v for _, v in workload.predictions(plan.pool)]
    results = core.stages(values, plan.batch_sizes, plan.reps)
    print(
        f"{plan.pool:,} simulated predictions per pass, median and best of {plan.reps} passes (decide: "
        f'after a warm-up pass); one thread, {pinned}. Budget "default caps": rate 2%, audit 0.2%, at most '
        "1,000 labels per hour; "
        f"decision times advance at {core.STREAM_ITEMS_PER_S:,.0f} items/s of stream time.\n"
    )
    rows = []
    for r in results:
        target = "—"
        if r.stage == "decide":
            target = "yes" if r.rate.median >= core.TARGET_ITEMS_PER_S else "**no**"
        rows.append(
            [
                r.stage,
                r.budget,
                count(r.batch),
                count(r.rate.median),
                count(r.rate.best),
                f"{1e6 / r.rate.median:.2f}",
                target,
            ]
        )
    print(
        table(
            ["Stage", "Budget", "Batch", "Items/s (median)", "Items/s (best)", "µs/item", "≥ 1,000,000/s"],
            rows,
            "llrrrrl",
        )
    )
    big = max(plan.batch_sizes)
    print(
        f"\nInside `Router.decide`, one batch of {big:,} (no caps), median of {plan.reps}; the controller's "
        "share is the whole minus the parts timed alone:\n"
    )
    parts = core.components(values[:big], plan.reps)
    print(
        table(
            ["Part", "Items/s", "ns/item"],
            [[name, count(r.median), f"{1e9 / r.median:.0f}"] for name, r in parts],
            "lrr",
        )
    )
    small = min(plan.batch_sizes)
    slow_decide = [r for r in results if r.stage == "decide" and r.rate.median < core.TARGET_ITEMS_PER_S]
    to_profile = [("decide", small)] if slow_decide else []
    to_profile.append(("decode + decide + encode", small))
    for stage, batch in to_profile:
        print(f"\nWhere the time goes: {stage}, batch {batch:,}, one pass under cProfile (own time):\n")
        prof = core.profile_pipeline(values, batch, stage)
        print(table(["Function", "Calls", "Share"], [[f, count(c), percent(s)] for f, c, s in prof], "lrr"))
    return results


def section_memory(plan: Plan) -> memory.MemoryResult:
    print("\n### Memory over a long stream\n")
    res = memory.run_isolated(plan.memory_items)
    growth = res.rss_end - res.rss_tenth
    print(
        f"{res.items:,} items decided in batches of {res.batch:,} (one decoded batch reused; decode "
        f"excluded), default caps, stream clock at {core.STREAM_ITEMS_PER_S:,.0f} items/s, in a fresh "
        "interpreter (so earlier sections do not blur it). RSS from `/proc/self/status`.\n"
    )
    print(
        table(
            ["Measure", "Value"],
            [
                ["RSS after warm-up batch", mib(res.rss_start)],
                [f"RSS after {res.items // 10:,} items", mib(res.rss_tenth)],
                [f"RSS after {res.items:,} items", mib(res.rss_end)],
                ["Growth over the last 90% of items", mib(growth)],
                ["Growth over the whole run", mib(res.rss_end - res.rss_start)],
                ["Highest sampled RSS during the run", mib(res.rss_max_sampled)],
                ["Peak RSS (`VmHWM`, set-up included)", mib(res.peak_rss)],
                ["Partition state snapshot after warm-up (JSON)", f"{res.state_start / 1024:.1f} KiB"],
                [f"Partition state snapshot after {res.items:,} items", f"{res.state_end / 1024:.1f} KiB"],
            ],
            "lr",
        )
    )
    return res


def section_e2e(plan: Plan) -> tuple[e2e.Throughput, e2e.Throughput]:
    print("\n### End to end through the broker\n")
    records = workload.predictions(plan.e2e_items, seed=2, malformed_rate=workload.MALFORMED_RATE)
    raw = e2e.throughput(e2e.RAW, records)
    sel = e2e.throughput(e2e.SELECTOR, records)
    config = workload.bench_config()
    print(
        f"{len(records):,} pre-produced predictions ({workload.MALFORMED_RATE:.1%} malformed) in a "
        "4-partition topic of a fresh embedded broker for each consumer; one consumer-group member with the "
        f"monitor's client settings (max_poll_records {config.kafka.max_poll_records}, acks=all, "
        f"linger_ms {config.kafka.linger_ms}). Timed from the first polled record to the last one handled; "
        "the group join is excluded. CPU: cores busy over that time, the consumer's process / the broker.\n"
    )
    rows = [
        [
            t.name,
            count(t.items),
            count(t.outputs),
            f"{t.seconds:.2f} s",
            count(t.rate),
            f"{t.join_s:.1f} s",
            f"{t.cpu.cores(t.cpu.own):.2f} / {t.cpu.cores(t.cpu.broker):.2f}",
        ]
        for t in (raw, sel)
    ]
    print(
        table(
            ["Consumer", "Inputs", "Records produced", "Time", "Items/s", "Join (excluded)", "CPU cores"],
            rows,
            "lrrrrrr",
        )
    )
    print(
        f"\nSelector / raw: **{percent(sel.rate / raw.rate)}** (target ≥ 50%). Raw produces one record per "
        "input and commits every batch; the selector produces one per accepted, queried, audited or "
        "dead-lettered input (skips produce none) and commits offsets at most every "
        f"{config.kafka.commit_interval_s:g} s."
    )
    return raw, sel


def section_latency(plan: Plan) -> list[latency.Trial]:
    print("\n### Decision latency at a fixed offered load\n")
    rates, fallback = plan.latency_rates, plan.latency_fallback
    trials, _, _ = latency.measure(e2e.RAW, rates, plan.latency_s, fallback)
    sel, expected, read = latency.measure(e2e.SELECTOR, rates, plan.latency_s, fallback)
    trials += sel
    print(
        f"A producer process sends predictions at a steady rate for {plan.latency_s:g} s per trial "
        f"(first {latency.WARMUP_S:g} s excluded) to a consumer in this process: the raw kafka-python "
        "consume-and-produce loop, then the monitor, each on a fresh broker. Latencies are from the send "
        "time. *Delivered*: the item's polled batch was acknowledged (and its decisions committed); "
        "*produced*: the monitor handed the item's routed record to its producer "
        f"({read:,} of {expected:,} routed records read back; skips have none). CPU is cores busy during "
        "the trial: consumer process / broker / load generator, all on the same machine.\n"
    )
    rows = []
    for t in trials:
        d50, d99, dmax = latency.percentiles(t.delivered_ms, (50, 99, 100))
        p50, p99 = latency.percentiles(t.produced_ms)
        produced = "—" if t.produced_ms is None else f"{p50:.1f} / {p99:.1f} ms"
        rows.append(
            [
                t.consumer,
                count(t.offered),
                count(t.achieved),
                "yes" if t.sustained else "**no**",
                f"{t.drain_s:.2f} s",
                f"{d50:.1f} / {d99:.1f} / {dmax:.0f} ms",
                produced,
                f"{t.cpu_consumer:.2f} / {t.cpu_broker:.2f} / {t.cpu_load:.2f}",
            ]
        )
    print(
        table(
            [
                "Consumer",
                "Offered items/s",
                "Sent items/s",
                "Sustained",
                "Backlog drain",
                "Delivered p50 / p99 / max",
                "Produced p50 / p99",
                "CPU cores",
            ],
            rows,
            "lrrlrrrr",
        )
    )
    return trials


def section_summary(
    results: list[core.StageResult] | None,
    mem: memory.MemoryResult | None,
    through: tuple[e2e.Throughput, e2e.Throughput] | None,
    trials: list[latency.Trial] | None,
) -> None:
    print("\n### Against the design's figures\n")
    rows = []
    if results:
        decide = min(r.rate.median for r in results if r.stage == "decide")
        met = decide >= core.TARGET_ITEMS_PER_S
        rows.append(
            [
                "Decision core, one core, 10 classes",
                "≥ 1,000,000 items/s",
                f"{count(decide)} items/s (slowest decide row)",
                "yes" if met else "**no**",
            ]
        )
    if mem:
        growth = mem.rss_end - mem.rss_tenth
        rows.append(
            [
                "Memory over a long stream",
                "flat",
                f"{mib(growth)} over {mem.items * 9 // 10:,} items",
                "yes" if growth < 2**20 else "**no**",
            ]
        )
    if through:
        raw, sel = through
        ratio = sel.rate / raw.rate
        rows.append(
            ["End to end vs raw kafka-python", "≥ 50%", percent(ratio), "yes" if ratio >= 0.5 else "**no**"]
        )
    if trials:
        mine = [t for t in trials if t.consumer == "selector monitor"]
        t = next((t for t in mine if t.offered == OFFERED_RATE), mine[0])
        p99 = latency.percentiles(t.delivered_ms, (99,))[0]
        ok = t.sustained and p99 <= 100.0 and t.offered >= OFFERED_RATE
        rows.append(
            [
                "p99 decision latency (delivered) at 10,000 items/s",
                "≤ 100 ms",
                f"{p99:.1f} ms at {count(t.offered)} items/s offered"
                + ("" if t.sustained else " (not sustained)"),
                "yes" if ok else "**no**",
            ]
        )
    print(table(["Figure", "Target", "Measured", "Met"], rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repetitions (~40 s)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    logging.getLogger("kafka").setLevel(logging.ERROR)  # slow-task notices of its I/O thread, not results
    plan = Plan.quick() if args.quick else Plan.full()
    chosen = set(args.only or SECTIONS)
    started = time.perf_counter()
    section_machine()
    results = mem = through = trials = None
    with one_core() as pinned:
        if "core" in chosen:
            with timed_section("core"):
                results = section_core(plan, pinned)
        if "memory" in chosen:
            with timed_section("memory"):
                mem = section_memory(plan)
    if "e2e" in chosen:
        with timed_section("e2e"):
            through = section_e2e(plan)
    if "latency" in chosen:
        with timed_section("latency"):
            trials = section_latency(plan)
    section_summary(results, mem, through, trials)
    mode = "--quick" if args.quick else "full"
    print(f"\n_Benchmark ({mode}) took {time.perf_counter() - started:.0f} s._")
    return 0


if __name__ == "__main__":
    sys.exit(main())
