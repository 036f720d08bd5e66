"""Analytic denoiser of an isotropic Gaussian mixture: exact posterior mean, the test model of PAS.

Data x0 ~ sum_k w_k N(mu_k, s^2 I). With x = x0 + sigma * eps, x | k ~ N(mu_k, (s^2 + sigma^2) I), so
E[x0 | x] = sum_k r_k(x) (mu_k + s^2 / (s^2 + sigma^2) (x - mu_k)), r_k the posterior responsibilities.
Its probability-flow ODE has no closed form in general, but the teacher solves it to any accuracy.
"""
from __future__ import annotations

import torch


class GaussianMixtureDenoiser(torch.nn.Module):
    """k-diffusion denoiser model(x, sigma) -> E[x0 | x, sigma] for any x shape (flattened per sample)."""

    sigma_min = 0.002
    sigma_max = 80.0

    def __init__(self, means: torch.Tensor, std: float, weights: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("means", means.double())
        self.std = float(std)
        weights = torch.full((means.shape[0],), 1.0 / means.shape[0]) if weights is None else weights
        self.register_buffer("log_weights", weights.double().log())

    @classmethod
    def random(cls, dim=128, components=8, spread=1.0, std=0.3, seed=0):
        """A reproducible mixture: component means N(0, spread^2 / dim * I) scaled to norm ~spread."""
        generator = torch.Generator().manual_seed(seed)
        means = torch.randn(components, dim, generator=generator, dtype=torch.float64) * spread
        weights = torch.rand(components, generator=generator, dtype=torch.float64) + 0.5
        return cls(means, std, weights / weights.sum())

    @property
    def dim(self):
        return self.means.shape[1]

    def sample(self, count: int, seed: int = 0) -> torch.Tensor:
        """`count` exact draws x0 from the mixture (count, dim), float64: the data the denoiser describes."""
        generator = torch.Generator().manual_seed(seed)
        component = torch.multinomial(self.log_weights.exp(), count, replacement=True, generator=generator)
        noise = torch.randn(count, self.dim, generator=generator, dtype=torch.float64)
        return self.means[component] + self.std * noise

    def forward(self, x, sigma, **_):
        shape, dtype = x.shape, x.dtype
        flat = x.reshape(shape[0], -1).double()
        sigma = sigma.double().reshape(-1, 1)
        variance = self.std ** 2 + sigma ** 2
        offsets = flat[:, None, :] - self.means[None, :, :]
        squared = offsets.square().sum(dim=-1)
        log_resp = self.log_weights[None] - 0.5 * squared / variance
        resp = torch.softmax(log_resp, dim=-1)
        shrink = self.std ** 2 / variance
        per_component = self.means[None] + shrink[:, :, None] * offsets
        denoised = (resp[:, :, None] * per_component).sum(dim=1)
        return denoised.reshape(shape).to(dtype)
