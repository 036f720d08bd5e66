import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from train_tools.data.gmm import GaussianMixtureDenoiser  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def gmm():
    """A 96-dimensional, 8-component mixture: its exact denoiser is the test model."""
    return GaussianMixtureDenoiser.random(dim=96, components=8, spread=1.0, std=0.5, seed=3)


@pytest.fixture
def counting_gmm(gmm):
    """(model, seen): the mixture's denoiser that appends the row count of every call to `seen`."""
    seen = []

    def counting(points, sigma):
        seen.append(points.shape[0])
        return gmm(points, sigma)

    counting.sigma_min, counting.sigma_max = gmm.sigma_min, gmm.sigma_max
    return counting, seen


@pytest.fixture
def gmm_training(gmm):
    """(denoiser, x, sigmas, targets, settings): 24 mixture trajectories on a 6-step grid, a 40-NFE teacher's
    states on it, and the paper's rule: what a fit study trains on."""
    from comfyui_pas import SearchSettings, edm_sigmas
    from comfyui_pas.search import teacher_targets
    from comfyui_pas.teacher import Denoiser
    from train_tools.data.seeds import seeded_noise

    sigmas = edm_sigmas(6)
    x = seeded_noise(range(24), (96,)) * sigmas[0]
    denoiser = Denoiser(gmm)
    (targets,), _ = teacher_targets(denoiser, x, [sigmas], 40, None)
    return denoiser, x, sigmas, targets, SearchSettings.for_rule("paper")
