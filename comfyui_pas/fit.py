"""The fit of one step's shared coordinates (docs/method.md 5): closed-form least squares, L1 by IRLS."""
from __future__ import annotations

import torch

from .errors import mean_abs_error, mean_square_error

IRLS_ITERATIONS = 20


def criterion(a: torch.Tensor, b: torch.Tensor, loss: str) -> float:
    """Mean absolute (l1) or mean squared (l2) error over all elements."""
    return mean_abs_error(a, b) if loss == "l1" else mean_square_error(a, b)


def _pair_sums(weights, left, right):
    """sum over samples and elements of weights * left * right (weights may be None)."""
    product = left * right
    if weights is not None:
        product = product * weights
    return product.double().sum()


def _weighted_solve(scaled, target, weights):
    """The normal equations of the weighted least-squares fit, with a tiny ridge against rank loss."""
    k = scaled.shape[1]
    gram = torch.empty(k, k, dtype=torch.float64)
    rhs = torch.empty(k, dtype=torch.float64)
    for a in range(k):
        rhs[a] = _pair_sums(weights, scaled[:, a], target)
        for b in range(a, k):
            gram[a, b] = gram[b, a] = _pair_sums(weights, scaled[:, a], scaled[:, b])
    ridge = 1e-12 * gram.diagonal().abs().max().clamp_min(1e-300)
    return torch.linalg.solve(gram + ridge * torch.eye(k, dtype=torch.float64), rhs)


def _prediction(scaled, c):
    return (scaled * c.to(scaled.dtype)[None, :, None]).sum(dim=1)


def fit_coordinates(basis, target, scale, loss="l1", iterations=IRLS_ITERATIONS):
    """Shared coordinates c minimising sum_n |scale_n * U_n^T c - target_n| (l1) or its square (l2).

    basis (n, k, D), target (n, D), scale (n,) or None. Returns float64 (k,): for l1 the best iterate of
    iteratively reweighted least squares started from the l2 solution.
    """
    scaled = basis if scale is None else basis * scale.to(basis.dtype)[:, None, None]
    c = _weighted_solve(scaled, target, None)
    if loss == "l2":
        return c
    best, best_loss = c, criterion(_prediction(scaled, c), target, "l1")
    floor = 1e-6 * float(target.abs().mean().clamp_min(1e-30))
    for _ in range(iterations):
        residual = (_prediction(scaled, c) - target).abs().clamp_min(floor)
        c = _weighted_solve(scaled, target, 1.0 / residual)
        current = criterion(_prediction(scaled, c), target, "l1")
        if current < best_loss:
            best, best_loss = c, current
    return best
