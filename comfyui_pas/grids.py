"""Sigma grids: the EDM polynomial schedule, refinement for the teacher, and checks."""
from __future__ import annotations

import torch

# EDM's noise range (Karras et al. 2022): the demo model's, the mixtures' and DEIS's fixed VP-time mapping.
EDM_SIGMA_MIN, EDM_SIGMA_MAX = 0.002, 80.0


def edm_sigmas(steps: int, sigma_min: float = EDM_SIGMA_MIN, sigma_max: float = EDM_SIGMA_MAX, rho: float = 7.0,
               append_zero: bool = False, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """EDM eq. 5 grid with `steps` intervals: steps+1 points ending at sigma_min, or (append_zero,
    as ComfyUI's karras scheduler) `steps` points ending at sigma_min followed by 0."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    points = steps if append_zero else steps + 1
    ramp = torch.linspace(0, 1, points, dtype=torch.float64) if points > 1 else torch.zeros(1, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    if append_zero:
        sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
    return sigmas.to(dtype)


def check_sigmas(sigmas: torch.Tensor) -> None:
    """Raise ValueError unless sigmas is a finite, strictly decreasing 1-D grid, >= 0, zero only last."""
    if not isinstance(sigmas, torch.Tensor) or sigmas.ndim != 1 or sigmas.numel() < 2:
        raise ValueError("sigmas must be a 1-D tensor with at least 2 values (one step)")
    values = sigmas.detach().double().cpu()
    if not torch.isfinite(values).all():
        raise ValueError(f"sigmas contain NaN or inf: {format_sigmas(values)}")
    if (values[:-1] <= 0).any() or values[-1] < 0:
        raise ValueError(f"sigmas must be positive (only the last may be 0): {format_sigmas(values)}")
    if not (values[1:] < values[:-1]).all():
        raise ValueError(f"sigmas must be strictly decreasing: {format_sigmas(values)}")


def refine_sigmas(sigmas: torch.Tensor, substeps: int, rho: float = 7.0) -> torch.Tensor:
    """Insert `substeps` points in every interval, uniform in sigma^(1/rho) (docs/method.md 2); every
    original point is kept exactly, at index k*(substeps+1). Works for a final interval ending at 0."""
    check_sigmas(sigmas)
    if substeps < 0:
        raise ValueError(f"substeps must be >= 0, got {substeps}")
    grid = sigmas.detach().double().cpu()
    roots = grid ** (1 / rho)
    frac = torch.arange(1, substeps + 1, dtype=torch.float64) / (substeps + 1)
    pieces = []
    for k in range(len(grid) - 1):
        inner = (roots[k] + frac * (roots[k + 1] - roots[k])) ** rho
        pieces.append(torch.cat([grid[k:k + 1], inner]))
    pieces.append(grid[-1:])
    return torch.cat(pieces).to(sigmas.dtype)


def heun_nfe(intervals: int, ends_at_zero: bool) -> int:
    """Model calls of EDM Heun: 2 per interval, 1 for a final Euler step onto sigma = 0."""
    return 2 * intervals - (1 if ends_at_zero else 0)


def teacher_substeps(sigmas: torch.Tensor, teacher_nfe: int) -> int:
    """Smallest M >= 0 whose refined grid gives a Heun teacher at least `teacher_nfe` model calls."""
    steps = len(sigmas) - 1
    ends_at_zero = float(sigmas[-1]) == 0.0
    substeps = 0
    while heun_nfe(steps * (substeps + 1), ends_at_zero) < teacher_nfe:
        substeps += 1
    return substeps


def format_sigmas(sigmas, limit: int = 12) -> str:
    """Short human-readable list of sigma values for error messages."""
    values = [float(s) for s in (sigmas.tolist() if isinstance(sigmas, torch.Tensor) else sigmas)]
    shown = [f"{v:.4g}" for v in values]
    if len(shown) > limit:
        shown = shown[: limit // 2] + ["..."] + shown[-(limit // 2):]
    return "[" + ", ".join(shown) + "]"


MAX_STEP_COUNTS = 32


def parse_step_counts(text: str, low: int = 1, high: int = 200) -> list[int]:
    """'4-8' -> [4, 5, 6, 7, 8]; '5,6,8' -> [5, 6, 8]; both mixed ('4-6, 10'). Sorted, without repeats."""
    counts = set()
    for part in str(text).replace(" ", "").split(","):
        if not part:
            continue
        bounds = part.split("-")
        try:
            if len(bounds) == 1:
                first = last = int(bounds[0])
            elif len(bounds) == 2:
                first, last = int(bounds[0]), int(bounds[1])
            else:
                raise ValueError
        except ValueError:
            raise ValueError(f"step counts {text!r}: {part!r} is neither a number nor a range like 4-8") from None
        if first > last or first < low or last > high:
            raise ValueError(f"step counts {text!r}: {part!r} must lie within {low}-{high}, smallest first")
        counts.update(range(first, last + 1))
    if not counts:
        raise ValueError(f"no step counts in {text!r}: write e.g. '4-8' or '5,6,8'")
    if len(counts) > MAX_STEP_COUNTS:
        raise ValueError(f"step counts {text!r} give {len(counts)} grids; at most {MAX_STEP_COUNTS} per file")
    return sorted(counts)
