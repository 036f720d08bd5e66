"""High-accuracy reference trajectories: EDM Heun on a refined grid (pas-method.md 2, 13.6)."""
from __future__ import annotations

import time

import torch

from .grids import check_sigmas, heun_nfe, refine_sigmas, teacher_substeps


def model_call(model, x, sigma, extra_args, per_sample_args, rows):
    """One denoiser call on a chunk: sigma broadcast to the batch, per-sample arguments sliced to rows."""
    sliced = {} if not per_sample_args else {k: v[rows] for k, v in per_sample_args.items()}
    sigma_in = x.new_ones([x.shape[0]]) * sigma
    return model(x, sigma_in, **(extra_args or {}), **sliced)


def chunks(count: int, chunk_size: int | None):
    """Row slices of at most chunk_size rows (all rows when None)."""
    size = count if not chunk_size else max(1, int(chunk_size))
    for start in range(0, count, size):
        yield slice(start, min(count, start + size))


def heun_states(model, x, grid, keep_every, extra_args=None, per_sample_args=None, rows=None, tick=None):
    """Run Heun over `grid` from x; return the states at indices 0, keep_every, 2*keep_every, ..."""
    rows = slice(0, x.shape[0]) if rows is None else rows
    kept = [x]
    values = grid.tolist()
    for k in range(len(values) - 1):
        sigma, sigma_next = grid[k].to(x.dtype), grid[k + 1].to(x.dtype)
        denoised = model_call(model, x, sigma, extra_args, per_sample_args, rows)
        if tick:
            tick(x.shape[0])
        if values[k + 1] == 0:
            x = denoised
        else:
            d = (x - denoised) / sigma
            x_euler = x + (sigma_next - sigma) * d
            denoised_next = model_call(model, x_euler, sigma_next, extra_args, per_sample_args, rows)
            if tick:
                tick(x.shape[0])
            d_next = (x_euler - denoised_next) / sigma_next
            x = x + (sigma_next - sigma) * (d + d_next) / 2
        if (k + 1) % keep_every == 0:
            kept.append(x)
    return torch.stack(kept)


def teacher_states(model, x, sigmas, teacher_nfe=100, substeps=None, extra_args=None, per_sample_args=None,
                   chunk_size=None, tick=None):
    """States of a Heun teacher at the student sigmas: tensor (steps+1, N, ...) and a settings dict.

    The teacher grid inserts `substeps` points per student interval (chosen from teacher_nfe when None),
    so every student sigma lies exactly on it. Chunked over trajectories.
    """
    check_sigmas(sigmas)
    if substeps is None:
        substeps = teacher_substeps(sigmas, teacher_nfe)
    grid = refine_sigmas(sigmas.double(), substeps)
    started = time.perf_counter()
    parts = [heun_states(model, x[rows], grid, substeps + 1, extra_args, per_sample_args, rows, tick)
             for rows in chunks(x.shape[0], chunk_size)]
    states = torch.cat(parts, dim=1)
    ends_at_zero = float(sigmas[-1]) == 0.0
    info = {"solver": "heun", "substeps": substeps, "nfe": heun_nfe(len(grid) - 1, ends_at_zero),
            "seconds": time.perf_counter() - started}
    return states, info
