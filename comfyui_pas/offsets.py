"""Per-step time offsets: one log-offset d_i per step of a grid, so that step i asks the model at
sigma_i * exp(d_i) while the solver still steps on the grid (docs/method.md 11). Fitted without gradients
against the teacher's finals, kept only if held-out trajectories confirm them (train_pas then also checks
PAS on the shifted model against PAS alone on those trajectories); no extra model call when sampling, and
all zeros are the plain solver."""
from __future__ import annotations

import torch

from .fit import criterion
from .sampler import SolverTrajectory, basis_dtype, roll_out
from .settings import LOSSES
from .solvers import make_solver

FIRST_MOVE, LAST_MOVE = 0.2, 0.025  # the pattern search's moves in log-sigma: the first, halved down to the last
MAX_FIT_OFFSET = 1.5  # the search stays within +-this (the model asked at most 4.5x off the grid's sigma)
MAX_ROLLOUTS = 48  # roll-outs of the fitting trajectories per grid, the first (all zeros) included
MIN_TRAJECTORIES = 4  # a quarter of them, at least one, is held out
GRID_RTOL = 1e-4  # how close (in log-sigma) a model call must be to a grid point to be shifted


def held_out_count(count: int) -> int:
    if count < MIN_TRAJECTORIES:
        raise ValueError(f"time offsets need at least {MIN_TRAJECTORIES} trajectories (a quarter is held out), "
                         f"got {count}")
    return count // 4


def offset_fit_model_calls(count: int, steps: int, max_rollouts: int = MAX_ROLLOUTS) -> int:
    """The most model calls fit_time_offsets makes: its roll-outs, then two of the held-out rows."""
    holdout = held_out_count(count)
    return (max_rollouts * (count - holdout) + 2 * holdout) * steps


def held_out_rows(count: int) -> slice:
    """The trajectories that confirm the offsets: the last quarter."""
    return slice(count - held_out_count(count), count)


class SigmaShift:
    """sigma_i -> sigma_i * exp(d_i) at the points the grid's steps start from; any other sigma is an error."""

    def __init__(self, sigmas: torch.Tensor, log_offsets: torch.Tensor):
        points = sigmas.detach().double().cpu()[:-1]
        if len(log_offsets) != len(points):
            raise ValueError(f"{len(log_offsets)} time offsets for a grid of {len(points)} steps")
        self.log_points, self.log_offsets = points.log(), torch.as_tensor(log_offsets).double().cpu()

    def __call__(self, sigma):
        value = float(sigma)
        gaps = (self.log_points - torch.tensor(value, dtype=torch.float64).log()).abs()
        index = int(gaps.argmin())
        if float(gaps[index]) > GRID_RTOL:
            raise ValueError(f"the model was called at sigma {value:.6g}, which starts no step of the shifted grid")
        return sigma * float(self.log_offsets[index].exp())


def roll_out_error(denoiser, x, sigmas, target, solver, options, rows: slice, loss: str, **coordinates) -> float:
    """The final error of the trajectories `rows` against `target` (the teacher's finals of all rows), rolled
    out as roll_out_finals does."""
    return criterion(roll_out_finals(denoiser, x, sigmas, solver, options, rows, **coordinates), target[rows], loss)


def roll_out_finals(denoiser, x, sigmas, solver, options, rows: slice, *, entry=None, log_offsets=None,
                    n_basis: int = 1, parameterization: str = "absolute") -> torch.Tensor:
    """The finals of the trajectories `rows`, rolled out with a grid's coordinates (a GridCoordinates `entry`:
    corrections and time offsets) or with bare `log_offsets`; neither is the plain solver."""
    points, grid = x[rows], sigmas.to(x.device)
    corrections = {} if entry is None else entry.step_coordinates(x.device, basis_dtype(x.dtype))
    if entry is not None:
        log_offsets = entry.log_offsets
    asked = None if log_offsets is None else grid[:-1] * log_offsets.to(device=grid.device, dtype=grid.dtype).exp()
    trajectory = SolverTrajectory(points, make_solver(solver, grid, **options), n_basis, parameterization,
                                  keep_buffer=bool(corrections))
    return roll_out(lambda p, sigma: denoiser(p, sigma, rows), trajectory, points, grid, corrections=corrections,
                    model_sigmas=asked)


def fit_time_offsets(denoiser, x, sigmas, target, solver, options, *, loss: str = "l1",
                     max_rollouts: int = MAX_ROLLOUTS) -> tuple[torch.Tensor | None, dict]:
    """Log-offsets for the grid `sigmas` from the start points x and the teacher's finals `target`.

    A pattern search over the offsets (moves of FIRST_MOVE, halved down to LAST_MOVE, the first improving move
    taken, no step asked above sigmas[0]) on the final error of the first rows; the result is kept only if it also lowers the error of the
    held-out rows (the last quarter). Returns (offsets or None, report)."""
    if loss not in LOSSES:
        raise ValueError(f"unknown offset loss {loss!r}; choose one of {LOSSES}")
    count, steps = x.shape[0], len(sigmas) - 1
    # the most each step may move: MAX_FIT_OFFSET, and never above the grid's first sigma (a flow model's
    # sigma 1, an SD model's last timestep: beyond it the model was never trained)
    ceiling = [min(MAX_FIT_OFFSET, float((sigmas[0] / sigmas[i]).double().log())) for i in range(steps)]
    held_rows = held_out_rows(count)
    fit_rows, holdout = slice(0, held_rows.start), held_rows.stop - held_rows.start

    def error(offsets, rows):
        return roll_out_error(denoiser, x, sigmas, target, solver, options, rows, loss, log_offsets=offsets)

    offsets = torch.zeros(steps, dtype=torch.float64)
    best, rollouts, move = error(offsets, fit_rows), 1, FIRST_MOVE
    while move >= LAST_MOVE and rollouts < max_rollouts:
        moved = False
        for i in range(steps):
            for sign in (1.0, -1.0):
                if moved or rollouts >= max_rollouts:
                    break
                trial = offsets.clone()
                trial[i] += sign * move
                if not -MAX_FIT_OFFSET - 1e-9 <= float(trial[i]) <= ceiling[i] + 1e-9:
                    continue
                value = error(trial, fit_rows)
                rollouts += 1
                if value < best:
                    offsets, best, moved = trial, value, True
        if not moved:
            move /= 2
    zero = error(torch.zeros_like(offsets), held_rows)
    held = error(offsets, held_rows) if offsets.any() else zero
    confirmed = bool(offsets.any()) and held < zero
    report = {"loss": loss, "rollouts": rollouts, "fitted": offsets.tolist(), "confirmed": confirmed,
              "kept": confirmed, "train_error": best, "held_out_error_plain": zero, "held_out_error": held,
              "n_held_out": holdout}
    return (offsets if confirmed else None), report
