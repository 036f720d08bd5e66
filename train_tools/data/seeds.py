"""Per-seed start noise for every offline tool (the mixture, the demo model, the studies)."""
from __future__ import annotations

import torch

# The seed ranges, apart so that no training seed is ever a held-out one.
TRAIN_SEED_STRIDE = 10_000  # repetition r of a study trains on seeds r * stride ...
GMM_EVAL_SEED_START = 100_000  # held-out seeds of the mixture benches and the A/B study
GMM_REFERENCE_SEED_START = 150_000  # the mixture's reference samples (make bench's distribution check)
PCA_SEED_START = 200_000  # the trajectory-PCA study
TRAIN_SEED_START = 0  # PAS training trajectories on the demo model
EVAL_SEED_START = 1_000_000  # held-out seeds on the demo model: the samples that are scored
REFERENCE_SEED_START = 2_000_000  # the teacher's own samples: the reference of the quality bench
CONFIRM_SEED_START = 3_000_000  # held-out seeds that confirm a choice made on EVAL_SEED_START's results


def seeded_noise(seeds, shape, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Standard normal noise (len(seeds), *shape), one generator per seed (as EDM's generate.py), so a
    sample does not depend on its batch."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s)), dtype=dtype)
                        for s in seeds])

