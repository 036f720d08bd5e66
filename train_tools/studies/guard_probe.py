"""Can a check that uses only the user's model tell a harmful PAS correction from a helpful one?

    python -m train_tools.studies.guard_probe [--cases first|validation|ipndm] [--held-out 64]

For PAS rows whose verdict the quality bench already measured (docs/objective-study.md: the rule study and
the best-row study, FD to the teacher with paired intervals on other seeds), this trains PAS again with the
paper's rule on 48 trajectories, samples held-out training-range seeds (not the evaluation seeds) with the
solver and with solver+PAS, and computes statistics a trainer could compute inside ComfyUI, each against the
teacher's finals of the same seeds:
* rmse: per-sample error (what the fit minimises);
* contrast: per-sample pixel spread;
* spectrum: the mean |log power| gap to the teacher in radial frequency bands (blur lowers the high bands,
  grain raises them);
* denoiser@s: the model's own pull on a final re-noised to sigma s, mean |D(x + s n, s) - x|^2 (one model call
  per final and sigma; a final off the model's manifold is pulled further);
* statistics across samples, where a shared least-squares step that pulls samples toward their mean would
  show: diversity (the per-pixel variance across the finals, averaged), mean_gap (the RMS of the difference
  between the mean final and the teacher's mean final), coarse_fd (the Frechet distance of the finals pooled
  to 4x4-pixel cells, to the teacher's) and patch_fd (the `patches` guard's 4x4-patch Frechet distance).
A statistic would make a guard if its gap to the teacher grows for the rows the bench found worse and shrinks
for the rows it found better. Writes out/guard_probe/<cases>/probe.json and probe.md.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from comfyui_pas.acceptance import frechet_distance, patch_frechet, spread
from train_tools.bench_setup import BenchSetup, karras
from train_tools.studies.rule_study import RuleTrainer
from train_tools.tables import markdown_table

# (model, cfg, solver, nfe, rho, measured FD-to-teacher change of paper@48 against the solver, where measured)
CASES = [
    ("cond", 4.0, "deis", 4, 9.0, "+24.4% [+17.8, +30.9] worse", "best_row"),
    ("cond", 4.0, "dpmpp_2m", 4, 9.0, "+6.4% [+0.2, +12.5] worse", "best_row"),
    ("uncond", 1.0, "deis", 4, 3.0, "+8.1% [+2.8, +13.5] worse", "best_row"),
    ("uncond", 1.0, "dpmpp_2m", 4, 7.0, "+38.0% [+33.0, +43.1] worse", "rule_study"),
    ("uncond", 1.0, "dpmpp_2m", 5, 7.0, "+82.1% [+67.3, +97.0] worse", "rule_study"),
    ("cond", 1.0, "dpmpp_2m", 4, 7.0, "+38.7% [+29.9, +47.4] worse", "rule_study"),
    ("cond", 4.0, "deis", 4, 7.0, "-10.9% [-16.1, -5.7] better", "rule_study"),
    ("cond", 4.0, "dpmpp_2m", 4, 7.0, "-7.1% [-12.4, -1.9] better", "rule_study"),
    ("cond", 4.0, "deis", 5, 9.0, "-52.4% [-56.5, -48.4] better", "best_row"),
    ("cond", 4.0, "dpmpp_2m", 5, 3.0, "-11.8% [-19.1, -4.4] better", "best_row"),
    ("uncond", 1.0, "deis", 5, 7.0, "-8.3% [-12.2, -4.4] better", "best_row"),
    ("cond", 1.0, "deis", 4, 5.0, "-59.9% [-64.9, -54.8] better", "best_row"),
    ("uncond", 1.0, "deis", 6, 9.0, "-36.2% [-43.4, -29.0] better", "best_row"),
]
# Chosen after the first set: cases the first set did not contain (rule study, ComfyUI's karras grid), to test
# the prediction "the model's pull at sigma 2 moves away from the teacher's <=> the bench finds the row worse".
VALIDATION = [
    ("uncond", 1.0, "dpmpp_2m", 6, 7.0, "+53.1% [+37.1, +69.2] worse", "rule_study"),
    ("uncond", 1.0, "dpmpp_2m", 8, 7.0, "+15.7% [+4.4, +26.9] worse", "rule_study"),
    ("uncond", 1.0, "deis", 4, 7.0, "-32.0% [-34.2, -29.8] better", "rule_study"),
    ("uncond", 1.0, "deis", 6, 7.0, "-44.6% [-51.1, -38.2] better", "rule_study"),
    ("cond", 1.0, "deis", 5, 7.0, "-70.8% [-75.1, -66.5] better", "rule_study"),
    ("cond", 1.0, "dpmpp_2m", 5, 7.0, "+0.2% [-13.2, +13.5] level", "rule_study"),
    ("cond", 4.0, "deis", 6, 7.0, "-59.7% [-63.5, -55.9] better", "rule_study"),
    ("cond", 4.0, "dpmpp_2m", 6, 7.0, "-35.8% [-44.2, -27.3] better", "rule_study"),
    ("cond", 4.0, "dpmpp_2m", 8, 7.0, "-5.3% [-18.8, +8.2] level", "rule_study"),
]
# Chosen after the first two sets, to test statistics across samples on ipndm (best-row study): its worse row
# without guidance on rho 3, the level row at CFG 1 on rho 3, and better rows on other grids and settings.
IPNDM = [
    ("uncond", 1.0, "ipndm", 5, 3.0, "+33.6% [+22.7, +44.6] worse", "best_row"),
    ("cond", 1.0, "ipndm", 5, 3.0, "+2.1% [-5.6, +9.8] level", "best_row"),
    ("uncond", 1.0, "ipndm", 4, 5.0, "-12.8% [-16.7, -8.9] better", "best_row"),
    ("uncond", 1.0, "ipndm", 6, 7.0, "-69.9% [-75.2, -64.7] better", "best_row"),
    ("uncond", 1.0, "ipndm", 10, 3.0, "-33.0% [-46.3, -19.6] better", "best_row"),
    ("cond", 4.0, "ipndm", 5, 3.0, "-50.7% [-54.5, -46.9] better", "best_row"),
    ("cond", 1.0, "ipndm", 4, 5.0, "-48.6% [-54.2, -43.0] better", "best_row"),
]
CASE_SETS = {"first": CASES, "validation": VALIDATION, "ipndm": IPNDM}
SIGMAS = (0.1, 0.5, 2.0)
BANDS = 6
COARSE = 4  # the pooling cell of coarse_fd, in pixels
# Statistics that are distances to the teacher already; the others are compared by |value - teacher's|.
GAPS = ("rmse", "spectrum_gap", "mean_gap", "coarse_fd", "patch_fd")


def radial_log_power(x: torch.Tensor) -> torch.Tensor:
    """(N, BANDS) log of the mean power in radial frequency bands of each image (channels averaged)."""
    power = torch.fft.fftshift(torch.fft.fft2(x.double()), dim=(-2, -1)).abs().pow(2).mean(dim=1)
    h, w = power.shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(h) - h // 2, torch.arange(w) - w // 2, indexing="ij")
    radius = (yy.double() ** 2 + xx.double() ** 2).sqrt()
    edges = torch.linspace(0, float(radius.max()), BANDS + 1, dtype=torch.float64)
    edges[-1] += 1e-6  # the corner frequency belongs to the top band
    bands = [power[:, (radius >= lo) & (radius < hi)].mean(dim=1) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    return torch.stack(bands, dim=1).clamp_min(1e-12).log()


@torch.no_grad()
def denoiser_pull(setup: BenchSetup, finals: torch.Tensor, seeds, sigma: float) -> torch.Tensor:
    """Per-sample mean |D(x + sigma n, sigma) - x|^2 with a fixed noise per seed."""
    generator = torch.Generator().manual_seed(12345)
    noise = torch.randn(finals.shape, generator=generator)
    args = setup.per_sample_args(seeds)
    out = setup.guided(finals + sigma * noise, torch.full((finals.shape[0],), sigma), **args)
    return (out - finals).double().pow(2).flatten(1).mean(dim=1)


def statistics(setup, finals, teacher, seeds) -> dict:
    stats = {"rmse": float((finals - teacher).double().pow(2).flatten(1).mean(dim=1).sqrt().mean()),
             "contrast": float(spread(finals).mean()),
             "spectrum_gap": float((radial_log_power(finals).mean(0) - radial_log_power(teacher).mean(0)).abs().mean())}
    for sigma in SIGMAS:
        stats[f"denoiser@{sigma:g}"] = float(denoiser_pull(setup, finals, seeds, sigma).mean())
    stats.update(across_samples(finals, teacher))
    return stats


def across_samples(finals: torch.Tensor, teacher: torch.Tensor) -> dict:
    """Statistics of the batch as a distribution (see the module's docstring), against the teacher's finals."""
    pooled = [torch.nn.functional.avg_pool2d(x.double(), COARSE, ceil_mode=True).flatten(1) for x in (finals, teacher)]
    return {"diversity": float(finals.double().flatten(1).var(dim=0).mean()),
            "mean_gap": float((finals.double().mean(0) - teacher.double().mean(0)).pow(2).mean().sqrt()),
            "coarse_fd": frechet_distance(*pooled),
            "patch_fd": patch_frechet(finals, teacher)}


def probe(case, held_out: int) -> dict:
    model, cfg, solver, nfe, rho, measured, source = case
    setup = BenchSetup.create(model, cfg, n=held_out)
    trainer = RuleTrainer(setup, 48 + held_out)
    sigmas = karras(nfe, rho)
    t0 = time.perf_counter()
    coords, _, _ = trainer.train(solver, sigmas, "paper", 48)
    seeds = trainer.seeds[48:]
    teacher = trainer.teachers[tuple(sigmas.tolist())][0][-1, 48:]
    base = setup.run(setup.builtin(solver), sigmas, seeds)
    corrected = setup.run(setup.pas(solver, coords), sigmas, seeds)
    result = {"case": f"{setup.label()}, {solver}, NFE {nfe}, rho {rho:g}", "measured": measured, "source": source,
              "steps": coords.steps, "teacher": statistics(setup, teacher, teacher, seeds),
              "base": statistics(setup, base, teacher, seeds), "pas": statistics(setup, corrected, teacher, seeds),
              "seconds": time.perf_counter() - t0}
    print(json.dumps(result), flush=True)
    return result


def gap_row(result) -> list:
    """Per statistic: 'base gap -> PAS gap' to the teacher (rmse and spectrum are gaps already)."""
    cells = [result["case"], result["measured"], str(result["steps"])]
    for key in result["teacher"]:
        t, b, p = (result[k][key] for k in ("teacher", "base", "pas"))
        if key not in GAPS:
            b, p = abs(b - t), abs(p - t)
        cells.append(f"{b:.4g} -> {p:.4g} ({'grows' if p > b else 'shrinks'})")
    return cells


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--held-out", type=int, default=64, help="held-out training-range seeds per case")
    parser.add_argument("--cases", choices=tuple(CASE_SETS), default="first")
    parser.add_argument("--out", default=None, help="output folder (default out/guard_probe/<cases>)")
    args = parser.parse_args(argv)
    results = [probe(case, args.held_out) for case in CASE_SETS[args.cases]]
    out = Path(args.out or f"out/guard_probe/{args.cases}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.json").write_text(json.dumps(results, indent=1))
    header = ["case", "bench verdict (FD teacher, paper@48)", "steps", *[f"{k}: gap to teacher" for k in results[0]["teacher"]]]
    table = markdown_table(header, [gap_row(r) for r in results])
    (out / "probe.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
