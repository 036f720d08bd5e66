"""sample_pas: every registered base solver with PAS corrections, in the k-diffusion sampler contract."""
from __future__ import annotations

import logging

import torch

from .basis import combine, trajectory_basis
from .grids import check_sigmas
from .solvers import ORDER, Solver, canonical_solver, make_solver, solver_options

log = logging.getLogger("comfyui_pas")


def basis_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half-precision inputs get their basis computed in float32."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


class SolverTrajectory:
    """State of a batch along one student trajectory: the base solver (with its history of model outputs)
    and the PCA buffer.

    Shared by sampling and training so that both follow exactly the same recursion (docs/method.md 3:
    the buffer receives the direction actually used, corrected or not).
    """

    def __init__(self, x_start, solver: Solver, n_basis=1, parameterization="absolute", keep_buffer=False):
        self.solver = solver
        self.n_basis = n_basis
        self.relative = parameterization == "relative"
        self.dtype = basis_dtype(x_start.dtype)
        self.keep_buffer = keep_buffer
        self.start = self.flat(x_start) if keep_buffer else None
        self.buffer: list[torch.Tensor] = [self.start] if keep_buffer else []

    def flat(self, tensor):
        """(B, ...) -> (B, D) in the basis precision."""
        return tensor.reshape(tensor.shape[0], -1).to(self.dtype)

    def direction(self, step, x, denoised, sigma):
        """The base solver's direction D_i (a step onto sigma = 0 lands on `denoised`)."""
        return self.solver.direction(step, x, denoised, sigma)

    def basis(self, direction, x):
        """U_i (B, n_basis, D) for the current direction and point."""
        return trajectory_basis(self.buffer, self.flat(direction), self.flat(x), self.start, self.n_basis)

    def direction_scale(self, direction):
        """|D_i| per sample for relative coordinates, None for absolute ones."""
        return self.flat(direction).norm(dim=-1) if self.relative else None

    def corrected(self, basis, direction, coordinates):
        """Corrected direction (shaped like `direction`) from the basis and shared coordinates."""
        return combine(basis, coordinates, self.direction_scale(direction)).reshape(direction.shape).to(direction.dtype)

    def commit(self, step, x, denoised, sigma, used_direction):
        """Record a finished step: the model output into the solver history, the used direction into the buffer."""
        self.solver.commit(step, x, denoised, sigma)
        if self.keep_buffer:
            self.buffer.append(self.flat(used_direction))

    def rows(self, index):
        """A copy restricted to some samples (for validation roll-outs)."""
        copy = object.__new__(SolverTrajectory)
        copy.__dict__.update(self.__dict__)
        copy.solver = self.solver.rows(index)
        copy.buffer = [b[index] for b in self.buffer]
        copy.start = None if self.start is None else self.start[index]
        return copy


def pas_step(trajectory, x, denoised, sigma, sigma_next, step, coordinates=None):
    """One step from a model output: returns (x_next, used direction); the history is not yet updated."""
    direction = trajectory.direction(step, x, denoised, sigma)
    if coordinates is None:
        landing = trajectory.solver.lands_on_denoised(step)
        return (denoised if landing else x + (sigma_next - sigma) * direction), direction
    used = trajectory.corrected(trajectory.basis(direction, x), direction, coordinates)
    return x + (sigma_next - sigma) * used, used


@torch.no_grad()
def sample_pas(model, x, sigmas, extra_args=None, callback=None, disable=None, *, solver="euler",
               max_order=None, coords=None):
    """Any registered base solver, corrected at the steps stored in `coords` (PASCoordinates or None), and
    asking the model at the shifted sigmas of the grid's time offsets where the coordinates have them.

    One model call per step and the 5-key callback every step, as k-diffusion samplers. With coords=None
    it is exactly the plain solver; a step onto sigma = 0 returns `denoised` (as ComfyUI's samplers).
    max_order None (or 0) takes the solver's default, or the order the coordinates were trained with.
    `disable` (k-diffusion's progress-bar switch) is accepted and unused: progress goes through `callback`.
    """
    check_sigmas(sigmas)
    extra_args = {} if extra_args is None else extra_args
    solver = canonical_solver(solver)
    if coords is not None and not max_order and coords.solver == solver:
        max_order = coords.solver_options.get(ORDER)
    options = solver_options(solver, max_order)
    corrections, asked = {}, None
    n_basis, parameterization = 1, "absolute"
    if coords is not None:
        coords.check_solver(solver, options)
        entry = coords.entry_for(sigmas)
        corrections = entry.step_coordinates(x.device, basis_dtype(x.dtype))
        asked = entry.model_sigmas(sigmas)
        trained_shape = coords.metadata.get("latent_shape")
        if coords.parameterization == "absolute" and trained_shape and list(x.shape[1:]) != list(trained_shape):
            log.warning("PAS: absolute coordinates trained on latents of shape %s are used on %s; they do not "
                        "transfer across sizes (relative coordinates do; see docs/ab-study.md).",
                        trained_shape, list(x.shape[1:]))
        n_basis, parameterization = coords.n_basis, coords.parameterization
    base = make_solver(solver, sigmas, **options)
    trajectory = SolverTrajectory(x, base, n_basis, parameterization, keep_buffer=bool(corrections))
    s_in = x.new_ones([x.shape[0]])
    return roll_out(lambda points, sigma: model(points, sigma * s_in, **extra_args), trajectory, x, sigmas,
                    corrections=corrections, callback=callback, model_sigmas=asked)


def roll_out(denoise, trajectory, x, sigmas, first_step=0, corrections=None, callback=None, model_sigmas=None):
    """The solver from step `first_step` to the end of `sigmas`: the final points.

    denoise(points, sigma) is the model call; steps with an entry in `corrections` ({step: c}) are
    corrected. model_sigmas (one per step, or None) are the sigmas the model is asked at, where time offsets
    shift them off the grid; the solver still steps on `sigmas`. The one roll-out of the pack: sampling, the
    held-out checks, the time-offset fit and the schedule choice use it.
    """
    corrections = corrections or {}
    for i in range(first_step, len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoise(x, sigma if model_sigmas is None else model_sigmas[i])
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
        x_next, used = pas_step(trajectory, x, denoised, sigma, sigma_next, i, corrections.get(i))
        trajectory.commit(i, x, denoised, sigma, used)
        x = x_next
    return x
