"""High-accuracy reference trajectories: EDM Heun on a refined grid (docs/method.md 2)."""
from __future__ import annotations

import time

import torch

from .denoiser import Denoiser, chunks
from .grids import check_sigmas, heun_nfe, refine_sigmas, teacher_substeps

__all__ = ["Denoiser", "heun_states", "teacher_nfe_for", "teacher_states"]


def heun_states(model, x, grid, keep_every, rows=None, kept_outputs=None):
    """Run Heun over `grid` from x; return the states at indices 0, keep_every, 2*keep_every, ...

    model: a Denoiser or a plain k-diffusion model. kept_outputs, a list, receives the model output
    (denoised) at each kept index where a step starts."""
    denoiser = Denoiser.of(model)
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


def teacher_states(model, x, sigmas, teacher_nfe=100, substeps=None):
    """States of a Heun teacher at the student sigmas: tensor (steps+1, N, ...) and a settings dict.

    The teacher grid inserts `substeps` points per student interval (chosen from teacher_nfe when None),
    so every student sigma lies exactly on it. Chunked over trajectories as the Denoiser `model` says.
    """
    check_sigmas(sigmas)
    if substeps is None:
        substeps = teacher_substeps(sigmas, teacher_nfe)
    grid = refine_sigmas(sigmas.double(), substeps)
    denoiser = Denoiser.of(model)
    started = time.perf_counter()
    parts = [heun_states(denoiser, x[rows], grid, substeps + 1, rows=rows)
             for rows in chunks(x.shape[0], denoiser.chunk_size)]
    states = torch.cat(parts, dim=1)
    info = {"solver": "heun", "substeps": substeps, "nfe": teacher_nfe_for(sigmas, substeps),
            "seconds": time.perf_counter() - started}
    return states, info
