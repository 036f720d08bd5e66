"""`make bench-overhead`: per-step cost of the PAS correction next to one model call, SD1.5 UNet topology,
1x4x64x64 latent.

    OMP_NUM_THREADS=1 python -m train_tools.benches.bench_overhead [--steps 10] [--repeats 3] [--full-sampling]

The UNet is ComfyUI's SD1.5 UNet (the unet_config ComfyUI derives for SD1.5 checkpoints,
comfy/model_detection.py) with random fan-in weights inside a real ModelPatcher (the tests' model factory,
tests/host/pas_test_pack/tiny.py). Three figures: one model call (batch 1 and the batch 2 of a CFG step),
the extra time of a corrected step over a plain one in sample_pas (measured with a free stand-in denoiser,
so only the solver and basis work is timed), and, with --full-sampling, whole sample_pas runs with the real
UNet with and without corrections at every step (slow on a CPU: two runs of `steps` UNet calls; the
difference drowns in timing noise). Needs the ComfyUI host (`make host`).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from comfyui_pas.basis import basis_is_feasible
from comfyui_pas.coords import PASCoordinates
from comfyui_pas.sampler import sample_pas
from comfyui_pas.solvers import SOLVERS
from train_tools.comfy_builtins import comfyui_dir, setup_comfy
from train_tools.paths import REPO_ROOT

TEST_PACKS = REPO_ROOT / "tests" / "host"  # holds pas_test_pack
SD15_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
    "adm_in_channels": None, "dtype": torch.float32, "in_channels": 4, "model_channels": 320,
    "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": [1, 2, 4, 4],
    "transformer_depth_middle": 1, "use_linear_in_transformer": False, "context_dim": 768,
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "use_temporal_attention": False, "use_temporal_resblock": False,
}
SHAPE = (1, 4, 64, 64)
STAND_IN_LOOPS = 20  # sample_pas runs per timing of the free stand-in denoiser


def synchronize():
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def timed(fn, repeats):
    """Median wall time of `repeats` calls of fn(), and all the times (the GPU's queue drained each time)."""
    times = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        fn()
        synchronize()
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


def sd15_denoiser(steps, device="cpu"):
    """(denoise(x, sigma), karras sigmas with `steps` steps) of the random SD1.5 UNet in a ModelPatcher, its
    weights in the dtype ComfyUI picks for the device (fp16 on most GPUs)."""
    if not setup_comfy(cpu=device == "cpu"):
        raise SystemExit(f"No ComfyUI host at {comfyui_dir()}: run `make host` (or set COMFYUI_DIR).")
    if str(TEST_PACKS) not in sys.path:
        sys.path.insert(0, str(TEST_PACKS))
    import comfy.samplers
    from pas_test_pack import tiny

    started = time.perf_counter()
    import comfy.model_management

    dtype = comfy.model_management.unet_dtype() if device != "cpu" else torch.float32
    patcher = tiny.make_model("eps", seed=0, unet_config=dict(SD15_UNET, dtype=dtype))
    model = patcher.model.to(device)
    params = sum(p.numel() for p in model.diffusion_model.parameters())
    print(f"SD1.5 UNet built: {params:,} parameters in {time.perf_counter() - started:.1f} s")
    sigmas = comfy.samplers.calculate_sigmas(patcher.get_model_object("model_sampling"), "karras", steps).to(device)
    context = torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(1)).to(device)

    def denoise(x, sigma, **_):
        return model.apply_model(x, sigma, c_crossattn=context.expand(x.shape[0], -1, -1))

    return denoise, sigmas


def correction_overhead(x, sigmas, coords, solver_args):
    """Seconds a corrected step costs over a plain one in sample_pas, with a free stand-in denoiser."""
    def stand_in(x, sigma, **_):  # isolates the sampler's own work
        return x * 0.5

    plain, _ = timed(lambda: [sample_pas(stand_in, x, sigmas, **solver_args) for _ in range(STAND_IN_LOOPS)], 3)
    corrected, _ = timed(lambda: [sample_pas(stand_in, x, sigmas, coords=coords, **solver_args)
                                  for _ in range(STAND_IN_LOOPS)], 3)
    return (corrected - plain) / STAND_IN_LOOPS / len(coords.steps)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="karras steps of the sampled grid")
    parser.add_argument("--repeats", type=int, default=3, help="timed model calls (the median counts)")
    parser.add_argument("--n-basis", type=int, default=4, help="basis size of the corrections")
    parser.add_argument("--solvers", nargs="+", default=list(SOLVERS), choices=SOLVERS)
    parser.add_argument("--full-sampling", action="store_true", help="also time whole runs with the UNet")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for `make gpu-check`")
    return parser.parse_args(argv)


def main(argv=None):
    options = parse_args(argv)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS')}")
    denoise, sigmas = sd15_denoiser(options.steps, options.device)
    x = (torch.randn(SHAPE, generator=torch.Generator().manual_seed(2)) * float(sigmas[0])).to(options.device)
    with torch.inference_mode():
        denoise(x, sigmas[:1])  # warm-up
        call_1, _ = timed(lambda: denoise(x, sigmas[:1]), options.repeats)
        x2 = x.repeat(2, 1, 1, 1)
        call_2, _ = timed(lambda: denoise(x2, sigmas[:1].repeat(2)), options.repeats)
        print(f"one model call: batch 1 {call_1 * 1e3:.1f} ms, batch 2 (a CFG step) {call_2 * 1e3:.1f} ms")
        print(f"{options.steps} karras steps, n_basis {options.n_basis}, a correction at every feasible step")
        print("| solver | overhead per corrected step | share of a batch-1 call | share of a CFG call |")
        print("|---|---|---|---|")
        for solver in options.solvers:
            coords = all_step_coords(sigmas, solver, None, options.n_basis)
            per_step = correction_overhead(x, sigmas, coords, {"solver": solver})
            print(f"| {coords.solver_label()} | {per_step * 1e3:.2f} ms | {100 * per_step / call_1:.3f}% | "
                  f"{100 * per_step / call_2:.3f}% |", flush=True)
            if options.full_sampling:
                end_plain, _ = timed(lambda s=solver: sample_pas(denoise, x, sigmas, solver=s), 1)
                end_pas, _ = timed(lambda s=solver, c=coords: sample_pas(denoise, x, sigmas, solver=s, coords=c), 1)
                print(f"  full sampling with the UNet (batch 1, no CFG): plain {end_plain:.2f} s, PAS at every step "
                      f"{end_pas:.2f} s ({100 * (end_pas - end_plain) / end_plain:+.2f}%, includes timing noise)")


if __name__ == "__main__":
    main()
