"""Load the bundled Fashion-MNIST demo model (EDM UNet, k-diffusion denoiser interface)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open

from .edm_unet import EDMDenoiser, UNetConfig

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "models" / "fashion_mnist_edm.safetensors"
TRAIN_COMMAND = "make train-model (python -m train_tools.train_model)"
LATENT_SHAPE = (1, 32, 32)  # one sample: 28x28 Fashion-MNIST padded to 32x32


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
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def image_grid(images, rows: int, cols: int, zoom: int = 3, gap: int = 2):
    """uint8 (N, 28, 28) -> a PIL image with the items on a white background."""
    import numpy as np
    from PIL import Image

    h, w = images.shape[1:]
    canvas = np.full((rows * (h + gap) + gap, cols * (w + gap) + gap), 255, np.uint8)
    for i, item in enumerate(images[: rows * cols]):
        r, c = divmod(i, cols)
        canvas[gap + r * (h + gap): gap + r * (h + gap) + h, gap + c * (w + gap): gap + c * (w + gap) + w] = item
    return Image.fromarray(canvas).resize((canvas.shape[1] * zoom, canvas.shape[0] * zoom), Image.NEAREST)


def main(argv: list[str] | None = None) -> None:
    import argparse

    from comfyui_pas.denoiser import Denoiser
    from comfyui_pas.grids import edm_sigmas
    from comfyui_pas.teacher import heun_states
    from train_tools.fashion_mnist import to_uint8
    from train_tools.guided import GuidedModel
    from train_tools.seeds import seeded_noise

    p = argparse.ArgumentParser(description="Render a sample grid of the demo model with a Heun sampler: seeds in "
                                            "rows of 10, or for a conditional model one row per class.")
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    p.add_argument("--out", type=Path, default=Path("docs/images/demo_model_samples.png"))
    p.add_argument("--rows", type=int, default=10)
    p.add_argument("--steps", type=int, default=51, help="Heun steps (NFE = 2 * steps - 1)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--cfg", type=float, default=1.0, help="conditional model: classifier-free guidance")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    model = load_demo_model(args.weights)
    sigmas = edm_sigmas(args.steps, model.sigma_min, model.sigma_max, append_zero=True).float()
    seeds = list(range(args.first_seed, args.first_seed + args.rows * args.rows))
    x = seeded_noise(seeds, LATENT_SHAPE, torch.float32) * sigmas[0]
    # Conditional: row r shows class r (seed order is row-major, so the label is the row).
    labels = {"class_labels": torch.tensor([i // args.rows for i in range(len(seeds))])} if model.num_classes else None
    denoiser = Denoiser(GuidedModel(model, args.cfg), extra_args=labels)
    x = heun_states(denoiser, x, sigmas, keep_every=len(sigmas) - 1)[-1]  # EDM Algorithm 1, final state only
    args.out.parent.mkdir(parents=True, exist_ok=True)
    image_grid(to_uint8(x), args.rows, args.rows).save(args.out)
    print(f"{len(seeds)} samples, {2 * args.steps - 1} NFE Heun, CFG {args.cfg:g}, steps_done="
          f"{model.metadata.get('steps_done')} -> {args.out}")


if __name__ == "__main__":
    main()
