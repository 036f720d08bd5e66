"""PAS: PCA-based Adaptive Search sampling correction (Wang et al., ICML 2025), framework-free core.

Never imports ComfyUI: torch, numpy and safetensors only (matplotlib for plot.py).
"""
from .coords import PASCoordinates
from .grids import edm_sigmas, refine_sigmas
from .sampler import sample_pas
from .schedule import learn_schedule
from .search import train_pas

__all__ = ["PASCoordinates", "edm_sigmas", "learn_schedule", "refine_sigmas", "sample_pas", "train_pas"]
