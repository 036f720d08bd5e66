"""High-accuracy reference trajectories: EDM Heun on a refined grid (pas-method.md 2, 13.6)."""
from __future__ import annotations

import time

import torch

from .grids import check_sigmas, heun_nfe, refine_sigmas, teacher_substeps


def chunks(count: int, chunk_size: int | None):
    """Row slices of at most chunk_size rows (all rows when None)."""
    size = count if not chunk_size else max(1, int(chunk_size))
    for start in range(0, count, size):
        yield slice(start, min(count, start + size))


class Denoiser:
    """The model called in chunks of trajectories, per-sample arguments sliced to the rows; counts calls.

    One instance serves the teacher, the search and the held-out roll-outs of a training run.
    """

    def __init__(self, model, extra_args=None, per_sample_args=None, chunk_size=None, tick=None):
        self.model, self.extra_args = model, dict(extra_args or {})
        self.per_sample_args = per_sample_args or {}
        self.chunk_size, self.tick, self.calls = chunk_size, tick, 0

    def __call__(self, x, sigma, rows: slice | None = None):
        """denoised for the points x (n, ...), which are the trajectories `rows` (absolute) of the run."""
        offset = 0 if rows is None else rows.start
        parts = []
        for part in chunks(x.shape[0], self.chunk_size):
            absolute = slice(offset + part.start, offset + part.stop)
            sliced = {key: value[absolute] for key, value in self.per_sample_args.items()}
            points = x[part]
            parts.append(self.model(points, points.new_ones([points.shape[0]]) * sigma, **self.extra_args, **sliced))
            self.calls += points.shape[0]
            if self.tick:
                self.tick(points.shape[0])
        return parts[0] if len(parts) == 1 else torch.cat(parts)


def as_denoiser(model, extra_args=None, per_sample_args=None, chunk_size=None, tick=None) -> Denoiser:
    return model if isinstance(model, Denoiser) else Denoiser(model, extra_args, per_sample_args, chunk_size, tick)


def heun_states(model, x, grid, keep_every, extra_args=None, per_sample_args=None, rows=None, tick=None,
                kept_outputs=None):
    """Run Heun over `grid` from x; return the states at indices 0, keep_every, 2*keep_every, ...

    kept_outputs, a list, receives the model output (denoised) at each kept index where a step starts."""
    denoiser = as_denoiser(model, extra_args, per_sample_args, tick=tick)
    kept = [x]
    values = grid.tolist()
    for k in range(len(values) - 1):
        sigma, sigma_next = grid[k].to(x.dtype), grid[k + 1].to(x.dtype)
        denoised = denoiser(x, sigma, rows)
        if kept_outputs is not None and k % keep_every == 0:
            kept_outputs.append(denoised)
        if values[k + 1] == 0:
            x = denoised
        else:
            d = (x - denoised) / sigma
            x_euler = x + (sigma_next - sigma) * d
            d_next = (x_euler - denoiser(x_euler, sigma_next, rows)) / sigma_next
            x = x + (sigma_next - sigma) * (d + d_next) / 2
        if (k + 1) % keep_every == 0:
            kept.append(x)
    return torch.stack(kept)


def teacher_nfe_for(sigmas: torch.Tensor, substeps: int) -> int:
    """Model calls per trajectory of the Heun teacher on `sigmas` refined by `substeps`."""
    return heun_nfe(len(sigmas) - 1 + (len(sigmas) - 1) * substeps, float(sigmas[-1]) == 0.0)


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
    denoiser = as_denoiser(model, extra_args, per_sample_args, chunk_size, tick)
    started = time.perf_counter()
    parts = [heun_states(denoiser, x[rows], grid, substeps + 1, rows=rows) for rows in chunks(x.shape[0], chunk_size)]
    states = torch.cat(parts, dim=1)
    info = {"solver": "heun", "substeps": substeps, "nfe": teacher_nfe_for(sigmas, substeps),
            "seconds": time.perf_counter() - started}
    return states, info
