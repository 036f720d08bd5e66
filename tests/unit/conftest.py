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
