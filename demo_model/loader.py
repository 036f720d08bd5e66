"""Find and load the bundled Fashion-MNIST demo model (EDM UNet, k-diffusion denoiser interface)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open

from .edm_unet import EDMDenoiser, UNetConfig

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"  # the bundled .safetensors files
DEFAULT_WEIGHTS = WEIGHTS_DIR / "fashion_mnist_edm.safetensors"  # unconditional
CONDITIONAL_WEIGHTS = WEIGHTS_DIR / "fashion_mnist_edm_cond.safetensors"  # 10 classes, CFG
TRAIN_COMMAND = "make train-model (python -m train_tools.training.train_model)"
LATENT_SHAPE = (1, 32, 32)  # one sample: 28x28 Fashion-MNIST padded to 32x32


def weight_files() -> list[str]:
    """Names of the bundled weights files."""
    return sorted(path.name for path in WEIGHTS_DIR.glob("*.safetensors"))


def weights_path(name: str) -> Path:
    """A bundled weights file by name (any folder part is dropped)."""
    path = WEIGHTS_DIR / Path(name).name
    if not path.is_file():
        raise FileNotFoundError(f"Demo model weights {name!r} not found in {WEIGHTS_DIR}; they ship with the "
                                f"pack (retrain them with {TRAIN_COMMAND}).")
    return path


def read_weights(path: Path | str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a demo-model safetensors file, with errors that say how to rebuild it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"demo model weights not found: {path}; train them with {TRAIN_COMMAND}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(
            f"demo model weights are corrupt or not a safetensors file: {path} ({exc}); "
            f"retrain them with {TRAIN_COMMAND}"
        ) from exc
    return tensors, metadata


def model_config_from_metadata(metadata: dict[str, str], path: Path | str) -> UNetConfig:
    if "model_config" not in metadata:
        raise ValueError(f"{path} has no 'model_config' metadata; not a demo model file from {TRAIN_COMMAND}")
    try:
        return UNetConfig.from_dict(json.loads(metadata["model_config"]))
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: invalid model_config metadata ({exc})") from exc


def load_demo_model(path: Path | str | None = None, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32) -> EDMDenoiser:
    """The demo denoiser D(x; sigma) in eval mode, on `device` in `dtype`, gradients off."""
    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    tensors, metadata = read_weights(path)
    model = EDMDenoiser(model_config_from_metadata(metadata, path))
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not match the stored model_config ({exc})") from exc
    model.metadata = metadata
    # channels_last: oneDNN's convolutions run ~25% faster on CPU; outputs agree to float rounding (~1e-6).
    model = model.to(device=device, dtype=dtype).to(memory_format=torch.channels_last)
    return model.eval().requires_grad_(False)
