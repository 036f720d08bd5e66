"""Distances between samples: the one place the library (and its benches) compute RMSE and its kin."""
from __future__ import annotations

import math

import torch


def difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a - b in the inputs' precision, then float64 for the reductions."""
    return (a - b).double()


def mean_abs_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(difference(a, b).abs().mean())


def mean_square_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(difference(a, b).square().mean())


def sample_rmse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample RMSE (n,) between batches of samples (n, ...)."""
    return difference(a, b).flatten(1).square().mean(dim=1).sqrt()


def pooled_rmse(errors: torch.Tensor) -> float:
    """The RMSE over all samples from their per-sample RMSEs (samples of equal size)."""
    return math.sqrt(float(errors.double().square().mean()))


def rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    """RMSE over all elements of two batches of samples (n, ...)."""
    return pooled_rmse(sample_rmse(a, b))
