"""The Fashion-MNIST demo model the pack bundles: its EDM UNet, loader, weights and classes.

The ComfyUI demo nodes (demo_nodes.py) and the offline tools (train_tools/) both load it from here;
it imports neither ComfyUI nor train_tools.
"""
from .classes import CLASS_NAMES, class_label
from .edm_unet import EDMDenoiser, UNet, UNetConfig
from .loader import (
    CONDITIONAL_WEIGHTS,
    DEFAULT_WEIGHTS,
    LATENT_SHAPE,
    TRAIN_COMMAND,
    WEIGHTS_DIR,
    load_demo_model,
    read_weights,
    weight_files,
    weights_path,
)

__all__ = ["CLASS_NAMES", "CONDITIONAL_WEIGHTS", "DEFAULT_WEIGHTS", "EDMDenoiser", "LATENT_SHAPE", "TRAIN_COMMAND",
           "UNet", "UNetConfig", "WEIGHTS_DIR", "class_label", "load_demo_model", "read_weights", "weight_files",
           "weights_path"]
