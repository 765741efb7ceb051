"""The state the controller keeps per input partition (snapshotted with its offsets)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from selector.budget.pending import Pending
from selector.budget.policy import Policy, chunk_items
from selector.budget.quantile import INELIGIBLE, Ring, WindowRule
from selector.budget.token_bucket import BudgetState, initial_state


@dataclass(frozen=True)
class Balance:
    """A reserved pool's balance, kept like the token balance: ``ref`` after its last label, ``since`` items
    after that not yet credited (so batch cuts never change a sum)."""

    ref: float
    since: int = 0

    def to_list(self) -> list[float]:
        return [self.ref, self.since]


@dataclass(frozen=True)
class PartitionState:
    """Everything the controller remembers about one input partition (snapshotted with its offsets)."""

    budget: BudgetState
    windows: dict[str, Ring]
    """each pool's window as of the last refresh"""
    chunk: dict[str, list[float]]
    """each pool's scores since the last refresh"""
    balances: dict[str, Balance]
    """the reserved pools' balances"""
    pending: Pending = field(default_factory=Pending)
    versions: tuple[str, ...] = ()
    """model versions seen recently, the current one last"""
    lost: float = 0.0
    """credit lost since the last label, already reported"""
    pool_lost: dict[str, float] = field(default_factory=dict)
    rules: dict[str, WindowRule] = field(default_factory=dict, compare=False, repr=False)
    """derived from ``windows``: not snapshotted"""

    @property
    def chunk_pos(self) -> int:
        return len(next(iter(self.chunk.values()))) if self.chunk else 0

    @property
    def model(self) -> str | None:
        return self.versions[-1] if self.versions else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "pending": self.pending.to_dict(),
            "budget": self.budget.to_dict(),
            # exact values: a rounded window would move the thresholds after a restore or a hot reload
            "windows": {k: v.to_dict() for k, v in self.windows.items()},
            "chunk": self.chunk,
            "balances": {k: v.to_list() for k, v in self.balances.items()},
            "versions": list(self.versions),
            "lost": self.lost,
            "pool_lost": self.pool_lost,
        }

    @classmethod
    def from_dict(
        cls, policy: Policy, limits: dict[str, tuple[float, int]], d: dict[str, Any]
    ) -> PartitionState:
        """Restore a snapshot under a (possibly changed) policy: unknown pools start cold, windows resize.
        A snapshot of the earlier controller (no ``chunk`` key) keeps its budget, windows and pending set."""
        fresh = initial_partition(policy, limits)
        windows = {
            p.name: Ring.from_dict(d["windows"][p.name], policy.window_items)
            if p.name in d.get("windows", {})
            else fresh.windows[p.name]
            for p in policy.pools
        }
        chunk_in = d.get("chunk", {})
        pos = max((len(v) for v in chunk_in.values()), default=0)
        chunk = {p.name: [float(x) for x in chunk_in.get(p.name, [INELIGIBLE] * pos)] for p in policy.pools}
        balances = {
            p.name: Balance(float(d["balances"][p.name][0]), int(d["balances"][p.name][1]))
            if p.name in d.get("balances", {})
            else fresh.balances[p.name]
            for p in policy.pools[1:]
        }
        state = cls(
            BudgetState.from_dict(limits, d["budget"]),
            windows,
            chunk,
            balances,
            Pending.from_dict(d.get("pending", {})),
            tuple(d.get("versions", ())),
            float(d.get("lost", 0.0)),
            {k: float(v) for k, v in d.get("pool_lost", {}).items() if k in balances},
        )
        return state.with_rules()

    def with_rules(self) -> PartitionState:
        """The state with its rules derived from its windows."""
        return replace(self, rules={k: WindowRule.of(w.values()) for k, w in self.windows.items()})


def initial_partition(policy: Policy, limits: dict[str, tuple[float, int]]) -> PartitionState:
    """A partition never seen: empty windows, every balance at its running average."""
    # the balance a running pool averages (half a token under the set point, between its labels), so a short
    # stream is not paid a token it never earned
    t0 = policy.set_point - 0.5
    budget = BudgetState(max(1.0, t0), initial_state(limits).ledger)
    return PartitionState(
        budget,
        {p.name: Ring.empty(policy.window_items) for p in policy.pools},
        {p.name: [] for p in policy.pools},
        {p.name: Balance(t0) for p in policy.pools[1:]},
    ).with_rules()


def chunk_left(policy: Policy, state: PartitionState) -> int:
    """Items until the partition's next window refresh."""
    filled = state.windows[policy.pools[0].name].filled
    return max(1, chunk_items(policy, filled) - state.chunk_pos)
