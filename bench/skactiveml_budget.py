"""scikit-activeml's stream budget managers, driven one item at a time as its stream query strategies do.

For each item, as ``skactiveml.stream`` strategies (``VariableUncertainty``, ``Split``,
``StreamProbabilisticAL``) and the library's own budget-manager test template do:
``queried = manager.query_by_utility(np.array([u]))`` (which decides and never changes the manager), then
``manager.update(candidates, queried)``, which commits; ``BalancedIncrementalQuantileFilter.update`` also
takes the item's ``utilities``, as ``StreamProbabilisticAL.update`` passes them. The utility ``u`` is our
informativeness score; the candidate is a 1x1 array holding it (the managers only count candidates).

Managers are built as the strategies build their default one, with their default parameters and the budget:

- ``VariableUncertaintyBudgetManager(budget=r)``: ``theta`` 1.0, ``s`` 0.01, ``w`` 100;
- ``SplitBudgetManager(budget=r, random_state=seed)``: ``v`` 0.1 random share, ``s`` 0.01, ``w`` 100;
- ``BalancedIncrementalQuantileFilter(budget=r)``: ``w`` 100, ``w_tol`` 50;
- :class:`EstimatedBudgetGate` (``w`` 100): ``EstimatedBudgetZliobaite`` is abstract (it has no
  ``query_by_utility``); its subclasses put their own selection rule behind its gate. This is the gate alone,
  with the rule its docstring states: while the estimated spend ``u_t / w`` is below the budget, query an item
  whose utility is above the budget; ``u_t = u_{t-1} (w - 1) / w + labeled_t`` (its own ``update``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from skactiveml.stream.budgetmanager import (
    BalancedIncrementalQuantileFilter,
    EstimatedBudgetZliobaite,
    SplitBudgetManager,
    VariableUncertaintyBudgetManager,
)

from selector.arrays import BoolArray, FloatArray


class EstimatedBudgetGate(EstimatedBudgetZliobaite):  # type: ignore[misc]
    """``EstimatedBudgetZliobaite``'s gate with the selection rule of its docstring (module docstring)."""

    def query_by_utility(self, utilities: Any) -> list[int]:
        utilities = self._validate_data(utilities)
        queried = []
        spent = self.u_t_
        for i, u in enumerate(utilities):
            sample = spent / self.w < self.budget_ and u > self.budget_
            if sample:
                queried.append(i)
            spent = spent * ((self.w - 1) / self.w) + sample
        return queried


MANAGERS: dict[str, Callable[[float, int], Any]] = {
    "skactiveml VariableUncertainty": lambda budget, _seed: VariableUncertaintyBudgetManager(budget=budget),
    "skactiveml Split": lambda budget, seed: SplitBudgetManager(budget=budget, random_state=seed),
    "skactiveml BalancedIncrementalQuantileFilter": lambda budget, _seed: BalancedIncrementalQuantileFilter(
        budget=budget
    ),
    "skactiveml EstimatedBudgetZliobaite gate": lambda budget, _seed: EstimatedBudgetGate(budget=budget),
}
"""Table name -> factory(budget, seed)."""

_TAKES_UTILITIES = frozenset({"skactiveml BalancedIncrementalQuantileFilter"})


def select(name: str, score: FloatArray, rate: float, seed: int) -> tuple[BoolArray, float]:
    """The items manager ``name`` labels in the stream ``score`` at budget ``rate``, and seconds spent."""
    manager = MANAGERS[name](float(rate), seed)
    utilities = [np.array([u]) for u in score.tolist()]
    candidates = [u.reshape(1, 1) for u in utilities]
    labels = np.zeros(len(score), dtype=bool)
    with_utilities = name in _TAKES_UTILITIES
    started = time.perf_counter()
    for i, (u, x) in enumerate(zip(utilities, candidates, strict=True)):
        queried = manager.query_by_utility(u)
        if with_utilities:
            manager.update(x, queried, utilities=u)
        else:
            manager.update(x, queried)
        if len(queried):
            labels[i] = True
    return labels, time.perf_counter() - started
