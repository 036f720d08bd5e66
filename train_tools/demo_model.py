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


@torch.no_grad()
def heun_sample(model, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """EDM Algorithm 1 (deterministic Heun, 2nd order; Euler on the last step to sigma = 0)."""
    for sigma, sigma_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist(), strict=True):
        d = (x - model(x, torch.full((x.shape[0],), sigma, dtype=x.dtype))) / sigma
        x_next = x + (sigma_next - sigma) * d
        if sigma_next > 0:
            denoised_next = model(x_next, torch.full((x.shape[0],), sigma_next, dtype=x.dtype))
            d_next = (x_next - denoised_next) / sigma_next
            x_next = x + (sigma_next - sigma) * (d + d_next) / 2
        x = x_next
    return x


def seeded_noise(seeds: list[int], shape=(1, 32, 32), dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One generator per seed (as EDM's generate.py), so a sample does not depend on the batch."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s), dtype=dtype)
                        for s in seeds])


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

    from comfyui_pas.grids import edm_sigmas
    from train_tools.fashion_mnist import to_uint8

    p = argparse.ArgumentParser(description="Render a sample grid of the demo model with a Heun sampler.")
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    p.add_argument("--out", type=Path, default=Path("docs/images/demo_model_samples.png"))
    p.add_argument("--rows", type=int, default=10)
    p.add_argument("--steps", type=int, default=51, help="Heun steps (NFE = 2 * steps - 1)")
    p.add_argument("--first-seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    model = load_demo_model(args.weights)
    sigmas = edm_sigmas(args.steps, model.sigma_min, model.sigma_max, append_zero=True).float()
    seeds = list(range(args.first_seed, args.first_seed + args.rows * args.rows))
    x = heun_sample(model, seeded_noise(seeds) * sigmas[0], sigmas)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    image_grid(to_uint8(x), args.rows, args.rows).save(args.out)
    print(f"{len(seeds)} samples, {2 * args.steps - 1} NFE Heun, steps_done="
          f"{model.metadata.get('steps_done')} -> {args.out}")


if __name__ == "__main__":
    main()
