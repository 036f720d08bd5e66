"""train_pas: the greedy, step-by-step adaptive search of PAS (pas-method.md 5-6, 13.4-13.5).

Per step i, on the corrected trajectory: fit shared coordinates c_i against the teacher (closed-form
least squares; L1 by iteratively reweighted least squares from there), then accept the step if the
training loss drops by more than the tolerance and, with the validation guard, if the held-out
trajectories' final samples also get closer to the teacher.
"""
from __future__ import annotations

import time

import torch

from .basis import basis_is_feasible
from .coords import PARAMETERIZATIONS, PASCoordinates
from .grids import check_sigmas, heun_nfe, refine_sigmas
from .grids import teacher_substeps as substeps_for
from .sampler import SolverTrajectory, pas_step
from .solvers import canonical_solver, check_order
from .teacher import chunks, model_call, teacher_states

# Defaults chosen by the A/B study in docs/ab-study.md (relative coordinates, 3 basis vectors).
DEFAULT_PARAMETERIZATION = "relative"
DEFAULT_N_BASIS = 3
DEFAULT_TOLERANCE = {"relative": 0.01, "absolute": 1e-4}
LOSSES = ("l1", "l2")
GUARDS = ("validation", "none")
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


def guard_passes(errors_before: torch.Tensor, errors_after: torch.Tensor) -> bool:
    """Held-out check: the RMSE over samples drops, and so does the median sample's error (so a rare
    large fix cannot hide a majority made worse, nor the reverse)."""
    mean_ok = float(errors_after.square().mean()) < float(errors_before.square().mean())
    return mean_ok and float(errors_after.median()) < float(errors_before.median())


def _accepts(loss_plain, loss_new, tolerance, mode):
    gain = loss_plain - loss_new
    if mode == "absolute":
        return gain > tolerance
    return loss_plain > 0 and gain / loss_plain > tolerance


def _rms(errors):
    return None if errors is None else float(errors.square().mean().sqrt())


class _Progress:
    def __init__(self, callback, total):
        self.callback, self.total, self.done = callback, max(1, int(total)), 0

    def __call__(self, rows):
        self.done = min(self.total, self.done + rows)
        if self.callback:
            self.callback(self.done, self.total)


@torch.no_grad()
def train_pas(model, x, sigmas, *, solver="euler", max_order=4, n_basis=DEFAULT_N_BASIS, loss="l1", tolerance=None,
              tolerance_mode="relative", parameterization=DEFAULT_PARAMETERIZATION, teacher_substeps=None,
              teacher_nfe=100, extra_args=None, chunk_size=None, progress=None, per_sample_args=None,
              validation_fraction=0.25, guard=GUARDS[0], targets=None, metadata=None):
    """Learn PAS coordinates for `model` on the student grid `sigmas` from the start points x (N, ...).

    x is the already-scaled start (sigma_max * noise for EDM models). `targets` (steps+1, N, ...) may give
    precomputed teacher states. Returns (PASCoordinates, report).
    """
    solver = canonical_solver(solver)
    max_order = check_order(solver, max_order)
    check_sigmas(sigmas)
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if tolerance_mode not in DEFAULT_TOLERANCE:
        raise ValueError(f"tolerance_mode must be 'relative' or 'absolute', got {tolerance_mode!r}")
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}")
    if guard not in GUARDS:
        raise ValueError(f"guard must be one of {GUARDS}, got {guard!r}")
    if not 1 <= int(n_basis) <= 8:
        raise ValueError(f"n_basis must be 1-8, got {n_basis}")
    if not torch.isfinite(x).all():
        raise ValueError("the start points contain NaN or inf")
    tolerance = DEFAULT_TOLERANCE[tolerance_mode] if tolerance is None else float(tolerance)
    count = x.shape[0]
    n_val = int(count * validation_fraction) if guard == "validation" else 0
    if guard == "validation" and (n_val < 1 or count - n_val < 1):
        raise ValueError(f"the validation guard needs at least one training and one held-out trajectory "
                         f"({count} trajectories, validation_fraction {validation_fraction}); "
                         "use more trajectories or guard='none'")
    train_rows, val_rows = slice(0, count - n_val), slice(count - n_val, count)
    steps = len(sigmas) - 1
    sigma_values = sigmas.tolist()
    sigmas_x = sigmas.to(x.device)

    teacher_rows = 0 if targets is not None else count
    if targets is None:
        substeps = substeps_for(sigmas, teacher_nfe) if teacher_substeps is None else int(teacher_substeps)
        nfe = heun_nfe(len(refine_sigmas(sigmas.double(), substeps)) - 1, sigma_values[-1] == 0)
    else:
        substeps, nfe = None, None
    guard_calls = n_val * (steps + steps * (steps - 1) // 2)
    tick = _Progress(progress, teacher_rows * (nfe or 0) + count * steps + guard_calls)

    if targets is None:
        targets, teacher_info = teacher_states(model, x, sigmas_x, substeps=substeps, extra_args=extra_args,
                                               per_sample_args=per_sample_args, chunk_size=chunk_size, tick=tick)
    else:
        if targets.shape[0] != steps + 1 or targets.shape[1:] != x.shape:
            raise ValueError(f"targets must have shape {(steps + 1, *x.shape)}, got {tuple(targets.shape)}")
        teacher_info = {"solver": "given", "substeps": None, "nfe": None, "seconds": 0.0}
    if not torch.isfinite(targets).all():
        raise ValueError("the teacher trajectories contain NaN or inf (is the model producing NaNs?)")
    search_started = time.perf_counter()

    def evaluate(points, step, rows):
        sigma = sigmas_x[step]
        parts = []
        for part in chunks(points.shape[0], chunk_size):
            absolute = slice(rows.start + part.start, rows.start + part.stop)
            parts.append(model_call(model, points[part], sigma, extra_args, per_sample_args, absolute))
            tick(part.stop - part.start)
        return torch.cat(parts)

    def roll_out(trajectory, points, first_step, rows):
        """Finish the plain solver from `first_step` for some rows; return the final points."""
        for step in range(first_step, steps):
            denoised = evaluate(points, step, rows)
            points, e, used = pas_step(trajectory, points, denoised, sigmas_x[step], sigmas_x[step + 1], step,
                                       sigma_values[step + 1] == 0)
            trajectory.commit(e, used)
        return points

    trajectory = SolverTrajectory(x, solver, max_order, int(n_basis), parameterization, keep_buffer=True)
    val_errors = None
    if n_val:
        val_final = roll_out(trajectory.rows(val_rows), x[val_rows], 0, val_rows)
        val_errors = sample_errors(val_final, targets[-1, val_rows])
    val_errors_plain = val_errors

    points, accepted, coordinates, report_steps = x, [], [], []
    for step in range(steps):
        sigma, sigma_next = sigmas_x[step], sigmas_x[step + 1]
        to_zero = sigma_values[step + 1] == 0
        denoised = evaluate(points, step, slice(0, count))
        if not torch.isfinite(denoised).all():
            raise ValueError(f"the model returned NaN or inf at step {step} (sigma {sigma_values[step]:.4g})")
        plain_next, e, direction = pas_step(trajectory, points, denoised, sigma, sigma_next, step, to_zero)
        target = targets[step + 1]
        entry = {"step": step, "sigma": sigma_values[step], "sigma_next": sigma_values[step + 1],
                 "loss_plain": criterion(plain_next[train_rows], target[train_rows], loss),
                 "loss_corrected": None, "feasible": basis_is_feasible(step + 2, int(n_basis)),
                 "accepted": False, "coordinates": None, "val_final_before": _rms(val_errors),
                 "val_final_corrected": None}
        used, next_points = direction, plain_next
        if entry["feasible"]:
            basis = trajectory.basis(direction, points)
            h = float(sigma_values[step + 1] - sigma_values[step])
            wanted = ((target - points) / h).reshape(count, -1).to(basis.dtype)
            scale = trajectory._flat(direction).norm(dim=-1) if trajectory.relative else None
            c = fit_coordinates(basis[train_rows], wanted[train_rows],
                                None if scale is None else scale[train_rows], loss)
            c_device = c.to(device=basis.device, dtype=basis.dtype)
            candidate = trajectory.corrected(basis, direction, c_device)
            candidate_next = points + (sigma_next - sigma) * candidate
            entry["loss_corrected"] = criterion(candidate_next[train_rows], target[train_rows], loss)
            entry["coordinates"] = c.tolist()
            local_ok = _accepts(entry["loss_plain"], entry["loss_corrected"], tolerance, tolerance_mode)
            guard_ok = True
            if local_ok and n_val:
                held_out = trajectory.rows(val_rows)
                held_out.commit(e[val_rows], candidate[val_rows])
                final = roll_out(held_out, candidate_next[val_rows], step + 1, val_rows)
                candidate_errors = sample_errors(final, targets[-1, val_rows])
                entry["val_final_corrected"] = _rms(candidate_errors)
                guard_ok = guard_passes(val_errors, candidate_errors)
            if local_ok and guard_ok:
                entry["accepted"] = True
                accepted.append(step)
                coordinates.append(c)
                used, next_points = candidate, candidate_next
                if n_val:
                    val_errors = candidate_errors
        trajectory.commit(e, used)
        points = next_points
        report_steps.append(entry)

    search_seconds = time.perf_counter() - search_started
    if progress:
        progress(tick.total, tick.total)
    final_loss = criterion(points[train_rows], targets[-1, train_rows], loss)
    settings = {"loss": loss, "tolerance": tolerance, "tolerance_mode": tolerance_mode, "guard": guard,
                "validation_fraction": validation_fraction if n_val else 0.0,
                "n_trajectories": count, "n_validation": n_val, "teacher": teacher_info,
                "latent_shape": list(x.shape[1:])}
    report = {"steps": report_steps, "accepted": accepted, "settings": settings,
              "teacher_seconds": teacher_info["seconds"], "search_seconds": search_seconds,
              "train_final_loss": final_loss, "val_final_plain": _rms(val_errors_plain), "val_final_pas": _rms(val_errors)}
    info = dict(settings, per_step=[{k: s[k] for k in ("step", "loss_plain", "loss_corrected", "accepted")}
                                    for s in report_steps])
    info.update(metadata or {})
    coords = PASCoordinates(sigmas=sigmas.double().cpu(), solver=solver, max_order=max_order,
                            n_basis=int(n_basis), steps=accepted,
                            coordinates=torch.stack(coordinates) if coordinates else torch.zeros(0, int(n_basis)),
                            parameterization=parameterization, metadata=info)
    return coords, report
