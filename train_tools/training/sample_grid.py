"""Render a sample grid of the demo model with a Heun sampler (docs/images/demo_model_samples.png).

    python -m train_tools.training.sample_grid [--weights demo_model/weights/fashion_mnist_edm_cond.safetensors --cfg 4]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from comfyui_pas.denoiser import Denoiser
from comfyui_pas.grids import edm_sigmas
from comfyui_pas.teacher import heun_states
from demo_model import DEFAULT_WEIGHTS, LATENT_SHAPE, load_demo_model
from train_tools.data.fashion_mnist import image_grid, to_uint8
from train_tools.data.guided import GuidedModel
from train_tools.data.seeds import seeded_noise


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Render a sample grid of the demo model with a Heun sampler: seeds in "
                                            "rows of 10, or for a conditional model one row per class.")
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    p.add_argument("--out", type=Path, default=Path("docs/images/demo_model_samples.png"))
    p.add_argument("--rows", type=int, default=10, help="rows and columns of the grid")
    p.add_argument("--steps", type=int, default=51, help="Heun steps (NFE = 2 * steps - 1)")
    p.add_argument("--first-seed", type=int, default=0, help="seed of the top-left sample")
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
