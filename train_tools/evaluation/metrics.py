"""Errors of final samples against a reference: the numbers every benchmark and study reports.

Per-sample errors are the library's own `comfyui_pas.search.sample_errors` (the RMSE of each sample),
the one the search's validation guard uses.
"""
from __future__ import annotations

import math

import torch


def rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    """Root mean squared error over all elements (in float64)."""
    return math.sqrt(float((a.double() - b.double()).square().mean()))


def pooled_rmse(errors: torch.Tensor) -> float:
    """The RMSE over all samples from their per-sample RMSEs (samples of equal size)."""
    return math.sqrt(float(errors.double().square().mean()))


def compare(plain: torch.Tensor, corrected: torch.Tensor) -> dict:
    """PAS against the plain solver from per-sample RMSEs: RMSE gain (1 - RMSE_pas / RMSE_plain), median
    change (median_pas / median_plain - 1) and the share of samples made worse."""
    rmse_plain, rmse_pas = pooled_rmse(plain), pooled_rmse(corrected)
    median_plain, median_pas = float(plain.median()), float(corrected.median())
    return {"rmse_plain": rmse_plain, "rmse_pas": rmse_pas, "gain": 1 - rmse_pas / rmse_plain,
            "median_plain": median_plain, "median_pas": median_pas, "median_change": median_pas / median_plain - 1,
            "worse": float((corrected > plain).double().mean())}
