"""Does a fit that also matches the spread of the teacher's step make better images than the plain fit?

    python -m train_tools.studies.spread_fit --model uncond --nfe 4 5
    python -m train_tools.studies.spread_fit --model cond --cfg 1 --nfe 4 5

A shared least-squares (or L1) fit toward the teacher shrinks what the few coordinates cannot predict: the
corrected states lose spread, which RMSE rewards and a distribution metric may punish (docs/objective-study.md).
This study refits every step the PAS search tries so that the corrected next states also keep the teacher's
spread: the fit minimises

    L(c) / L(c_fit) + weight * sum_s (mean_n s(x_next,n(c)) / mean_n s(x_teacher,n) - 1)^2

over the step's coordinates c, from the plain fit c_fit (L: the fit loss), with s the per-sample variance
(contrast) and, for images, the energy of the 3x3 high-pass part (fine detail). Everything else is the
Trainer's default (acceptance rule `auto` unless --rule, 48 trajectories, 3 basis vectors, a Heun teacher of ~48 model
calls) on the EDM grid (rho 7) that make reproduce uses. Every fit is then sampled on the same evaluation
seeds and judged by the quality bench: FD to the teacher's samples and to the data, RMSE, with paired 95%
intervals against the solver plain and against the plain fit (train_tools/studies/fit_variants.py, with
`--variants spread:1 spread:30` as its default). Writes out/spread_fit/<setting>_<rule>/spread_fit.json and .md.
"""
from __future__ import annotations

import torch

from comfyui_pas import PASCoordinates
from comfyui_pas.acceptance import high_pass
from comfyui_pas.fit import fit_coordinates
from comfyui_pas.search import GridSearch

DEFAULT_WEIGHTS = (1.0, 30.0)


def spread_statistics(x: torch.Tensor) -> torch.Tensor:
    """Mean over samples of the per-sample variance and, for image-shaped x, of the high-pass energy."""
    flat = x.reshape(x.shape[0], -1)
    values = [flat.var(dim=1).mean()]
    fine = high_pass(x)
    if fine is not None:
        values.append(fine.reshape(x.shape[0], -1).square().mean(dim=1).mean())
    return torch.stack(values)


def spread_matched_coordinates(basis, wanted, scale, points, h, target, loss="l1", weight=1.0,
                               iterations: int = 200) -> torch.Tensor:
    """Coordinates (k,) that trade the fit loss against the teacher's spread (the module's objective).

    basis (n, k, D), wanted (n, D), scale (n,) or None: as comfyui_pas.fit.fit_coordinates; points (n, ...)
    the step's start, h its sigma step, target (n, ...) the teacher's next states. weight 0: the plain fit."""
    start = fit_coordinates(basis, wanted, scale, loss)
    if weight == 0:
        return start
    scaled = (basis if scale is None else basis * scale.to(basis.dtype)[:, None, None]).double()
    wanted, origin = wanted.double(), points.double().reshape(points.shape[0], -1)
    goal = spread_statistics(target.double())

    def fit_loss(c):
        residual = torch.einsum("nkd,k->nd", scaled, c) - wanted
        return residual.abs().mean() if loss == "l1" else residual.square().mean()

    reference = float(fit_loss(start.double())) or 1.0
    c = start.double().clone().requires_grad_(True)
    optimiser = torch.optim.LBFGS([c], lr=1, max_iter=iterations, line_search_fn="strong_wolfe")

    def objective():
        optimiser.zero_grad()
        moved = (origin + h * torch.einsum("nkd,k->nd", scaled, c)).reshape(points.shape)
        total = fit_loss(c) / reference + weight * (spread_statistics(moved) / goal - 1).square().sum()
        total.backward()
        return total

    with torch.enable_grad():
        optimiser.step(objective)
    return c.detach()


class SpreadMatchedSearch(GridSearch):
    """The PAS search with spread_matched_coordinates as each step's fit."""

    weight = 1.0

    def fit_step(self, basis, wanted, scale, points, h, target):
        return spread_matched_coordinates(basis, wanted, scale, points, h, target, self.settings.loss, self.weight)


def train(denoiser, x, sigmas, targets, solver, settings, weight: float | None) -> PASCoordinates:
    """Coordinates from the search on one grid: the plain fit (weight None) or the spread-matched one."""
    from train_tools.studies.fit_variants import train as train_with

    if weight is None:
        return train_with(denoiser, x, sigmas, targets, solver, settings)
    return train_with(denoiser, x, sigmas, targets, solver, settings, SpreadMatchedSearch, weight=weight)


def main(argv: list[str] | None = None) -> None:
    from train_tools.studies.fit_variants import study_main

    study_main("train_tools.studies.spread_fit", __doc__, [f"spread:{w:g}" for w in DEFAULT_WEIGHTS],
               "The spread-matched fit", argv)


if __name__ == "__main__":
    main()
