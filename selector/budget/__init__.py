"""Budget control: hard caps per sliding window and the target-rate spending controller."""

from selector.budget.caps import CapLedger
from selector.budget.token_bucket import BudgetState, Spend, initial_state, spend

__all__ = ["BudgetState", "CapLedger", "Spend", "initial_state", "spend"]
