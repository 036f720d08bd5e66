"""train_pas: the greedy, step-by-step adaptive search of PAS (docs/method.md 5-6).

Per step i, on the corrected trajectory: fit shared coordinates c_i against the teacher (closed-form
least squares; L1 by iteratively reweighted least squares from there), then accept the step if the
training loss drops by more than the tolerance and, with a held-out guard, if the held-out
trajectories' final samples also get closer to the teacher.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace

import torch

from .acceptance import HeldOutErrors, guard_passes, high_pass, loss_drops, pooled, spread
from .coords import GridCoordinates, PASCoordinates
from .denoiser import Denoiser
from .errors import sample_rmse
from .fit import criterion, fit_coordinates
from .grids import check_sigmas
from .grids import teacher_substeps as substeps_for
from .offsets import (
    SigmaShift,
    fit_time_offsets,
    held_out_rows,
    offset_fit_model_calls,
    roll_out_finals,
)
from .progress import Progress
from .sampler import SolverTrajectory, pas_step, roll_out
from .schedule import LearnedSchedule
from .settings import (
    AUTO_RULE,
    DEFAULT_TOLERANCE,
    GUARDS,
    LOSSES,
    SearchSettings,
    TeacherSettings,
    training_settings,
)
from .solvers import ORDER, canonical_solver, make_solver, solver_options
from .teacher import teacher_nfe_for, teacher_states

__all__ = ["DEFAULT_N_BASIS", "DEFAULT_TOLERANCE", "GUARDS", "LOSSES", "SearchSettings", "TeacherSettings",
           "criterion", "fit_coordinates", "guard_passes", "high_pass", "sample_errors", "train_pas"]

# Read from SearchSettings, the one source of the defaults (the node's widgets show them).
DEFAULT_N_BASIS = SearchSettings.n_basis
DEFAULT_PARAMETERIZATION = SearchSettings.parameterization
sample_errors = sample_rmse  # per-sample RMSE (n,) between final samples


def guard_model_calls(n_val: int, steps: int) -> int:
    """Upper bound of the held-out roll-out calls: one plain roll-out, then one per candidate step."""
    return n_val * (steps + steps * (steps - 1) // 2)


def search_model_calls(count: int, steps: int, settings: SearchSettings) -> int:
    """Upper bound of the search's model calls on one grid: every trajectory once per step, plus the
    held-out roll-outs (spent only for steps whose training loss drops)."""
    return count * steps + guard_model_calls(settings.for_steps(steps).held_out(count), steps)


def grid_model_calls(count: int, steps: int, settings: SearchSettings) -> int:
    """Upper bound of train_pas's model calls on one grid after the teacher: the search, and with time offsets
    their fit, the search on the shifted model and the two roll-outs of every trajectory that choose."""
    calls = search_model_calls(count, steps, settings)
    if settings.time_offsets:
        calls += offset_fit_model_calls(count, steps) + search_model_calls(count, steps, settings) + 2 * count * steps
    return calls


def as_grid_list(sigmas) -> list[torch.Tensor]:
    """One grid or a sequence of grids, each checked."""
    grids = [sigmas] if isinstance(sigmas, torch.Tensor) else list(sigmas)
    if not grids:
        raise ValueError("no sigma grid given")
    for grid in grids:
        check_sigmas(grid)
    return grids


def union_grid(grids: list[torch.Tensor]) -> torch.Tensor:
    """All points of the grids, strictly decreasing, in float64 (a zero only at the end)."""
    values = torch.cat([grid.detach().double().cpu() for grid in grids])
    return torch.unique(values).flip(0)


def teacher_targets(denoiser, x, grids, teacher_nfe, teacher_substeps):
    """One Heun teacher run over the union of the grids (refined): the states at each grid's points."""
    union = union_grid(grids)
    substeps = substeps_for(union, teacher_nfe) if teacher_substeps is None else int(teacher_substeps)
    states, info = teacher_states(denoiser, x, union.to(x.device), substeps=substeps)
    position = {value: index for index, value in enumerate(union.tolist())}
    per_grid = [states[[position[v] for v in grid.detach().double().cpu().tolist()]] for grid in grids]
    info = dict(info, union_points=len(union))
    return per_grid, info


# ---- the search on one grid ------------------------------------------------------------------------
@dataclass
class StepFit:
    """Step i fitted: the plain step's loss, and for a candidate step its coordinates and corrected step."""

    step: int
    loss_plain: float
    feasible: bool
    coordinates: torch.Tensor | None = None
    direction: torch.Tensor | None = None  # the corrected direction
    next_points: torch.Tensor | None = None  # the corrected step's end
    loss_corrected: float | None = None


@dataclass
class StepDecision:
    """Step i judged: whether the training loss dropped, the held-out errors after it, and the verdict."""

    fit: StepFit
    loss_dropped: bool = False
    held_out: HeldOutErrors | None = None  # after the corrected step (None: not rolled out)
    accepted: bool = False


@dataclass
class GridResult:
    entry: GridCoordinates
    steps: list[dict]
    final_loss: float
    val_plain: HeldOutErrors | None
    val_pas: HeldOutErrors | None


class GridSearch:
    """The greedy per-step search of PAS on one student grid (docs/method.md 5-6)."""

    def __init__(self, denoiser, x, sigmas, targets, solver, options, settings: SearchSettings):
        self.denoiser, self.x, self.targets, self.settings = denoiser, x, targets, settings
        count = x.shape[0]
        n_val = settings.held_out(count)
        self.train_rows, self.val_rows = slice(0, count - n_val), slice(count - n_val, count)
        self.n_val, self.steps, self.sigmas = n_val, len(sigmas) - 1, sigmas
        self.sigma_values, self.sigmas_x = sigmas.tolist(), sigmas.to(x.device)
        self.trajectory = SolverTrajectory(x, make_solver(solver, sigmas, **options), settings.n_basis,
                                           settings.parameterization, keep_buffer=True)

    def held_out_errors(self, trajectory, points, first_step) -> HeldOutErrors:
        """Errors of the held-out rows after the plain solver finishes from `first_step`."""
        final = roll_out(lambda p, sigma: self.denoiser(p, sigma, self.val_rows), trajectory, points,
                         self.sigmas_x, first_step)
        return HeldOutErrors.of(final, self.targets[-1, self.val_rows], patches=self.settings.guard == "patches")

    def fit(self, step, points, direction, plain_next) -> StepFit:
        """Fit c_i of step i against the teacher's next state on the training rows."""
        settings, train, target = self.settings, self.train_rows, self.targets[step + 1]
        result = StepFit(step, criterion(plain_next[train], target[train], settings.loss),
                         settings.may_correct(step, self.steps))
        if not result.feasible:
            return result
        basis = self.trajectory.basis(direction, points)
        h = float(self.sigma_values[step + 1] - self.sigma_values[step])
        wanted = ((target - points) / h).reshape(points.shape[0], -1).to(basis.dtype)
        scale = self.trajectory.direction_scale(direction)
        c = self.fit_step(basis[train], wanted[train], None if scale is None else scale[train],
                          points[train], h, target[train])
        result.coordinates = c
        result.direction = self.trajectory.corrected(basis, direction, c.to(device=basis.device, dtype=basis.dtype))
        result.next_points = points + (self.sigmas_x[step + 1] - self.sigmas_x[step]) * result.direction
        result.loss_corrected = criterion(result.next_points[train], target[train], settings.loss)
        return result

    def fit_step(self, basis, wanted, scale, points, h, target) -> torch.Tensor:
        """The step's shared coordinates from the training rows: the fit of docs/method.md 5 (a study may
        override it; points, h and target, the teacher's next states, are for such fits)."""
        return fit_coordinates(basis, wanted, scale, self.settings.loss)

    def decide(self, fit: StepFit, points, denoised, held_out_before) -> StepDecision:
        """Keep the fitted step if its training loss drops and its held-out roll-out passes the guard."""
        decision = StepDecision(fit)
        if not fit.feasible:
            return decision
        decision.loss_dropped = loss_drops(fit.loss_plain, fit.loss_corrected, self.settings)
        if not decision.loss_dropped:
            return decision
        if not self.n_val:
            decision.accepted = True
            return decision
        rows, step = self.val_rows, fit.step
        held_out = self.trajectory.rows(rows)
        held_out.commit(step, points[rows], denoised[rows], self.sigmas_x[step], fit.direction[rows])
        decision.held_out = self.held_out_errors(held_out, fit.next_points[rows], step + 1)
        decision.accepted = guard_passes(held_out_before, decision.held_out, self.settings.guard,
                                         self.settings.min_held_out_gain)
        return decision

    def step_report(self, decision: StepDecision, held_out_before) -> dict:
        fit, step = decision.fit, decision.fit.step
        entry = {"step": step, "sigma": self.sigma_values[step], "sigma_next": self.sigma_values[step + 1],
                 "loss_plain": fit.loss_plain, "loss_corrected": fit.loss_corrected, "feasible": fit.feasible,
                 "accepted": decision.accepted, "coordinates": None if fit.coordinates is None else fit.coordinates.tolist(),
                 "val_final_before": pooled(held_out_before), "val_final_corrected": pooled(decision.held_out)}
        if decision.held_out is not None:
            entry["val_high_pass_before"] = pooled(held_out_before, fine=True)
            entry["val_high_pass_corrected"] = decision.held_out.pooled(fine=True)
        return entry

    def run(self) -> GridResult:
        x, count = self.x, self.x.shape[0]
        held_out = plain = None
        if self.n_val:
            held_out = plain = self.held_out_errors(self.trajectory.rows(self.val_rows), x[self.val_rows], 0)
        points, decisions, reports = x, [], []
        for step in range(self.steps):
            sigma = self.sigmas_x[step]
            denoised = self.denoiser(points, sigma, slice(0, count))
            if not torch.isfinite(denoised).all():
                raise ValueError(f"the model returned NaN or inf at step {step} (sigma {self.sigma_values[step]:.4g})")
            plain_next, direction = pas_step(self.trajectory, points, denoised, sigma, self.sigmas_x[step + 1], step)
            decision = self.decide(self.fit(step, points, direction, plain_next), points, denoised, held_out)
            reports.append(self.step_report(decision, held_out))
            decisions.append(decision)
            if decision.accepted:
                direction, plain_next = decision.fit.direction, decision.fit.next_points
                held_out = decision.held_out or held_out
            self.trajectory.commit(step, points, denoised, sigma, direction)
            points = plain_next
        return self.result(decisions, reports, points, plain, held_out)

    def result(self, decisions, reports, points, plain, held_out) -> GridResult:
        kept = [d.fit for d in decisions if d.accepted]
        stacked = torch.stack([f.coordinates for f in kept]) if kept else torch.zeros(0, self.settings.n_basis)
        entry = GridCoordinates(self.sigmas.double().cpu(), [f.step for f in kept], stacked)
        final_loss = criterion(points[self.train_rows], self.targets[-1, self.train_rows], self.settings.loss)
        return GridResult(entry, reports, final_loss, plain, held_out)


def search_grid(denoiser, x, sigmas, targets, solver, options, settings: SearchSettings) -> GridResult:
    """The greedy per-step search of PAS on one student grid (docs/method.md 5-6)."""
    return GridSearch(denoiser, x, sigmas, targets, solver, options, settings).run()


# ---- train_pas -------------------------------------------------------------------------------------
DENOISER_ARGUMENTS = ("extra_args", "per_sample_args", "chunk_size")


def resolve_arguments(model, settings, teacher, overrides):
    """(Denoiser, SearchSettings, teacher) from train_pas's arguments and keyword overrides.

    Overrides name SearchSettings fields (n_basis=4, guard='none', ...) or teacher_nfe / teacher_substeps
    (settings.training_settings); targets (precomputed teacher states) and the Denoiser's extra_args /
    per_sample_args / chunk_size are also accepted, for callers written before the settings objects."""
    rest = dict(overrides)
    if "targets" in rest:
        if teacher is not None:
            raise ValueError("give the teacher states once: teacher= or targets=, not both")
        teacher = rest.pop("targets")
    calls = {key: rest.pop(key) for key in DENOISER_ARGUMENTS if key in rest}
    try:
        settings, teacher = training_settings(settings, teacher, **rest)
    except TypeError as error:
        raise TypeError(f"train_pas: {error}") from None
    denoiser = Denoiser(model, **calls) if calls else Denoiser.of(model)
    return denoiser, settings, teacher


def given_states(teacher, grids, x) -> list[torch.Tensor] | None:
    """Precomputed teacher states, one (steps+1, N, ...) tensor per grid, checked; None for a teacher to run."""
    if teacher is None or isinstance(teacher, TeacherSettings):
        return None
    states = [teacher] if isinstance(teacher, torch.Tensor) else list(teacher)
    if len(states) != len(grids):
        raise ValueError(f"got {len(states)} teacher state tensors for {len(grids)} grids")
    for grid, target in zip(grids, states, strict=True):
        if target.shape[0] != len(grid) or target.shape[1:] != x.shape:
            raise ValueError(f"teacher states must have shape {(len(grid), *x.shape)}, got {tuple(target.shape)}")
    return states


def check_start(x, grids, settings):
    if not torch.isfinite(x).all():
        raise ValueError("the start points contain NaN or inf")
    for grid in grids:
        settings.for_steps(len(grid) - 1).held_out(x.shape[0])
    if any(float(grid[0]) != float(grids[0][0]) for grid in grids):
        raise ValueError("all grids of one training must start at the same sigma (one start point per trajectory)")


def planned_calls(count, grids, settings, teacher) -> int:
    """The model calls train_pas plans: the teacher's exactly, the search's (and the time-offset fit's) as a bound."""
    search = sum(grid_model_calls(count, len(grid) - 1, settings) for grid in grids)
    if not isinstance(teacher, TeacherSettings):
        return search
    union = union_grid(grids)
    substeps = substeps_for(union, teacher.nfe) if teacher.substeps is None else int(teacher.substeps)
    return count * teacher_nfe_for(union, substeps) + search


@torch.no_grad()
def train_pas(model, x, sigmas, *, solver="euler", max_order=None, settings: SearchSettings | None = None,
              teacher=None, progress=None, metadata=None, **overrides):
    """Learn PAS coordinates for `model` on the student grid `sigmas` from the start points x (N, ...).

    model: a k-diffusion denoiser or a Denoiser (its extra / per-sample arguments and chunk size).
    x: the already-scaled start (sigma_max * noise for EDM models). sigmas: one grid, several grids (one
    teacher run serves them all), or a LearnedSchedule (its grid, in x's precision, and its teacher states).
    settings: SearchSettings (None: the solver's acceptance rule, settings.default_rule); keyword overrides
    replace single fields (n_basis=4).
    teacher: TeacherSettings, or precomputed states (steps+1, N, ...) (one tensor per grid).
    progress(done, total) counts model calls. Returns (PASCoordinates, report); report["grids"] has one
    report per grid, the first grid's also at the top level.
    """
    solver = canonical_solver(solver)
    settings = settings or SearchSettings.for_rule(AUTO_RULE, solver)
    denoiser, settings, teacher = resolve_arguments(model, settings, teacher, overrides)
    schedule = sigmas if isinstance(sigmas, LearnedSchedule) else None
    if schedule is not None:
        if teacher is not None and not isinstance(teacher, TeacherSettings):
            raise ValueError("a LearnedSchedule brings its teacher states: give no teacher states with it")
        sigmas, teacher = schedule.sigmas.to(x.dtype), schedule.states
    options = solver_options(solver, max_order)
    grids = as_grid_list(sigmas)
    check_start(x, grids, settings)
    states = given_states(teacher, grids, x)
    teacher = teacher if states is not None or isinstance(teacher, TeacherSettings) else TeacherSettings()
    tick = Progress(progress, planned_calls(x.shape[0], grids, settings, teacher))
    coords, report = run_training(denoiser.counted(tick), x, grids, states, teacher, solver, options, settings,
                                  metadata)
    tick.finish()
    if schedule is not None:
        schedule.attach(coords, report)
    return coords, report


def run_training(denoiser, x, grids, states, teacher, solver, options, settings, metadata):
    """The teacher (unless its states are given), then the search on every grid; (coords, report)."""
    started = time.perf_counter()
    if states is None:
        states, teacher_info = teacher_targets(denoiser, x, grids, teacher.nfe, teacher.substeps)
    else:
        teacher_info = {"solver": "given", "substeps": None, "nfe": None, "seconds": 0.0}
    teacher_calls = denoiser.calls
    for target in states:
        if not torch.isfinite(target).all():
            raise ValueError("the teacher trajectories contain NaN or inf (is the model producing NaNs?)")
    search_started = time.perf_counter()
    results, offset_fits = [], []
    per_grid = [settings.for_steps(len(grid) - 1) for grid in grids]
    for grid, target, grid_settings in zip(grids, states, per_grid, strict=True):
        if settings.time_offsets:
            searched = search_with_offsets(denoiser, x, grid, target, solver, options, grid_settings)
            result, fit = searched.chosen, searched.fit
        else:
            result, fit = search_grid(denoiser, x, grid, target, solver, options, grid_settings), None
        results.append(result)
        offset_fits.append(fit)
    search_seconds = time.perf_counter() - search_started
    report, info = training_report(results, per_grid, x, teacher_info, metadata)
    if settings.time_offsets:
        for grid_report_, fit in zip(report["grids"], offset_fits, strict=True):
            grid_report_["time_offsets"] = fit
        report["time_offsets"] = offset_fits[0]
    report.update(teacher_seconds=teacher_info["seconds"] or (search_started - started),
                  search_seconds=search_seconds, model_calls=denoiser.calls, teacher_model_calls=teacher_calls)
    first, rest = results[0].entry, [r.entry for r in results[1:]]
    coords = PASCoordinates(sigmas=first.sigmas, solver=solver, max_order=options.get(ORDER),
                            n_basis=settings.n_basis, steps=first.steps, coordinates=first.coordinates,
                            parameterization=settings.parameterization, metadata=info, more_grids=rest,
                            log_offsets=first.log_offsets)
    return coords, report


@dataclass
class OffsetSearch:
    """The search on the plain model, the time-offset fit, and the search on the shifted model (None unless
    the held-out rows confirmed the offsets); `chosen` is what train_pas keeps."""

    plain: GridResult
    shifted: GridResult | None
    fit: dict

    @property
    def chosen(self) -> GridResult:
        return self.shifted if self.fit["kept"] else self.plain


def search_with_offsets(denoiser, x, grid, target, solver, options, settings) -> OffsetSearch:
    """The search on the plain model and, if time offsets are fitted and confirmed, again on the shifted model.
    The second is kept only if its final error on the offsets' held-out rows is lower than the first's, and
    its finals' mean contrast (per-sample spread, all trajectories) is no further from the teacher's: both the
    error and the offsets' fit reward a pull toward the mean (blur), which the contrast shows."""
    plain = search_grid(denoiser, x, grid, target, solver, options, settings)
    offsets, fit = fit_time_offsets(denoiser, x, grid, target[-1], solver, options, loss=settings.offset_loss)
    if offsets is None:
        return OffsetSearch(plain, None, fit)
    with denoiser.shifted(SigmaShift(grid, offsets)):
        shifted = search_grid(denoiser, x, grid, target, solver, options, settings)
    shifted.entry = replace(shifted.entry, log_offsets=offsets)
    rows, every = held_out_rows(x.shape[0]), slice(0, x.shape[0])
    finals = [roll_out_finals(denoiser, x, grid, solver, options, every, entry=result.entry, n_basis=settings.n_basis,
                              parameterization=settings.parameterization) for result in (plain, shifted)]
    errors = [criterion(f[rows], target[-1, rows], settings.offset_loss) for f in finals]
    goal = float(spread(target[-1]).mean())
    gaps = [abs(float(spread(f).mean()) - goal) for f in finals]
    fit.update(held_out_error_pas=errors[0], held_out_error_pas_offsets=errors[1], contrast_gap_pas=gaps[0],
               contrast_gap_pas_offsets=gaps[1], kept_by_error=errors[1] < errors[0],
               kept=errors[1] < errors[0] and gaps[1] <= gaps[0])
    return OffsetSearch(plain, shifted, fit)


def grid_report(result: GridResult, settings: SearchSettings) -> dict:
    return {"steps": result.steps, "accepted": result.entry.steps, "sigmas": result.entry.sigmas.tolist(),
            "rule": settings.rule,
            "train_final_loss": result.final_loss, "val_final_plain": pooled(result.val_plain),
            "val_final_pas": pooled(result.val_pas), "val_high_pass_plain": pooled(result.val_plain, fine=True),
            "val_high_pass_pas": pooled(result.val_pas, fine=True)}


def training_report(results, per_grid, x, teacher_info, metadata):
    """(report, file metadata): the first grid's report at the top level (one-grid callers), all in 'grids';
    per_grid: the settings each grid was searched with (the first grid's are recorded at the top level)."""
    count, settings = x.shape[0], per_grid[0]
    n_val = settings.held_out(count)
    recorded = dict(settings.recorded(), validation_fraction=settings.validation_fraction if n_val else 0.0,
                    n_trajectories=count, n_validation=n_val, teacher=teacher_info, latent_shape=list(x.shape[1:]))
    grids = [grid_report(result, grid_settings) for result, grid_settings in zip(results, per_grid, strict=True)]
    report = dict(grids[0], settings=recorded, grids=grids)
    info = dict(recorded, per_step=[{k: s[k] for k in ("step", "loss_plain", "loss_corrected", "accepted")}
                                    for s in results[0].steps])
    if len(results) > 1:
        info["per_grid"] = [{"steps": len(r.entry.sigmas) - 1, "rule": grid_settings.rule,
                             "val_final_plain": pooled(r.val_plain), "val_final_pas": pooled(r.val_pas)}
                            for r, grid_settings in zip(results, per_grid, strict=True)]
    info.update(metadata or {})
    return report, info
