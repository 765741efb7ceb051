"""Print the tables of docs/performance.md: ``python bench/run.py [--quick] [--only SECTION ...]``.

Sections, in order: the machine, the decision core in process, memory over a long stream, budget control on
synthetic score streams (our controllers beside scikit-activeml's budget managers), end-to-end throughput
through the embedded broker (selector against raw kafka-python), decision latency at a fixed offered load,
side by side with the raw clients and Quix Streams (``bench/clients.py``: throughput and a latency curve), and
the coverage of the estimates' intervals (``bench/estimates.py``).
Everything prints as Markdown; the full run takes about eight minutes, ``--quick`` about two (smaller sizes,
fewer repetitions).
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
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

from bench import budget, clients, core, e2e, estimates, latency, machine, measures, memory, model, workload
from bench.markdown import count, mib, percent, signed_percent, table

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("core", "measures", "memory", "budget", "e2e", "latency", "clients", "model", "estimates")
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
    budget_items: int
    measure_items: int
    serve_items: int
    clients_items: int = 100_000
    """side by side (bench/clients.py): records per throughput run"""
    clients_rounds: int = 3
    clients_rates: tuple[float, ...] = (1_000.0, 3_000.0, OFFERED_RATE, 30_000.0)
    clients_s: float = 5.0

    @classmethod
    def full(cls) -> Plan:
        return cls(
            200_000,
            (2_000, 100_000),
            5,
            10_000_000,
            100_000,
            10.0,
            (OFFERED_RATE, 2_000.0),
            True,
            100_000,
            20_000,
            50_000,
        )

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            100_000,
            (2_000, 100_000),
            2,
            1_000_000,
            20_000,
            3.0,
            (OFFERED_RATE,),
            False,
            20_000,
            4_000,
            10_000,
            clients_items=20_000,
            clients_rounds=1,
            clients_s=3.0,
        )


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
    print("## Benchmark run\n")
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


def section_measures(plan: Plan, pinned: str) -> None:
    print("\n### Informativeness measures (10 classes, T = K = 10, 128-number embeddings)\n")
    batch = 2_000
    rows = measures.measure_rows(plan.measure_items, batch, plan.reps)
    print(
        f"{plan.measure_items:,} items, median of {plan.reps} passes, one thread, {pinned}. *Alone*: the "
        "measure's function over all items at once (density against a full reservoir of 128, novelty against "
        f"a full core-set of 256). *Decide*: `Router.decide` + `commit` in batches of {batch:,} (every "
        "score, the scoring memory, controller and routes) at a 2% budget. *Decode + decide*: from JSON "
        "records "
        "that carry the fields read.\n"
    )
    print(
        table(
            ["Scoring", "Reads", "Alone, items/s", "Decide, items/s", "Decode + decide, items/s"],
            [
                [r.name, r.reads, count(r.alone) if r.alone else "—", count(r.decide), count(r.decode_decide)]
                for r in rows
            ],
            "llrrr",
        )
    )


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


def _overshoot(r: budget.RateResult, window: int) -> str:
    return f"{r.overshoot[window]:+.0f} ({signed_percent(r.relative_overshoot(window), 0)})"


def section_budget(plan: Plan, pinned: str) -> tuple[list[budget.RateResult], list[budget.CapResult]]:
    print("\n### Budget control on synthetic score streams\n")
    results, missing = budget.measure_rates(plan.budget_items)
    caps = budget.measure_caps(plan.budget_items)
    windows = " and ".join(f"{w:,}" for w in budget.WINDOWS)
    print(
        f"{plan.budget_items:,} items per stream (seeded), {budget.ITEMS_PER_S:g} items/s of stream time; "
        "the same informativeness scores go to every budget manager. Ours: `decide` in batches of "
        f"{budget.BATCH:,} with the shipped controller defaults, no audits, no caps, nothing auto-accepted. "
        "scikit-activeml's: `query_by_utility` then `update` one item at a time, as its stream strategies "
        "drive them, default parameters (`w` 100); the EstimatedBudgetZliobaite gate is its budget estimate "
        "alone, querying an item above the budget while `u_t / w` < budget (the class is abstract). "
        "Bernoulli(r) labels each item with probability r (the same draws for every stream): how far "
        "windows stray by chance. *Error*: realized / target - 1, over the whole stream and over its second "
        "half (after the drift, the burst after the gap). *Worst over W*: the most labels in any W "
        "consecutive items minus r W "
        f"(W = {windows}), in labels and relative to r W. Decisions/s: deciding only, one thread, {pinned}.\n"
    )
    if missing:
        print(f"_scikit-activeml's managers are left out: {missing}; `make bench` installs them._\n")
    names = list(dict.fromkeys(r.contender for r in results))
    rates = sorted({r.rate for r in results})
    for rate in rates:
        print(f"\n#### Budget {100 * rate:g}%\n")
        rows = [
            [
                budget.SCENARIOS[r.scenario],
                r.contender,
                count(r.labels),
                f"{100 * r.realized:.3f}%",
                signed_percent(r.error),
                signed_percent(r.second_half_error),
                *(_overshoot(r, w) for w in budget.WINDOWS),
                "—" if r.contender == budget.REFERENCE else count(r.decisions_per_s),
            ]
            for r in results
            if r.rate == rate
        ]
        print(
            table(
                [
                    "Scenario",
                    "Budget manager",
                    "Labels",
                    "Realized",
                    "Error",
                    "2nd half",
                    *(f"Worst over {w:,}" for w in budget.WINDOWS),
                    "Decisions/s",
                ],
                rows,
                "llrrrr" + "r" * len(budget.WINDOWS) + "r",
            )
        )
    cells = len(budget.SCENARIOS) * len(rates)
    print(f"\n#### Summary over the {cells} streams x budgets\n")
    rows = []
    for name in names:
        mine = [r for r in results if r.contender == name]
        within = sum(1 for r in mine if abs(r.error) <= budget.TARGET_ERROR)
        worst = max(mine, key=lambda r: abs(r.error))
        big = max(budget.WINDOWS)
        per_rate = [max(r.relative_overshoot(big) for r in mine if r.rate == rate) for rate in rates]
        speeds = sorted(r.decisions_per_s for r in mine)
        speed = (
            "—"
            if name == budget.REFERENCE
            else f"{count(speeds[len(speeds) // 2])} ({count(speeds[0])}-{count(speeds[-1])})"
        )
        honest = [r.inclusion_error for r in mine if not math.isnan(r.inclusion_error)]
        rows.append(
            [
                name,
                f"{within} / {len(mine)}",
                f"{signed_percent(worst.error)} ({budget.SCENARIOS[worst.scenario]}, {100 * worst.rate:g}%)",
                " / ".join(signed_percent(x, 0) for x in per_rate),
                signed_percent(max(honest, key=abs)) if honest else "—",
                speed,
            ]
        )
    print(
        table(
            [
                "Budget manager",
                "Within ±2%",
                "Largest error",
                f"Worst over {max(budget.WINDOWS):,} items at " + " / ".join(f"{100 * r:g}%" for r in rates),
                "Σ query_probability / labels - 1, largest",
                "Decisions/s, median (range)",
            ],
            rows,
            "lrrrrr",
        )
    )
    cap_text = ", ".join(f"{c:,} per {h}" for h, c in budget.CAPS.items())
    hour_items = 3600 * budget.ITEMS_PER_S
    short = (
        f" (these streams last less than an hour, {plan.budget_items / budget.ITEMS_PER_S:,.0f} s, so it "
        "cannot bind here)"
        if plan.budget_items < hour_items
        else ""
    )
    print(
        f"\n#### Hard caps\n\nThe same streams at {100 * budget.CAP_RATE:g}% with caps of {cap_text} "
        f"(sliding windows of stream time). At {budget.ITEMS_PER_S:g} items/s an hour is {hour_items:,.0f} "
        f"items, so the hourly cap holds the rate to at most {100 * budget.CAP_CEILING:.2f}% over any hour"
        f"{short}; scenario (e) squeezes half the stream into {budget.BURST_S:g} s after the gap. *Most in "
        "one ...*: the most labels in any sliding window of that length of stream time. scikit-activeml's "
        "managers have no caps.\n"
    )
    rows = [
        [
            budget.SCENARIOS[c.scenario],
            c.contender,
            count(c.labels),
            f"{100 * c.realized:.3f}%",
            *(f"{c.most[h]:,} / {cap:,}" for h, cap in budget.CAPS.items()),
            str(c.violations) if c.violations == 0 else f"**{c.violations}**",
        ]
        for c in caps
    ]
    print(
        table(
            [
                "Scenario",
                "Controller",
                "Labels",
                "Realized",
                *(f"Most in one {h} / cap" for h in budget.CAPS),
                "Horizons over cap",
            ],
            rows,
            "llrr" + "r" * len(budget.CAPS) + "r",
        )
    )
    return results, caps


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
    budgets: tuple[list[budget.RateResult], list[budget.CapResult]] | None = None,
    side: clients.Report | None = None,
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
    if budgets:
        rates, caps = budgets
        ours = [r for r in rates if r.contender == "selector quantile"]
        worst = max(ours, key=lambda r: abs(r.error))
        met = all(abs(r.error) <= budget.TARGET_ERROR for r in ours)
        rows.append(
            [
                "Budget: realized rate, scenarios (a)-(e), "
                + " / ".join(f"{100 * r:g}%" for r in sorted({r.rate for r in ours})),
                "within ±2%",
                f"worst {signed_percent(worst.error)} ({budget.SCENARIOS[worst.scenario]}, "
                f"{100 * worst.rate:g}%, {worst.items:,} items)",
                "yes" if met else "**no**",
            ]
        )
        over = sum(c.violations for c in caps)
        rows.append(
            [
                "Budget: hard caps (minute, hour), scenarios (a)-(e)",
                "0 violations",
                f"{over} horizons over cap in {len(caps)} runs",
                "yes" if over == 0 else "**no**",
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
    if side:
        rows += clients.summary_rows(side, OFFERED_RATE)
    print(table(["Figure", "Target", "Measured", "Met"], rows))


def section_model(plan: Plan) -> None:
    import torch  # noqa: PLC0415 (this section only)

    from connectors.model.trainer import TrainSettings  # noqa: PLC0415

    print("\n### Inference connector and retraining\n")
    settings = TrainSettings()
    data = model.model_bytes(settings)
    batches = (1, 16, 64, 256, 1024)
    rows = model.inference_rows(data, plan.serve_items // 5, batches, plan.reps)
    print(
        f"The exported deep ensemble ({settings.members} members x {settings.hidden} hidden units, "
        f"{len(model.CLASSES)} classes, {model.DIM}-number features: the demo's model), onnxruntime on "
        f"the CPU provider with its default threads. *Model*: `predict` on ready arrays. *Connector*: "
        f"decode the JSON feature records, score, encode the prediction records (probabilities, the "
        f"{settings.members} members' rows as `committee`, the embedding). "
        f"{plan.serve_items // 5:,} items, median of {plan.reps}.\n"
    )
    print(
        table(
            ["Batch", "Model, items/s", "Connector, items/s"],
            [[count(r.batch), count(r.alone), count(r.connector)] for r in rows],
            "rrr",
        )
    )
    through = model.serve_through_broker(data, plan.serve_items, batch_size=256)
    print(
        f"\nThrough the embedded broker (`ModelServer`, batches of 256, {plan.serve_items:,} pre-produced "
        f"feature records, from its first prediction to its last, acks=all): **{count(through.rate)} "
        f"items/s**.\n"
    )
    timing = model.retrain_timing(10_000, settings)
    print(
        table(
            ["Examples", "torch threads", "train_ensemble", "retrain (split, train, export, parity, gate)"],
            [
                [
                    count(timing.examples),
                    str(torch.get_num_threads()),
                    f"{timing.train_s:.1f} s",
                    f"{timing.retrain_s:.1f} s ({timing.holdout:,} held out)",
                ]
            ],
            "rrrr",
        )
    )
    print(
        f"\nDefault settings: {settings.members} members, {settings.hidden} hidden units, {settings.epochs} "
        f"epochs of Adam in batches of {settings.batch_size}, all members in one batched computation."
    )


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
    results = mem = through = trials = budgets = side = None
    with one_core() as pinned:
        if "core" in chosen:
            with timed_section("core"):
                results = section_core(plan, pinned)
        if "measures" in chosen:
            with timed_section("measures"):
                section_measures(plan, pinned)
        if "memory" in chosen:
            with timed_section("memory"):
                mem = section_memory(plan)
        if "budget" in chosen:
            with timed_section("budget"):
                budgets = section_budget(plan, pinned)
    if "e2e" in chosen:
        with timed_section("e2e"):
            through = section_e2e(plan)
    if "latency" in chosen:
        with timed_section("latency"):
            trials = section_latency(plan)
    if "clients" in chosen:
        with timed_section("clients"):
            side = clients.report(plan.clients_items, plan.clients_rounds, plan.clients_rates, plan.clients_s)
    if "model" in chosen:
        with timed_section("model"):
            section_model(plan)
    if "estimates" in chosen:
        with timed_section("estimates"):
            estimates.main(["--quick"] if args.quick else [])
    section_summary(results, mem, through, trials, budgets, side)
    mode = "--quick" if args.quick else "full"
    print(f"\n_Benchmark ({mode}) took {time.perf_counter() - started:.0f} s._")
    return 0


if __name__ == "__main__":
    sys.exit(main())
