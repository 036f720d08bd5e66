"""When a fitted step is kept (docs/method.md 6): the training-loss test and the held-out guards."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import pooled_rmse, sample_rmse
from .settings import SearchSettings


def high_pass(x: torch.Tensor) -> torch.Tensor | None:
    """x minus its 3x3 local mean, per channel, for image-shaped (B, C, H, W) tensors; None otherwise."""
    if x.ndim != 4 or min(x.shape[-2:]) < 3:
        return None
    flat = x.double().reshape(-1, 1, *x.shape[-2:])
    smooth = torch.nn.functional.avg_pool2d(flat, 3, stride=1, padding=1, count_include_pad=False)
    return (flat - smooth).reshape(x.shape)


PATCH = 4  # the side of the patches whose distribution patch_frechet compares
MAX_PATCHES = 200_000  # more patches than this are thinned by a stride


def patch_vectors(x: torch.Tensor) -> torch.Tensor | None:
    """Every PATCH x PATCH patch (all channels) of image-shaped (B, C, H, W) x as float64 rows; None otherwise."""
    if x.ndim != 4 or min(x.shape[-2:]) < PATCH:
        return None
    per_image = (x.shape[-2] - PATCH + 1) * (x.shape[-1] - PATCH + 1)
    stride = max(1, math.ceil(math.sqrt(x.shape[0] * per_image / MAX_PATCHES)))
    rows = torch.nn.functional.unfold(x.double(), PATCH, stride=stride)  # (B, C*PATCH*PATCH, L)
    return rows.transpose(1, 2).reshape(-1, rows.shape[1])


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """The Frechet distance between Gaussians fitted to the rows of a and of b."""
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    values, vectors = torch.linalg.eigh(cov_a)
    root_a = (vectors * values.clamp_min(0).sqrt()) @ vectors.T
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp_min(0).sqrt().sum()
    return float((mean_a - mean_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross)


def patch_frechet(final: torch.Tensor, target: torch.Tensor) -> float | None:
    """The Frechet distance between the patch distributions of two image batches (local texture and tone:
    grain, blur and shifted contrast all move it); None off images."""
    mine, theirs = patch_vectors(final), patch_vectors(target)
    return None if mine is None else frechet_distance(mine, theirs)


def spread(x: torch.Tensor) -> torch.Tensor:
    """Per-sample standard deviation over all but the batch dimension (contrast, for images)."""
    return x.double().reshape(x.shape[0], -1).std(dim=1)


@dataclass
class HeldOutErrors:
    """Per-sample errors of held-out final samples against the teacher's: RMSE, RMSE of the high-pass part,
    and the texture gaps |s(final) - s(teacher)| of the spread (contrast) and of the high-pass spread
    (fine detail: blur lowers it, grain raises it); patch_gap: the patch Frechet distance of the finals to
    the teacher's (a distribution, not per-sample, statistic). The image terms are None off images."""

    rmse: torch.Tensor
    high_pass: torch.Tensor | None
    contrast_gap: torch.Tensor | None = None
    detail_gap: torch.Tensor | None = None
    contrast: torch.Tensor | None = None  # the finals' own spread and high-pass spread
    detail: torch.Tensor | None = None
    patch_gap: float | None = None

    @classmethod
    def of(cls, final: torch.Tensor, target: torch.Tensor, patches: bool = False) -> HeldOutErrors:
        """The errors of `final` against `target`; the patch Frechet distance only with patches=True (the
        `patches` guard's: the one costly term, skipped for the other guards)."""
        fine_final, fine_target = high_pass(final), high_pass(target)
        fine = detail_gap = detail = None
        if fine_final is not None:
            fine, detail = sample_rmse(fine_final, fine_target), spread(fine_final)
            detail_gap = (detail - spread(fine_target)).abs()
        contrast = spread(final)
        return cls(sample_rmse(final, target), fine, (contrast - spread(target)).abs(), detail_gap, contrast, detail,
                   patch_frechet(final, target) if patches else None)

    def not_blurred(self, before: HeldOutErrors) -> bool:
        """Whether image finals kept their mean contrast and fine detail (no lower than `before`); always true
        off images (vectors: a lower spread there is no blur, and the mixture's right corrections lower it)."""
        if self.detail is None or before.detail is None:
            return True
        pairs = [(self.contrast, before.contrast), (self.detail, before.detail)]
        return all(float(after.mean()) >= float(prior.mean()) for after, prior in pairs
                   if after is not None and prior is not None)

    def texture_not_worse(self, before: HeldOutErrors) -> bool:
        """Whether the mean contrast and detail gaps to the teacher did not grow from `before`."""
        pairs = [(self.contrast_gap, before.contrast_gap), (self.detail_gap, before.detail_gap)]
        return all(float(after.mean()) <= float(prior.mean()) for after, prior in pairs
                   if after is not None and prior is not None)

    def patches_not_worse(self, before: HeldOutErrors) -> bool:
        """Whether the patch distribution did not move away from the teacher's (always true off images)."""
        if self.patch_gap is None or before.patch_gap is None:
            return True
        return self.patch_gap <= before.patch_gap

    def pooled(self, fine: bool = False) -> float | None:
        """The RMSE over the held-out samples (of the high-pass part with fine=True; None off images)."""
        values = self.high_pass if fine else self.rmse
        return None if values is None else pooled_rmse(values)


def pooled(errors: HeldOutErrors | None, fine: bool = False) -> float | None:
    return None if errors is None else errors.pooled(fine)


def guard_passes(before: HeldOutErrors, after: HeldOutErrors, guard: str = "validation", min_gain: float = 0.0) -> bool:
    """The held-out check named by `guard` (settings.GUARDS): the held-out RMSE must drop by more than the
    fraction min_gain; the median rule keeps a rare large fix from hiding a majority made worse, nor the reverse.
    texture / sharpness: the held-out RMSE does not grow (drops by min_gain when given), and neither do the
    texture gaps / and the finals lose neither contrast nor fine detail. patches: sharpness, and the finals'
    patch distribution does not move away from the teacher's."""
    if guard == "none":
        return True
    if guard in ("texture", "sharpness", "patches"):
        kept = after.texture_not_worse(before) if guard == "texture" else after.not_blurred(before)
        kept = kept and (guard != "patches" or after.patches_not_worse(before))
        return pooled_rmse(after.rmse) <= (1 - min_gain) * pooled_rmse(before.rmse) and kept
    ok = pooled_rmse(after.rmse) < (1 - min_gain) * pooled_rmse(before.rmse)
    if guard in ("validation", "spectral"):
        ok = ok and float(after.rmse.median()) < float(before.rmse.median())
    if guard == "spectral" and after.high_pass is not None:
        ok = ok and pooled_rmse(after.high_pass) <= pooled_rmse(before.high_pass)
    return ok


def loss_drops(loss_plain: float, loss_corrected: float, settings: SearchSettings) -> bool:
    """The paper's rule: the training loss drops by more than the tolerance (absolute, or relative to it)."""
    gain = loss_plain - loss_corrected
    if settings.tolerance_mode == "absolute":
        return gain > settings.tolerance
    return loss_plain > 0 and gain / loss_plain > settings.tolerance
