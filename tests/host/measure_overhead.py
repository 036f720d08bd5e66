"""Per-step cost of the PAS correction next to one model call, SD1.5 UNet topology, 1x4x64x64 latent.

Not a test (pytest collects nothing here). Run from the repository root:

    OMP_NUM_THREADS=1 .venv/bin/python tests/host/measure_overhead.py [--steps 10] [--repeats 3] [--full-sampling]

The UNet is ComfyUI's SD1.5 UNet (the unet_config ComfyUI derives for SD1.5 checkpoints,
comfy/model_detection.py) with random fan-in weights inside a real ModelPatcher. Three figures:
one model call (batch 1 and the batch 2 of a CFG step), the extra time of a corrected step over a plain
one in sample_pas (measured with a free stand-in denoiser, so only the solver and basis work is timed),
and, with --full-sampling, whole sample_pas runs with the real UNet with and without corrections at every
step (slow on a CPU: two runs of `steps` UNet calls; the difference drowns in timing noise).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, os.environ.get("COMFYUI_DIR", str(REPO / ".comfyui" / "ComfyUI")))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from comfy.cli_args import args  # noqa: E402

args.cpu = True

import comfy.samplers  # noqa: E402
import torch  # noqa: E402
from pas_test_pack import tiny  # noqa: E402

from comfyui_pas.basis import basis_is_feasible  # noqa: E402
from comfyui_pas.coords import PASCoordinates  # noqa: E402
from comfyui_pas.sampler import sample_pas  # noqa: E402

SD15_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
    "adm_in_channels": None, "dtype": torch.float32, "in_channels": 4, "model_channels": 320,
    "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": [1, 2, 4, 4],
    "transformer_depth_middle": 1, "use_linear_in_transformer": False, "context_dim": 768,
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "use_temporal_attention": False, "use_temporal_resblock": False,
}
SHAPE = (1, 4, 64, 64)


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def all_step_coords(sigmas, solver, max_order, n_basis, seed=0):
    """Coordinates at every step that can carry an n_basis basis (the worst case for the overhead)."""
    steps = [s for s in range(len(sigmas) - 1) if basis_is_feasible(s + 2, n_basis)]
    generator = torch.Generator().manual_seed(seed)
    coordinates = torch.randn(len(steps), n_basis, generator=generator, dtype=torch.float64) * 0.01
    coordinates[:, 0] += 1.0
    return PASCoordinates(sigmas=sigmas, solver=solver, max_order=max_order, n_basis=n_basis, steps=steps,
                          coordinates=coordinates)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-basis", type=int, default=4)
    parser.add_argument("--solver", default="ipndm", choices=["euler", "ipndm"])
    parser.add_argument("--full-sampling", action="store_true", help="also time whole runs with the UNet")
    options = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS')}")

    started = time.perf_counter()
    patcher = tiny.make_model("eps", seed=0, unet_config=SD15_UNET)
    model = patcher.model
    params = sum(p.numel() for p in model.diffusion_model.parameters())
    print(f"SD1.5 UNet built: {params:,} parameters in {time.perf_counter() - started:.1f} s")
    model_sampling = patcher.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(model_sampling, "karras", options.steps).cpu()
    context = torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(1))

    def denoise(x, sigma, **_):
        return model.apply_model(x, sigma, c_crossattn=context.expand(x.shape[0], -1, -1))

    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2)) * float(sigmas[0])
    with torch.inference_mode():
        denoise(x, sigmas[:1])  # warm-up
        call_1, _ = timed(lambda: denoise(x, sigmas[:1]), options.repeats)
        x2 = x.repeat(2, 1, 1, 1)
        call_2, _ = timed(lambda: denoise(x2, sigmas[:1].repeat(2)), options.repeats)
        print(f"one model call: batch 1 {call_1 * 1e3:.1f} ms, batch 2 (a CFG step) {call_2 * 1e3:.1f} ms")

        coords = all_step_coords(sigmas, options.solver, 3, options.n_basis)

        def stand_in(x, sigma, **_):  # a free denoiser: isolates the sampler's own work
            return x * 0.5

        solver_args = dict(solver=options.solver, max_order=3)
        loops = 20
        plain, _ = timed(lambda: [sample_pas(stand_in, x, sigmas, **solver_args) for _ in range(loops)], 3)
        corrected, _ = timed(lambda: [sample_pas(stand_in, x, sigmas, coords=coords, **solver_args)
                                      for _ in range(loops)], 3)
        per_step = (corrected - plain) / loops / len(coords.steps)
        print(f"{options.solver}, {options.steps} karras steps, n_basis {options.n_basis}, corrected steps "
              f"{coords.steps}")
        print(f"correction overhead per corrected step: {per_step * 1e3:.2f} ms = "
              f"{100 * per_step / call_1:.3f}% of a batch-1 model call, {100 * per_step / call_2:.3f}% of a CFG call")

        if not options.full_sampling:
            return
        end_plain, _ = timed(lambda: sample_pas(denoise, x, sigmas, **solver_args), 1)
        end_pas, _ = timed(lambda: sample_pas(denoise, x, sigmas, coords=coords, **solver_args), 1)
        print(f"full sampling with the UNet (batch 1, no CFG): plain {end_plain:.2f} s, PAS at every step "
              f"{end_pas:.2f} s ({100 * (end_pas - end_plain) / end_plain:+.2f}%, includes timing noise)")


if __name__ == "__main__":
    main()
