"""train_pas: the greedy, step-by-step adaptive search of PAS (pas-method.md 5-6, 13.4-13.5).

Per step i, on the corrected trajectory: fit shared coordinates c_i against the teacher (closed-form
least squares; L1 by iteratively reweighted least squares from there), then accept the step if the
training loss drops by more than the tolerance and, with the validation guard, if the held-out
trajectories' final samples also get closer to the teacher.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .basis import basis_is_feasible
from .coords import MAX_BASIS, PARAMETERIZATIONS, GridCoordinates, PASCoordinates
from .grids import check_sigmas
from .grids import teacher_substeps as substeps_for
from .sampler import SolverTrajectory, pas_step
from .solvers import ORDER, canonical_solver, make_solver, solver_options
from .teacher import Denoiser, teacher_nfe_for, teacher_states

# Defaults chosen by the A/B study in docs/ab-study.md (relative coordinates, 3 basis vectors).
DEFAULT_PARAMETERIZATION = "relative"
DEFAULT_N_BASIS = 3
DEFAULT_TOLERANCE = {"relative": 0.01, "absolute": 1e-4}
# FID-safe acceptance (docs/objective-study.md): a held-out RMSE gain below this fraction is not worth a step's
# side effects, and the last step (onto the grid's end) is left to the solver.
DEFAULT_MIN_HELD_OUT_GAIN = 0.05
DEFAULT_CORRECT_LAST_STEP = False
LOSSES = ("l1", "l2")
# Held-out checks of a candidate step (each on the final samples of held-out trajectories):
# mean: their RMSE drops; validation: mean, and the median sample's error drops too; spectral: validation, and
# the RMSE of the high-pass part does not grow (a correction that trades fine-detail error for coarse error
# adds grain that FID sees); none: no held-out check (the paper's rule).
GUARDS = ("validation", "spectral", "mean", "none")
IRLS_ITERATIONS = 20


def criterion(a: torch.Tensor, b: torch.Tensor, loss: str) -> float:
    """Mean absolute (l1) or mean squared (l2) error over all elements."""
    diff = (a - b).double()
    return float(diff.abs().mean() if loss == "l1" else diff.square().mean())


def _pair_sums(weights, left, right):
    """sum over samples and elements of weights * left * right (weights may be None)."""
    product = left * right
    if weights is not None:
        product = product * weights
    return product.double().sum()


def fit_coordinates(basis, target, scale, loss="l1", iterations=IRLS_ITERATIONS, step_size=1.0):
    """Shared coordinates c minimising sum_n |scale_n * U_n^T c - target_n| (l1) or its square (l2).

    basis (n, k, D), target (n, D), scale (n,) or None. Returns float64 (k,).
    """
    k = basis.shape[1]
    scaled = basis if scale is None else basis * scale.to(basis.dtype)[:, None, None]

    def solve(weights):
        gram = torch.empty(k, k, dtype=torch.float64)
        rhs = torch.empty(k, dtype=torch.float64)
        for a in range(k):
            rhs[a] = _pair_sums(weights, scaled[:, a], target)
            for b in range(a, k):
                gram[a, b] = gram[b, a] = _pair_sums(weights, scaled[:, a], scaled[:, b])
        ridge = 1e-12 * gram.diagonal().abs().max().clamp_min(1e-300)
        return torch.linalg.solve(gram + ridge * torch.eye(k, dtype=torch.float64), rhs)

    def prediction(c):
        return (scaled * c.to(scaled.dtype)[None, :, None]).sum(dim=1)

    c = solve(None)
    if loss == "l2":
        return c
    best, best_loss = c, criterion(prediction(c), target, "l1")
    floor = 1e-6 * float(target.abs().mean().clamp_min(1e-30))
    for _ in range(iterations):
        residual = (prediction(c) - target).abs().clamp_min(floor)
        c = solve(1.0 / residual)
        current = criterion(prediction(c), target, "l1")
        if current < best_loss:
            best, best_loss = c, current
    return best


def sample_errors(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample RMSE (n,) between final samples."""
    return (a - b).double().flatten(1).square().mean(dim=1).sqrt()


def high_pass(x: torch.Tensor) -> torch.Tensor:
    """x minus its 3x3 local mean, per channel, for image-shaped (B, C, H, W) tensors; None otherwise."""
    if x.ndim != 4 or min(x.shape[-2:]) < 3:
        return None
    flat = x.double().reshape(-1, 1, *x.shape[-2:])
    smooth = torch.nn.functional.avg_pool2d(flat, 3, stride=1, padding=1, count_include_pad=False)
    return (flat - smooth).reshape(x.shape)


@dataclass
class HeldOutErrors:
    """Per-sample errors of held-out final samples: RMSE, and RMSE of the high-pass part (None off images)."""

    rmse: torch.Tensor
    high_pass: torch.Tensor | None

    @classmethod
    def of(cls, final: torch.Tensor, target: torch.Tensor) -> HeldOutErrors:
        fine_final, fine_target = high_pass(final), high_pass(target)
        fine = None if fine_final is None else sample_errors(fine_final, fine_target)
        return cls(sample_errors(final, target), fine)


def _mean_square(errors: torch.Tensor) -> float:
    return float(errors.square().mean())


def guard_passes(before: HeldOutErrors, after: HeldOutErrors, guard: str = "validation", min_gain: float = 0.0) -> bool:
    """The held-out check named by `guard` (see GUARDS): the held-out RMSE must drop by more than the fraction
    min_gain; the median rule keeps a rare large fix from hiding a majority made worse, nor the reverse."""
    if guard == "none":
        return True
    ok = _mean_square(after.rmse) ** 0.5 < (1 - min_gain) * _mean_square(before.rmse) ** 0.5
    if guard in ("validation", "spectral"):
        ok = ok and float(after.rmse.median()) < float(before.rmse.median())
    if guard == "spectral" and after.high_pass is not None:
        ok = ok and _mean_square(after.high_pass) <= _mean_square(before.high_pass)
    return ok


def _accepts(loss_plain, loss_new, tolerance, mode):
    gain = loss_plain - loss_new
    if mode == "absolute":
        return gain > tolerance
    return loss_plain > 0 and gain / loss_plain > tolerance


def _rms(errors: HeldOutErrors | None, fine: bool = False):
    values = None if errors is None else (errors.high_pass if fine else errors.rmse)
    return None if values is None else float(values.square().mean().sqrt())


class _Progress:
    def __init__(self, callback, total):
        self.callback, self.total, self.done = callback, max(1, int(total)), 0

    def __call__(self, rows):
        self.done = min(self.total, self.done + rows)
        if self.callback:
            self.callback(self.done, self.total)


@dataclass
class SearchSettings:
    """The knobs of the per-step search, checked once."""

    n_basis: int = DEFAULT_N_BASIS
    loss: str = "l1"
    tolerance: float | None = None
    tolerance_mode: str = "relative"
    parameterization: str = DEFAULT_PARAMETERIZATION
    guard: str = GUARDS[0]
    validation_fraction: float = 0.25
    min_held_out_gain: float = 0.0
    correct_last_step: bool = True

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.tolerance_mode not in DEFAULT_TOLERANCE:
            raise ValueError(f"tolerance_mode must be 'relative' or 'absolute', got {self.tolerance_mode!r}")
        if self.parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {self.parameterization!r}")
        if self.guard not in GUARDS:
            raise ValueError(f"guard must be one of {GUARDS}, got {self.guard!r}")
        if not 1 <= int(self.n_basis) <= MAX_BASIS:
            raise ValueError(f"n_basis must be 1-{MAX_BASIS}, got {self.n_basis}")
        self.n_basis = int(self.n_basis)
        self.tolerance = DEFAULT_TOLERANCE[self.tolerance_mode] if self.tolerance is None else float(self.tolerance)

    def held_out(self, count: int) -> int:
        n_val = int(count * self.validation_fraction) if self.guard != "none" else 0
        if self.guard != "none" and (n_val < 1 or count - n_val < 1):
            raise ValueError(f"the validation guard needs at least one training and one held-out trajectory "
                             f"({count} trajectories, validation_fraction {self.validation_fraction}); "
                             "use more trajectories or guard='none'")
        return n_val


def guard_model_calls(n_val: int, steps: int) -> int:
    """Upper bound of the held-out roll-out calls: one plain roll-out, then one per candidate step."""
    return n_val * (steps + steps * (steps - 1) // 2)


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


@dataclass
class _GridResult:
    entry: GridCoordinates
    steps: list[dict]
    final_loss: float
    val_plain: HeldOutErrors | None
    val_pas: HeldOutErrors | None


def search_grid(denoiser, x, sigmas, targets, solver, options, settings: SearchSettings) -> _GridResult:
    """The greedy per-step search of PAS on one student grid (pas-method.md 6, 13.4-13.5)."""
    count = x.shape[0]
    n_val = settings.held_out(count)
    train_rows, val_rows = slice(0, count - n_val), slice(count - n_val, count)
    steps = len(sigmas) - 1
    sigma_values = sigmas.tolist()
    sigmas_x = sigmas.to(x.device)

    def roll_out(trajectory, points, first_step):
        """Finish the plain solver from `first_step` on the held-out rows; return the final points."""
        for step in range(first_step, steps):
            denoised = denoiser(points, sigmas_x[step], val_rows)
            points_next, used = pas_step(trajectory, points, denoised, sigmas_x[step], sigmas_x[step + 1], step)
            trajectory.commit(step, points, denoised, sigmas_x[step], used)
            points = points_next
        return points

    trajectory = SolverTrajectory(x, make_solver(solver, sigmas, **options), settings.n_basis,
                                  settings.parameterization, keep_buffer=True)
    val_errors = None
    if n_val:
        val_errors = HeldOutErrors.of(roll_out(trajectory.rows(val_rows), x[val_rows], 0), targets[-1, val_rows])
    val_errors_plain = val_errors

    points, accepted, coordinates, report_steps = x, [], [], []
    for step in range(steps):
        sigma, sigma_next = sigmas_x[step], sigmas_x[step + 1]
        denoised = denoiser(points, sigma, slice(0, count))
        if not torch.isfinite(denoised).all():
            raise ValueError(f"the model returned NaN or inf at step {step} (sigma {sigma_values[step]:.4g})")
        plain_next, direction = pas_step(trajectory, points, denoised, sigma, sigma_next, step)
        target = targets[step + 1]
        entry = {"step": step, "sigma": sigma_values[step], "sigma_next": sigma_values[step + 1],
                 "loss_plain": criterion(plain_next[train_rows], target[train_rows], settings.loss),
                 "loss_corrected": None,
                 "feasible": basis_is_feasible(step + 2, settings.n_basis) and (
                     settings.correct_last_step or step < steps - 1),
                 "accepted": False, "coordinates": None, "val_final_before": _rms(val_errors),
                 "val_final_corrected": None}
        used, next_points = direction, plain_next
        if entry["feasible"]:
            basis = trajectory.basis(direction, points)
            h = float(sigma_values[step + 1] - sigma_values[step])
            wanted = ((target - points) / h).reshape(count, -1).to(basis.dtype)
            scale = trajectory.direction_scale(direction)
            c = fit_coordinates(basis[train_rows], wanted[train_rows],
                                None if scale is None else scale[train_rows], settings.loss)
            candidate = trajectory.corrected(basis, direction, c.to(device=basis.device, dtype=basis.dtype))
            candidate_next = points + (sigma_next - sigma) * candidate
            entry["loss_corrected"] = criterion(candidate_next[train_rows], target[train_rows], settings.loss)
            entry["coordinates"] = c.tolist()
            local_ok = _accepts(entry["loss_plain"], entry["loss_corrected"], settings.tolerance,
                                settings.tolerance_mode)
            guard_ok = True
            if local_ok and n_val:
                held_out = trajectory.rows(val_rows)
                held_out.commit(step, points[val_rows], denoised[val_rows], sigma, candidate[val_rows])
                candidate_errors = HeldOutErrors.of(roll_out(held_out, candidate_next[val_rows], step + 1),
                                                    targets[-1, val_rows])
                entry["val_final_corrected"] = _rms(candidate_errors)
                entry["val_high_pass_before"] = _rms(val_errors, fine=True)
                entry["val_high_pass_corrected"] = _rms(candidate_errors, fine=True)
                guard_ok = guard_passes(val_errors, candidate_errors, settings.guard, settings.min_held_out_gain)
            if local_ok and guard_ok:
                entry["accepted"] = True
                accepted.append(step)
                coordinates.append(c)
                used, next_points = candidate, candidate_next
                if n_val:
                    val_errors = candidate_errors
        trajectory.commit(step, points, denoised, sigma, used)
        points = next_points
        report_steps.append(entry)

    stacked = torch.stack(coordinates) if coordinates else torch.zeros(0, settings.n_basis)
    return _GridResult(GridCoordinates(sigmas.double().cpu(), accepted, stacked), report_steps,
                       criterion(points[train_rows], targets[-1, train_rows], settings.loss),
                       val_errors_plain, val_errors)


@torch.no_grad()
def train_pas(model, x, sigmas, *, solver="euler", max_order=None, n_basis=DEFAULT_N_BASIS, loss="l1",
              tolerance=None, tolerance_mode="relative", parameterization=DEFAULT_PARAMETERIZATION,
              teacher_substeps=None, teacher_nfe=100, extra_args=None, chunk_size=None, progress=None,
              per_sample_args=None, validation_fraction=0.25, guard=GUARDS[0], targets=None, metadata=None,
              min_held_out_gain=DEFAULT_MIN_HELD_OUT_GAIN, correct_last_step=DEFAULT_CORRECT_LAST_STEP):
    """Learn PAS coordinates for `model` on the student grid `sigmas` (or on several grids: one teacher run
    serves them all) from the start points x (N, ...).

    x is the already-scaled start (sigma_max * noise for EDM models). `targets` (steps+1, N, ...), or one
    such tensor per grid, may give precomputed teacher states. Returns (PASCoordinates, report); with
    several grids the coordinates cover each of them and report["grids"] has one report per grid.
    """
    solver = canonical_solver(solver)
    options = solver_options(solver, max_order)
    grids = as_grid_list(sigmas)
    settings = SearchSettings(n_basis, loss, tolerance, tolerance_mode, parameterization, guard, validation_fraction,
                              float(min_held_out_gain), bool(correct_last_step))
    if not torch.isfinite(x).all():
        raise ValueError("the start points contain NaN or inf")
    count = x.shape[0]
    n_val = settings.held_out(count)
    if any(float(grid[0]) != float(grids[0][0]) for grid in grids):
        raise ValueError("all grids of one training must start at the same sigma (one start point per trajectory)")

    given = targets is not None
    if given:
        targets = [targets] if isinstance(targets, torch.Tensor) else list(targets)
        if len(targets) != len(grids):
            raise ValueError(f"got {len(targets)} target tensors for {len(grids)} grids")
        for grid, target in zip(grids, targets, strict=True):
            if target.shape[0] != len(grid) or target.shape[1:] != x.shape:
                raise ValueError(f"targets must have shape {(len(grid), *x.shape)}, got {tuple(target.shape)}")
        nfe, substeps = 0, None
    else:
        union = union_grid(grids)
        substeps = substeps_for(union, teacher_nfe) if teacher_substeps is None else int(teacher_substeps)
        nfe = teacher_nfe_for(union, substeps)
    search_calls = sum(count * (len(g) - 1) + guard_model_calls(n_val, len(g) - 1) for g in grids)
    tick = _Progress(progress, count * nfe + search_calls)
    denoiser = Denoiser(model, extra_args, per_sample_args, chunk_size, tick)

    started = time.perf_counter()
    if given:
        teacher_info = {"solver": "given", "substeps": None, "nfe": None, "seconds": 0.0}
    else:
        targets, teacher_info = teacher_targets(denoiser, x, grids, teacher_nfe, substeps)
    teacher_calls = denoiser.calls
    for target in targets:
        if not torch.isfinite(target).all():
            raise ValueError("the teacher trajectories contain NaN or inf (is the model producing NaNs?)")
    search_started = time.perf_counter()
    results = [search_grid(denoiser, x, grid, target, solver, options, settings)
               for grid, target in zip(grids, targets, strict=True)]
    search_seconds = time.perf_counter() - search_started
    if progress:
        progress(tick.total, tick.total)
    report, info = _training_report(results, settings, count, n_val, teacher_info, metadata, x.shape[1:])
    report.update(teacher_seconds=teacher_info["seconds"] or (search_started - started),
                  search_seconds=search_seconds, model_calls=denoiser.calls, teacher_model_calls=teacher_calls)
    first, rest = results[0].entry, [r.entry for r in results[1:]]
    coords = PASCoordinates(sigmas=first.sigmas, solver=solver, max_order=options.get(ORDER),
                            n_basis=settings.n_basis, steps=first.steps, coordinates=first.coordinates,
                            parameterization=settings.parameterization, metadata=info, more_grids=rest)
    return coords, report


def _grid_report(result: _GridResult) -> dict:
    return {"steps": result.steps, "accepted": result.entry.steps, "sigmas": result.entry.sigmas.tolist(),
            "train_final_loss": result.final_loss, "val_final_plain": _rms(result.val_plain),
            "val_final_pas": _rms(result.val_pas), "val_high_pass_plain": _rms(result.val_plain, fine=True),
            "val_high_pass_pas": _rms(result.val_pas, fine=True)}


def _training_report(results, settings, count, n_val, teacher_info, metadata, latent_shape):
    """(report, file metadata): the first grid's report at the top level (one-grid callers), all in 'grids'."""
    recorded = {"loss": settings.loss, "tolerance": settings.tolerance, "tolerance_mode": settings.tolerance_mode,
                "guard": settings.guard, "min_held_out_gain": settings.min_held_out_gain,
                "correct_last_step": settings.correct_last_step, "validation_fraction": settings.validation_fraction if n_val else 0.0,
                "n_trajectories": count, "n_validation": n_val, "teacher": teacher_info,
                "latent_shape": list(latent_shape)}
    grids = [_grid_report(result) for result in results]
    report = dict(grids[0], settings=recorded, grids=grids)
    info = dict(recorded, per_step=[{k: s[k] for k in ("step", "loss_plain", "loss_corrected", "accepted")}
                                    for s in results[0].steps])
    if len(results) > 1:
        info["per_grid"] = [{"steps": len(r.entry.sigmas) - 1, "val_final_plain": _rms(r.val_plain),
                             "val_final_pas": _rms(r.val_pas)} for r in results]
    info.update(metadata or {})
    return report, info
