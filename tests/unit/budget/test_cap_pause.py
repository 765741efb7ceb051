"""When a hard cap holds labeling back, and until when (what /api/status, the dashboard and the demo's
summary line report)."""

from __future__ import annotations

import math

import numpy as np
import orjson

from selector.budget.cap_pause import cap_pauses, free_at
from selector.budget.caps import CapLedger
from selector.config import parse_config
from selector.messages.prediction import decode_batch
from selector.routing import Router

HOUR = 3600.0


def ledger(times: list[float], cap: int, window: float = HOUR) -> CapLedger:
    return CapLedger(
        {"hour": (window, cap)}, {"hour": np.asarray(times, dtype=np.float64)}, max(times or [0.0])
    )


class TestFreeAt:
    def test_room_left_is_no_pause(self) -> None:
        """Fewer grants in the window than the share: the partition may label now."""
        assert free_at(ledger([10.0], cap=2), "hour", 20.0) is None
        assert free_at(ledger([], cap=2), "hour", 20.0) is None

    def test_a_spent_share_frees_when_its_oldest_counted_grant_leaves_the_window(self) -> None:
        """Share 2, grants at 10, 50, 90: the two most recent count; the older (50) leaves at 50 + W."""
        led = ledger([10.0, 50.0, 90.0], cap=2)
        assert free_at(led, "hour", 100.0) == 50.0 + HOUR
        assert free_at(led, "hour", 50.0 + HOUR) is None  # the window is (now - W, now]

    def test_a_share_of_zero_never_frees(self) -> None:
        assert free_at(ledger([], cap=0), "hour", 0.0) == math.inf


class TestCapPauses:
    def test_all_partitions_spent_is_a_pause_until_the_first_frees(self) -> None:
        pauses = cap_pauses({0: ledger([5.0, 7.0], 2), 1: ledger([1.0, 9.0], 2)}, now=10.0)
        (p,) = pauses
        assert (p.horizon, p.cap, p.blocked, p.partitions, p.paused, p.until) == (
            "hour",
            4,
            2,
            2,
            True,
            1 + HOUR,
        )

    def test_some_partitions_spent_is_reported_but_not_a_pause(self) -> None:
        (p,) = cap_pauses({0: ledger([5.0, 7.0], 2), 1: ledger([9.0], 2)}, now=10.0)
        assert (p.blocked, p.partitions, p.paused, p.until) == (1, 2, False, 5 + HOUR)

    def test_nothing_binds(self) -> None:
        assert cap_pauses({0: ledger([5.0], 2)}, now=10.0) == []
        assert cap_pauses({}, now=10.0) == []

    def test_the_routers_own_ledgers_report_the_cap_it_enforces(self) -> None:
        """A router with a cap of 5 labels an hour, fed uncertain items: once it stops labeling, the pause
        reports the hour horizon until the first grant's time plus an hour, and the router indeed labels
        nothing more before then (and does after)."""
        cfg = parse_config({"budget": {"rate": 0.5, "audit_rate": 0.0, "caps": {"hour": 5}}})
        router = Router(cfg)
        probs = [0.25, 0.25, 0.25, 0.25]

        def feed(t0: float, n: int) -> None:
            values = [orjson.dumps({"id": f"i-{t0}-{k}", "probs": probs}) for k in range(n)]
            batch = decode_batch(values, [0] * n, **cfg.decode_options())
            decisions = router.decide(0, batch, t0 + np.arange(n, dtype=np.float64))
            router.commit(0, decisions)

        feed(0.0, 200)
        labeled = router.stats.items["query"] + router.stats.items["audit"]
        assert labeled == 5
        grants = router.state(0).budget.ledger.grants["hour"]
        (p,) = cap_pauses({0: router.state(0).budget.ledger}, now=200.0)
        assert p.paused and p.until == float(grants[0]) + HOUR
        feed(p.until - 100.0, 50)  # still inside the pause: nothing more
        assert router.stats.items["query"] + router.stats.items["audit"] == 5
        feed(p.until, 50)
        assert router.stats.items["query"] + router.stats.items["audit"] > 5
