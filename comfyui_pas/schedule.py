"""learn_schedule: a time schedule searched on teacher trajectories (GITS, Chen et al., ICML 2024, sec. 4).

The teacher integrates each trajectory once over a fine candidate grid and keeps its state and model output
at every candidate point. The cost of one student step from candidate j to candidate k is the error of that
step started on the teacher's state at j, measured against the teacher's state at k; it needs no model call.
A dynamic programme then picks the `steps` steps from sigma_max to sigma_min (or 0) of least summed cost.
learn_schedule returns a LearnedSchedule: the grid, the teacher states there and the report; train_pas
takes it in place of sigmas and trains on those states, with no teacher run of its own.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import torch

from .denoiser import Denoiser
from .errors import mean_square_error
from .grids import edm_sigmas, heun_nfe, refine_sigmas
from .progress import Progress
from .sampler import SolverTrajectory, roll_out
from .settings import OBJECTIVES, ScheduleSettings, split_overrides
from .solvers import canonical_solver, make_solver, solver_options
from .teacher import heun_states

__all__ = ["OBJECTIVES", "CandidateTeacher", "LearnedSchedule", "ScheduleSettings", "learn_schedule"]

DEFAULT_CANDIDATES = ScheduleSettings.candidates
DEFAULT_TEACHER_SUBSTEPS = ScheduleSettings.teacher_substeps
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
    def run(cls, model, x, grid, substeps=DEFAULT_TEACHER_SUBSTEPS) -> CandidateTeacher:
        """Integrate x over the candidate grid refined by `substeps` points per interval (model: a Denoiser
        or a plain k-diffusion model)."""
        denoiser = Denoiser.of(model)
        outputs = []
        states = heun_states(denoiser, x, refine_sigmas(grid, substeps).to(x.device), substeps + 1,
                             kept_outputs=outputs)
        return cls(grid.double().cpu(), states, torch.stack(outputs))

    def rows(self, index) -> CandidateTeacher:
        return CandidateTeacher(self.grid, self.states[:, index], self.denoised[:, index])

    @staticmethod
    def model_calls(count: int, grid: torch.Tensor, substeps: int) -> int:
        """Model calls of CandidateTeacher.run for `count` trajectories."""
        return count * heun_nfe((len(grid) - 1) * (substeps + 1), float(grid[-1]) == 0)


def final_share(teacher: CandidateTeacher) -> torch.Tensor:
    """(K,) the share of a squared error made at each candidate sigma that reaches the final sample, to first
    order for data of the teacher finals' variance v: v / (v + sigma^2) (the probability-flow ODE of Gaussian
    data scales a perturbation at sigma by sqrt(v / (v + sigma^2)) on its way to sigma 0)."""
    variance = float(teacher.states[-1].double().var())
    return variance / (variance + teacher.grid.double() ** 2)


def local_costs(teacher: CandidateTeacher, weighting: str = "none") -> torch.Tensor:
    """C[j, k] (j < k): mean squared error of one Euler step from the teacher at j to candidate k; with
    weighting "final", times final_share at k (the error as it reaches the final sample)."""
    states, denoised, grid = teacher.states, teacher.denoised, teacher.grid
    count = len(grid)
    costs = torch.full((count, count), float("inf"), dtype=torch.float64)
    values = grid.tolist()
    share = final_share(teacher).tolist() if weighting == "final" else [1.0] * count
    for j in range(count - 1):
        x_j = states[j]
        for k in range(j + 1, count):
            step = denoised[j] if values[k] == 0 else x_j + (values[k] - values[j]) * (x_j - denoised[j]) / values[j]
            costs[j, k] = mean_square_error(step, states[k]) * share[k]
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
    trajectory = SolverTrajectory(x, make_solver(solver, grid, **options))
    final = roll_out(denoiser, trajectory, x, grid.to(device=x.device, dtype=x.dtype))
    return mean_square_error(final, target)


@dataclass
class LearnedSchedule:
    """A learned grid (float64), the teacher's states there (steps+1, N, ...) and the search's report.

    train_pas(model, x, schedule) trains on it from these states. Unpacking gives the pair
    (sigmas, report with the states under "targets") that learn_schedule once returned.
    """

    sigmas: torch.Tensor
    states: torch.Tensor
    report: dict = field(default_factory=dict)

    def __iter__(self):
        return iter((self.sigmas, dict(self.report, targets=self.states)))

    def attach(self, coords, report) -> None:
        """Record the schedule in a training's report and in its file's metadata."""
        report["schedule"] = dict(self.report)
        coords.metadata["schedule"] = {k: self.report[k] for k in ("objective", "cost_weighting", "chosen", "local_cost",
                                                                    "model_calls")}


def resolve_schedule(settings, teacher, denoiser, overrides, default_objective="local") -> ScheduleSettings:
    """ScheduleSettings with the overrides applied, the objective and the sigma range filled in, checked."""
    settings = replace(settings or ScheduleSettings(), **overrides)
    low, high = denoiser.sigma_range()
    settings = replace(settings, objective=settings.objective or default_objective,
                       sigma_min=float(low if settings.sigma_min is None else settings.sigma_min),
                       sigma_max=float(high if settings.sigma_max is None else settings.sigma_max))
    if not 0 < settings.sigma_min < settings.sigma_max:
        raise ValueError(f"learn_schedule needs 0 < sigma_min < sigma_max, got {settings.sigma_min}, "
                         f"{settings.sigma_max} (pass them when the model has no sigma_min / sigma_max)")
    return settings


def schedule_grids(settings: ScheduleSettings, steps: int, teacher):
    """(candidate grid, baseline grids of the end-to-end choice) for a resolved ScheduleSettings."""
    end_to_end = settings.objective == "end_to_end"
    baselines = baseline_grids(steps, settings.sigma_min, settings.sigma_max, settings.append_zero) if end_to_end else {}
    grid = candidate_grid(settings.sigma_min, settings.sigma_max, settings.candidates, settings.append_zero,
                          list(baselines.values()))
    if teacher is not None:
        grid = teacher.grid
        on_grid = set(grid.double().tolist())
        missing = [name for name, baseline in baselines.items() if not set(baseline.double().tolist()) <= on_grid]
        if missing:
            raise ValueError(f"the precomputed teacher's grid lacks the points of {', '.join(missing)} ({steps} steps, "
                             f"sigma {settings.sigma_min:g}-{settings.sigma_max:g}, append_zero "
                             f"{settings.append_zero}): build it on candidate_grid(..., extra=baseline_grids(...)) "
                             "for the end-to-end objective")
    if steps > len(grid) - 1:
        raise ValueError(f"{steps} steps need more than {len(grid)} candidates")
    return grid, baselines


def schedule_model_calls(count, steps, settings: ScheduleSettings, grid, teacher=None) -> int:
    """Model calls of learn_schedule: the candidate teacher (unless given), and for the end-to-end choice one
    roll-out per trajectory on the programme's grid and on each baseline grid."""
    teacher_calls = 0 if teacher is not None else CandidateTeacher.model_calls(count, grid, settings.teacher_substeps)
    choice_calls = count * steps * (len(END_TO_END_RHOS) + 1) if settings.objective == "end_to_end" else 0
    return teacher_calls + choice_calls


def choose_grid(denoiser, x, steps, grid, baselines, teacher, solver, options, objective, weighting="none"):
    """(name, indices, end-to-end errors, local costs): the programme's path (on local costs weighted by
    `weighting`), or under the end-to-end objective the grid of least final error among it and the baselines."""
    costs = local_costs(teacher, weighting)
    choices = {"local": cheapest_path(costs, steps)}
    if objective != "end_to_end":
        return "local", choices["local"], {}, costs
    position = {value: index for index, value in enumerate(grid.tolist())}
    for name, baseline in baselines.items():
        choices[name] = [position[value] for value in baseline.tolist()]
    errors = {name: end_to_end_error(denoiser, x, grid[indices], solver, options, teacher.states[-1])
              for name, indices in choices.items()}
    chosen = min(errors, key=errors.get)
    return chosen, choices[chosen], errors, costs


@torch.no_grad()
def learn_schedule(model, x, steps, *, solver="euler", max_order=None, settings: ScheduleSettings | None = None,
                   teacher: CandidateTeacher | None = None, progress=None, **overrides) -> LearnedSchedule:
    """Learn a `steps`-step grid for `model` from the start points x (N, ..., already scaled by sigma_max).

    model: a k-diffusion denoiser or a Denoiser. settings: ScheduleSettings (keyword overrides replace single
    fields). Objective "local": the GITS dynamic programme on one-step (Euler) costs, no extra model call.
    "end_to_end": the base solver run on the training trajectories over the programme's grid and EDM grids
    of several rho, keeping the grid of least final error (N x steps model calls per candidate grid).
    A precomputed `teacher` (CandidateTeacher of the same x) is reused: one teacher run can serve every step
    count and solver; for "end_to_end" its grid must hold the baseline grids' points. Returns a LearnedSchedule.
    """
    named, calls = split_overrides(overrides, ScheduleSettings)
    denoiser = Denoiser(model, **calls) if calls else Denoiser.of(model)
    settings = resolve_schedule(settings, teacher, denoiser, named)
    solver, steps = canonical_solver(solver), int(steps)
    options = solver_options(solver, max_order)
    if not torch.isfinite(x).all():
        raise ValueError("the start points contain NaN or inf")
    grid, baselines = schedule_grids(settings, steps, teacher)
    tick = Progress(progress, schedule_model_calls(x.shape[0], steps, settings, grid, teacher))
    denoiser, started = denoiser.counted(tick), time.perf_counter()
    teacher_given = teacher is not None
    if not teacher_given:
        teacher = CandidateTeacher.run(denoiser, x, grid, settings.teacher_substeps)
    if not torch.isfinite(teacher.states).all():
        raise ValueError("the teacher trajectories contain NaN or inf (is the model producing NaNs?)")
    teacher_calls = denoiser.calls
    chosen, indices, errors, costs = choose_grid(denoiser, x, steps, grid, baselines, teacher, solver, options,
                                                 settings.objective, settings.cost_weighting)
    report = {"objective": settings.objective, "cost_weighting": settings.cost_weighting, "chosen": chosen,
              "indices": indices, "candidates": grid.tolist(),
              "local_cost": float(sum(costs[a, b] for a, b in zip(indices[:-1], indices[1:], strict=True))),
              "end_to_end_errors": errors, "model_calls": denoiser.calls,
              "teacher_model_calls": 0 if teacher_given else teacher_calls,
              "seconds": time.perf_counter() - started, "solver": solver, "solver_options": options}
    tick.finish()
    return LearnedSchedule(grid[indices].clone(), teacher.states[indices], report)
