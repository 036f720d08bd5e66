"""Per-seed start noise for every offline tool (the mixture, the demo model, the studies)."""
from __future__ import annotations

import torch


def seeded_noise(seeds, shape, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Standard normal noise (len(seeds), *shape), one generator per seed (as EDM's generate.py), so a
    sample does not depend on its batch."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s)), dtype=dtype)
                        for s in seeds])

# Seed ranges of every offline tool, far apart so that no two uses overlap.
TRAIN_SEED_START = 0  # PAS training trajectories
EVAL_SEED_START = 1_000_000  # samples that are scored
REFERENCE_SEED_START = 2_000_000  # the teacher's own samples, the reference of the distribution metrics
