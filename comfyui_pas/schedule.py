"""learn_schedule: a time schedule searched on teacher trajectories (GITS, Chen et al., ICML 2024, sec. 4).

The teacher integrates each trajectory once over a fine candidate grid and keeps its state and model output
at every candidate point. The cost of one student step from candidate j to candidate k is the error of that
step started on the teacher's state at j, measured against the teacher's state at k; it needs no model call.
A dynamic programme then picks the `steps` steps from sigma_max to sigma_min (or 0) of least summed cost.
PAS can train on the learned grid from the same teacher states (report["targets"]).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .grids import edm_sigmas, refine_sigmas
from .solvers import canonical_solver, make_solver, solver_options
from .teacher import Denoiser, heun_states

OBJECTIVES = ("local", "end_to_end")
DEFAULT_CANDIDATES = 48
DEFAULT_TEACHER_SUBSTEPS = 1
END_TO_END_RHOS = (3.0, 5.0, 7.0, 9.0)


def baseline_grids(steps: int, sigma_min: float, sigma_max: float, append_zero: bool) -> dict[str, torch.Tensor]:
    """EDM polynomial grids of several rho (rho 7 is ComfyUI's karras) with `steps` steps."""
    return {f"edm rho {rho:g}": edm_sigmas(steps, sigma_min, sigma_max, rho=rho, append_zero=append_zero)
            for rho in END_TO_END_RHOS}


def candidate_grid(sigma_min: float, sigma_max: float, count: int, append_zero: bool,
                   extra: list[torch.Tensor] = ()) -> torch.Tensor:
    """`count` candidate points on the EDM rho = 7 curve from sigma_max to sigma_min (then 0), joined with
    the points of the `extra` grids (so those grids lie on the teacher exactly)."""
    grid = edm_sigmas(count - 1, sigma_min, sigma_max)
    parts = [grid, *[g.double() for g in extra]] + ([grid.new_zeros(1)] if append_zero else [])
    return torch.unique(torch.cat(parts)).flip(0)


@dataclass
class CandidateTeacher:
    """A Heun teacher's states (K, N, ...) at the K candidate points and its model outputs (K-1, N, ...) there."""

    grid: torch.Tensor
    states: torch.Tensor
    denoised: torch.Tensor

    @classmethod
    def run(cls, model, x, grid, substeps=DEFAULT_TEACHER_SUBSTEPS, **denoiser_args) -> CandidateTeacher:
        """Integrate x over the candidate grid refined by `substeps` points per interval."""
        denoiser = model if isinstance(model, Denoiser) else Denoiser(model, **denoiser_args)
        outputs = []
        states = heun_states(denoiser, x, refine_sigmas(grid, substeps).to(x.device), substeps + 1,
                             kept_outputs=outputs)
        return cls(grid.double().cpu(), states, torch.stack(outputs))

    def rows(self, index) -> CandidateTeacher:
        return CandidateTeacher(self.grid, self.states[:, index], self.denoised[:, index])


def local_costs(teacher: CandidateTeacher) -> torch.Tensor:
    """C[j, k] (j < k): mean squared error of one Euler step from the teacher at j to candidate k."""
    states, denoised, grid = teacher.states, teacher.denoised, teacher.grid
    count = len(grid)
    costs = torch.full((count, count), float("inf"), dtype=torch.float64)
    values = grid.tolist()
    for j in range(count - 1):
        x_j = states[j]
        for k in range(j + 1, count):
            step = denoised[j] if values[k] == 0 else x_j + (values[k] - values[j]) * (x_j - denoised[j]) / values[j]
            costs[j, k] = float((step - states[k]).double().square().mean())
    return costs


def cheapest_path(costs: torch.Tensor, steps: int) -> list[int]:
    """Indices 0 = i_0 < ... < i_steps = last minimising the summed cost (dynamic programme)."""
    count = costs.shape[0]
    if not 1 <= steps <= count - 1:
        raise ValueError(f"steps must be 1-{count - 1} for {count} candidates, got {steps}")
    forward = torch.ones(count, count, dtype=torch.bool).triu(1)  # only steps to a later candidate
    costs = torch.where(forward, costs.double(), torch.full_like(costs, float("inf"), dtype=torch.float64))
    best = torch.full((steps + 1, count), float("inf"), dtype=torch.float64)
    came = torch.zeros((steps + 1, count), dtype=torch.long)
    best[0, 0] = 0.0
    for n in range(1, steps + 1):
        total = best[n - 1][:, None] + costs  # (from, to)
        best[n], came[n] = total.min(dim=0)
    path = [count - 1]
    for n in range(steps, 0, -1):
        path.append(int(came[n, path[-1]]))
    return path[::-1]


def end_to_end_error(denoiser, x, grid, solver, options, target) -> float:
    """Mean squared error of the plain solver's final sample on `grid` against the teacher's final state."""
    from .sampler import SolverTrajectory, pas_step

    trajectory = SolverTrajectory(x, make_solver(solver, grid, **options))
    grid_x = grid.to(device=x.device, dtype=x.dtype)
    points = x
    for step in range(len(grid) - 1):
        denoised = denoiser(points, grid_x[step])
        points_next, used = pas_step(trajectory, points, denoised, grid_x[step], grid_x[step + 1], step)
        trajectory.commit(step, points, denoised, grid_x[step], used)
        points = points_next
    return float((points - target).double().square().mean())


@torch.no_grad()
def learn_schedule(model, x, steps, *, solver="euler", max_order=None, sigma_min=None, sigma_max=None,
                   append_zero=False, candidates=DEFAULT_CANDIDATES, teacher_substeps=DEFAULT_TEACHER_SUBSTEPS,
                   objective="local", extra_args=None, per_sample_args=None, chunk_size=None, progress=None,
                   teacher: CandidateTeacher | None = None):
    """Learn a `steps`-step grid for `model` from the start points x (N, ..., already scaled by sigma_max).

    objective "local": the GITS dynamic programme on one-step (Euler) costs, no extra model call.
    objective "end_to_end": the base solver run on the training trajectories over the programme's grid and
    EDM grids of several rho, keeping the grid of least final error (N x steps model calls per candidate).
    Returns (sigmas float64, report); report["targets"] holds the teacher states at the learned points,
    ready for train_pas(..., targets=...). A precomputed `teacher` (CandidateTeacher of the same x, objective
    "local") is reused: one teacher run can serve every step count and solver.
    """
    solver = canonical_solver(solver)
    options = solver_options(solver, max_order)
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    sigma_min = float(sigma_min if sigma_min is not None else getattr(model, "sigma_min", float("nan")))
    sigma_max = float(sigma_max if sigma_max is not None else getattr(model, "sigma_max", float("nan")))
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"learn_schedule needs 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max} "
                         "(pass them when the model has no sigma_min / sigma_max)")
    if not torch.isfinite(x).all():
        raise ValueError("the start points contain NaN or inf")
    baselines = baseline_grids(int(steps), sigma_min, sigma_max, append_zero) if objective == "end_to_end" else {}
    grid = candidate_grid(sigma_min, sigma_max, int(candidates), append_zero, list(baselines.values()))
    if teacher is not None:
        if objective != "local":
            raise ValueError("a precomputed teacher serves the 'local' objective only")
        grid = teacher.grid
    if steps > len(grid) - 1:
        raise ValueError(f"{steps} steps need more than {len(grid)} candidates")
    count = x.shape[0]
    teacher_calls = 0 if teacher is not None else \
        count * (2 * (len(grid) - 1) * (teacher_substeps + 1) - (1 if float(grid[-1]) == 0 else 0))
    search_calls = count * steps * (len(END_TO_END_RHOS) + 1) if objective == "end_to_end" else 0
    total = max(1, teacher_calls + search_calls)

    def tick(rows):
        if progress:
            tick.done = min(total, tick.done + rows)
            progress(tick.done, total)
    tick.done = 0

    denoiser = Denoiser(model, extra_args, per_sample_args, chunk_size, tick)
    started = time.perf_counter()
    if teacher is None:
        teacher = CandidateTeacher.run(denoiser, x, grid, int(teacher_substeps))
    states = teacher.states
    if not torch.isfinite(states).all():
        raise ValueError("the teacher trajectories contain NaN or inf (is the model producing NaNs?)")
    costs = local_costs(teacher)
    path = cheapest_path(costs, int(steps))
    choices = {"local": path}
    errors = {}
    if objective == "end_to_end":
        position = {value: index for index, value in enumerate(grid.tolist())}
        for name, baseline in baselines.items():
            choices[name] = [position[value] for value in baseline.tolist()]
        for name, indices in choices.items():
            errors[name] = end_to_end_error(denoiser, x, grid[indices], solver, options, states[-1])
        chosen = min(errors, key=errors.get)
    else:
        chosen = "local"
    indices = choices[chosen]
    sigmas = grid[indices].clone()
    report = {"objective": objective, "chosen": chosen, "indices": indices, "candidates": grid.tolist(),
              "local_cost": float(sum(costs[a, b] for a, b in zip(indices[:-1], indices[1:], strict=True))),
              "end_to_end_errors": errors, "model_calls": denoiser.calls, "teacher_model_calls": teacher_calls,
              "seconds": time.perf_counter() - started, "solver": solver, "solver_options": options,
              "targets": states[indices]}
    if progress:
        progress(total, total)
    return sigmas, report
