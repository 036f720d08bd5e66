"""sample_pas: DDIM/Euler and iPNDM with PAS corrections, in the k-diffusion sampler contract."""
from __future__ import annotations

import logging

import torch

from .basis import combine, trajectory_basis
from .grids import check_sigmas
from .solvers import canonical_solver, check_order, push_history, solver_direction

log = logging.getLogger("comfyui_pas")


def basis_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half-precision inputs get their basis computed in float32."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


class SolverTrajectory:
    """State of a batch along one student trajectory: raw-direction history and the PCA buffer.

    Shared by sampling and training so that both follow exactly the same recursion (pas-method.md 13.2:
    the buffer receives the direction actually used, corrected or not).
    """

    def __init__(self, x_start, solver, max_order, n_basis=1, parameterization="absolute", keep_buffer=False):
        self.solver = canonical_solver(solver)
        self.max_order = check_order(self.solver, max_order)
        self.n_basis = n_basis
        self.relative = parameterization == "relative"
        self.dtype = basis_dtype(x_start.dtype)
        self.history: list[torch.Tensor] = []
        self.keep_buffer = keep_buffer
        self.start = self._flat(x_start) if keep_buffer else None
        self.buffer: list[torch.Tensor] = [self.start] if keep_buffer else []

    def _flat(self, tensor):
        return tensor.reshape(tensor.shape[0], -1).to(self.dtype)

    def direction(self, e, step, to_zero):
        """Solver direction D_i; a step onto sigma = 0 is an Euler step (it lands on `denoised`)."""
        if to_zero:
            return e
        return solver_direction(self.solver, e, self.history, step, self.max_order)

    def basis(self, direction, x):
        """U_i (B, n_basis, D) for the current direction and point."""
        return trajectory_basis(self.buffer, self._flat(direction), self._flat(x), self.start, self.n_basis)

    def corrected(self, basis, direction, coordinates):
        """Corrected direction (shaped like `direction`) from the basis and shared coordinates."""
        norm = self._flat(direction).norm(dim=-1) if self.relative else None
        return combine(basis, coordinates, norm).reshape(direction.shape).to(direction.dtype)

    def commit(self, e, used_direction):
        """Record a finished step: raw e into the solver history, the used direction into the buffer."""
        push_history(self.solver, self.history, e, self.max_order)
        if self.keep_buffer:
            self.buffer.append(self._flat(used_direction))

    def rows(self, index):
        """A copy restricted to some samples (for validation roll-outs)."""
        copy = object.__new__(SolverTrajectory)
        copy.__dict__.update(self.__dict__)
        copy.history = [h[index] for h in self.history]
        copy.buffer = [b[index] for b in self.buffer]
        copy.start = None if self.start is None else self.start[index]
        return copy


def pas_step(trajectory, x, denoised, sigma, sigma_next, step, to_zero, coordinates=None):
    """One step from a model output: returns (x_next, raw e, used direction)."""
    e = (x - denoised) / sigma
    direction = trajectory.direction(e, step, to_zero)
    if coordinates is None:
        x_next = denoised if to_zero else x + (sigma_next - sigma) * direction
        return x_next, e, direction
    used = trajectory.corrected(trajectory.basis(direction, x), direction, coordinates)
    return x + (sigma_next - sigma) * used, e, used


@torch.no_grad()
def sample_pas(model, x, sigmas, extra_args=None, callback=None, disable=None, *, solver="euler",
               max_order=4, coords=None):
    """DDIM/Euler or iPNDM, corrected at the steps stored in `coords` (PASCoordinates or None).

    One model call per step and the 5-key callback every step, as k-diffusion samplers. With coords=None
    it is exactly the plain solver; a step onto sigma = 0 returns `denoised` (as ComfyUI's samplers).
    """
    solver = canonical_solver(solver)
    max_order = check_order(solver, max_order)
    check_sigmas(sigmas)
    extra_args = {} if extra_args is None else extra_args
    corrections = {}
    n_basis, parameterization = 1, "absolute"
    if coords is not None:
        coords.validate_for(sigmas, solver, max_order)
        corrections = coords.step_coordinates(x.device, basis_dtype(x.dtype))
        trained_shape = coords.metadata.get("latent_shape")
        if coords.parameterization == "absolute" and trained_shape and list(x.shape[1:]) != list(trained_shape):
            log.warning("PAS: absolute coordinates trained on latents of shape %s are used on %s; they do not "
                        "transfer across sizes (relative coordinates do; see docs/ab-study.md).",
                        trained_shape, list(x.shape[1:]))
        n_basis, parameterization = coords.n_basis, coords.parameterization
    trajectory = SolverTrajectory(x, solver, max_order, n_basis, parameterization, keep_buffer=bool(corrections))
    sigma_values = sigmas.tolist()
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigma_values) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
        x, e, used = pas_step(trajectory, x, denoised, sigma, sigma_next, i, sigma_values[i + 1] == 0,
                              corrections.get(i))
        trajectory.commit(e, used)
    return x
