"""learn_and_train: a schedule learned from the teacher, then PAS trained on it from the same teacher states."""
from __future__ import annotations

from dataclasses import replace

import torch

from .denoiser import Denoiser
from .progress import Progress
from .schedule import learn_schedule, resolve_schedule, schedule_grids, schedule_model_calls
from .search import grid_model_calls, train_pas
from .settings import AUTO_RULE, ScheduleSettings, SearchSettings
from .solvers import canonical_solver

# The objective of a schedule trained on: the programme's grid or an EDM grid of several rho, whichever the
# solver itself rolls out best on the training trajectories (the local objective alone suits Euler-like
# solvers, not dpmpp_2m / res_multistep; docs/method.md 7).
LEARNED_OBJECTIVE = "end_to_end"


@torch.no_grad()
def learn_and_train(model, x, steps, *, solver="euler", max_order=None, settings: SearchSettings | None = None,
                    schedule: ScheduleSettings | None = None, progress=None, metadata=None):
    """Learn a `steps`-step schedule (objective LEARNED_OBJECTIVE unless `schedule` names one), then train
    PAS on it. One progress(done, total) covers both: the schedule's model calls exactly, the training's as
    the bound of train_pas. Returns (coords, report) of train_pas; report["schedule"] is the schedule's
    report and report["total_model_calls"] counts both jobs."""
    denoiser = Denoiser.of(model)
    settings = settings or SearchSettings.for_rule(AUTO_RULE, canonical_solver(solver))
    schedule = schedule or ScheduleSettings()
    if schedule.objective is None:
        schedule = replace(schedule, objective=LEARNED_OBJECTIVE)
    resolved = resolve_schedule(schedule, None, denoiser, {})
    grid, _ = schedule_grids(resolved, int(steps), None)
    learning_calls = schedule_model_calls(x.shape[0], int(steps), resolved, grid)
    overall = Progress(progress, learning_calls + grid_model_calls(x.shape[0], int(steps), settings))
    learned = learn_schedule(denoiser, x, steps, solver=solver, max_order=max_order, settings=resolved,
                             progress=overall.phase(0))
    coords, report = train_pas(denoiser, x, learned, solver=solver, max_order=max_order, settings=settings,
                               progress=overall.phase(learned.report["model_calls"]), metadata=metadata)
    overall.finish()
    report["total_model_calls"] = learned.report["model_calls"] + report["model_calls"]
    return coords, report
