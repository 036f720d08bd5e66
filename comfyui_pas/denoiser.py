"""Denoiser: a k-diffusion model with the arguments of its calls, called in chunks and counted."""
from __future__ import annotations

import copy
from contextlib import contextmanager

import torch


def chunks(count: int, chunk_size: int | None):
    """Row slices of at most chunk_size rows (all rows when None)."""
    size = count if not chunk_size else max(1, int(chunk_size))
    for start in range(0, count, size):
        yield slice(start, min(count, start + size))


class Denoiser:
    """model(x, sigma, **extra_args) -> denoised, called with at most `chunk_size` rows at a time.

    extra_args go to every call; per_sample_args hold one row per trajectory and are sliced to the rows
    of each call. `calls` counts the rows evaluated; a counted copy (see counted) also reports them to a
    progress tick. One instance serves the teacher, the search and the held-out roll-outs of a training.
    """

    def __init__(self, model, extra_args=None, per_sample_args=None, chunk_size=None):
        self.model, self.extra_args = model, dict(extra_args or {})
        self.per_sample_args = per_sample_args or {}
        self.chunk_size, self.tick, self.calls = chunk_size, None, 0
        self.sigma_shift = None  # sigma -> the sigma the model is asked at (time offsets), or None

    @contextmanager
    def shifted(self, sigma_shift):
        """Within the block, every call asks the model at sigma_shift(sigma) (None: no shift)."""
        before, self.sigma_shift = self.sigma_shift, sigma_shift
        try:
            yield self
        finally:
            self.sigma_shift = before

    @classmethod
    def of(cls, model) -> Denoiser:
        """The model itself when it is a Denoiser, else a Denoiser with no extra arguments around it."""
        return model if isinstance(model, Denoiser) else cls(model)

    def counted(self, tick=None) -> Denoiser:
        """A copy whose calls start at 0 and go to tick(rows) as they happen (the original stays as it is)."""
        fresh = copy.copy(self)
        fresh.tick, fresh.calls = tick, 0
        return fresh

    def sigma_range(self) -> tuple[float, float]:
        """The model's (sigma_min, sigma_max) attributes, NaN where it has none."""
        return (float(getattr(self.model, "sigma_min", float("nan"))),
                float(getattr(self.model, "sigma_max", float("nan"))))

    def __call__(self, x, sigma, rows: slice | None = None):
        """denoised for the points x (n, ...), which are the trajectories `rows` (absolute) of the run."""
        offset = 0 if rows is None else rows.start
        if self.sigma_shift is not None:
            sigma = self.sigma_shift(sigma)
        parts = []
        for part in chunks(x.shape[0], self.chunk_size):
            absolute = slice(offset + part.start, offset + part.stop)
            sliced = {key: value[absolute] for key, value in self.per_sample_args.items()}
            points = x[part]
            parts.append(self.model(points, points.new_ones([points.shape[0]]) * sigma, **self.extra_args, **sliced))
            self.calls += points.shape[0]
            if self.tick:
                self.tick(points.shape[0])
        return parts[0] if len(parts) == 1 else torch.cat(parts)
