"""`make gpu-check`, part 2: PAS training on a full-size SD1.5-topology UNet (random weights) on the GPU,
then the per-solver correction overhead next to one UNet call (train_tools.benches.bench_overhead on cuda).

    python -m train_tools.benches.gpu_check [--trajectories 8] [--steps 10] [--teacher-nfe 48]
"""
from __future__ import annotations

import argparse
import time

import torch

from comfyui_pas import Denoiser, TeacherSettings, train_pas
from train_tools.benches import bench_overhead


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trajectories", type=int, default=8, help="training trajectories of the trainer run")
    parser.add_argument("--steps", type=int, default=10, help="karras steps of the student grid")
    parser.add_argument("--teacher-nfe", type=int, default=48, help="teacher NFE of the trainer run")
    parser.add_argument("--solver", default="deis", help="base solver of the trainer run")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("gpu-check needs a CUDA GPU (torch.cuda.is_available() is False)")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
    denoise, sigmas = bench_overhead.sd15_denoiser(args.steps, "cuda")
    generator = torch.Generator().manual_seed(3)
    x = (torch.randn((args.trajectories, *bench_overhead.SHAPE[1:]), generator=generator) * float(sigmas[0])).cuda()
    with torch.inference_mode():
        bench_overhead.synchronize()
        started = time.perf_counter()
        coords, report = train_pas(Denoiser(denoise, chunk_size=args.trajectories), x, sigmas, solver=args.solver,
                                   teacher=TeacherSettings(nfe=args.teacher_nfe))
        bench_overhead.synchronize()
        seconds = time.perf_counter() - started
    print(f"SD1.5 UNet trainer ({args.solver}, {args.steps} karras steps, {args.trajectories} trajectories, teacher "
          f"{report['settings']['teacher']['nfe']} NFE): {report['model_calls']} model calls in {seconds:.1f} s "
          f"(teacher {report['teacher_seconds']:.1f} s, search {report['search_seconds']:.1f} s); corrected steps "
          f"{coords.steps}; held-out error {report['val_final_plain']:.4g} -> {report['val_final_pas']:.4g}")
    bench_overhead.main(["--device", "cuda", "--steps", str(args.steps), "--repeats", "5"])


if __name__ == "__main__":
    main()
