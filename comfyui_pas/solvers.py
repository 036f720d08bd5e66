"""Direction rules sharing one interface: euler (= DDIM) and iPNDM (pas-method.md 1.2-1.3)."""
from __future__ import annotations

import torch

SOLVERS = ("euler", "ipndm")
SOLVER_ALIASES = {"euler": "euler", "ddim": "euler", "ipndm": "ipndm"}

# Adams-Bashforth weights of iPNDM for orders 1-4: current e first, then older history.
IPNDM_WEIGHTS = {
    1: ((1,), 1),
    2: ((3, -1), 2),
    3: ((23, -16, 5), 12),
    4: ((55, -59, 37, -9), 24),
}


def canonical_solver(solver: str) -> str:
    """'ddim' is 'euler' in the sigma formulation; anything unknown is an error."""
    try:
        return SOLVER_ALIASES[str(solver).lower()]
    except KeyError:
        raise ValueError(f"unknown solver {solver!r}: choose one of euler (= ddim), ipndm") from None


def check_order(solver: str, max_order: int) -> int:
    """iPNDM supports orders 1-4; euler ignores the order."""
    max_order = int(max_order)
    if solver == "ipndm" and not 1 <= max_order <= 4:
        raise ValueError(f"ipndm max_order must be 1-4, got {max_order}")
    return max_order


def step_order(solver: str, step: int, max_order: int) -> int:
    """Order used at a 0-based step: iPNDM warms up with orders 1, 2, 3, ... (pas-method.md 1.3)."""
    return 1 if solver == "euler" else min(max_order, step + 1)


def solver_direction(solver: str, e: torch.Tensor, history: list[torch.Tensor], step: int,
                     max_order: int) -> torch.Tensor:
    """Direction D_i from the raw model direction e_i and past raw directions (newest last)."""
    order = step_order(solver, step, max_order)
    if order == 1:
        return e
    weights, divisor = IPNDM_WEIGHTS[order]
    total = weights[0] * e
    for weight, past in zip(weights[1:], reversed(history), strict=False):
        total = total + weight * past
    return total / divisor


def push_history(solver: str, history: list[torch.Tensor], e: torch.Tensor, max_order: int) -> None:
    """Keep the last max_order-1 raw directions (FIFO); euler keeps none."""
    if solver == "euler" or max_order < 2:
        return
    history.append(e)
    del history[: max(0, len(history) - (max_order - 1))]
