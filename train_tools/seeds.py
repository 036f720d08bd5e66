"""Per-seed start noise for every offline tool (the mixture, the demo model, the studies)."""
from __future__ import annotations

import torch


def seeded_noise(seeds, shape, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Standard normal noise (len(seeds), *shape), one generator per seed (as EDM's generate.py), so a
    sample does not depend on its batch."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s)), dtype=dtype)
                        for s in seeds])
