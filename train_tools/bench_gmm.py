"""`make bench`: PAS on the analytic Gaussian-mixture model, held-out seeds, euler and iPNDM.

Prints a table (RMSE of the final sample against a high-accuracy teacher, without and with PAS; steps
accepted; parameters; teacher vs search time) and writes it as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

from comfyui_pas import edm_sigmas, sample_pas, train_pas
from comfyui_pas.search import DEFAULT_PARAMETERIZATION
from comfyui_pas.teacher import teacher_states
from train_tools.gmm import GaussianMixtureDenoiser, rmse, seeded_noise

GMM_SETTINGS = dict(dim=128, components=16, spread=1.0, std=0.5, seed=0)
EVAL_SEED_OFFSET = 100_000


def run_case(model, solver, order, nfe, train_x, eval_x, reference, parameterization, **search):
    sigmas = edm_sigmas(nfe)
    coords, report = train_pas(model, train_x, sigmas, solver=solver, max_order=order,
                               parameterization=parameterization, **search)
    plain = sample_pas(model, eval_x, sigmas, solver=solver, max_order=order)
    corrected = sample_pas(model, eval_x, sigmas, solver=solver, max_order=order, coords=coords)
    rmse_plain, rmse_pas = rmse(plain, reference[nfe]), rmse(corrected, reference[nfe])
    per_sample = lambda out: (out - reference[nfe]).double().square().flatten(1).mean(1).sqrt()  # noqa: E731
    return {"solver": solver, "order": order, "nfe": nfe, "parameterization": parameterization,
            "rmse_plain": rmse_plain, "rmse_pas": rmse_pas, "gain": 1 - rmse_pas / rmse_plain,
            "median_plain": float(per_sample(plain).median()), "median_pas": float(per_sample(corrected).median()),
            "worse_samples": float((per_sample(corrected) > per_sample(plain)).double().mean()),
            "accepted": coords.steps, "parameters": coords.n_parameters,
            "teacher_seconds": report["teacher_seconds"], "search_seconds": report["search_seconds"],
            "teacher_nfe": report["settings"]["teacher"]["nfe"]}


def references(model, eval_x, nfes, reference_nfe):
    """Final states of a Heun teacher with `reference_nfe` calls, one per student grid."""
    return {nfe: teacher_states(model, eval_x, edm_sigmas(nfe), teacher_nfe=reference_nfe)[0][-1] for nfe in nfes}


def format_table(rows):
    lines = ["| solver | NFE | param. | RMSE plain | RMSE PAS | change | median change | samples worse | steps | params "
             "| teacher s | search s |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        name = r["solver"] if r["solver"] == "euler" else f"ipndm{r['order']}"
        lines.append(f"| {name} | {r['nfe']} | {r['parameterization']} | {r['rmse_plain']:.4f} | {r['rmse_pas']:.4f} | "
                     f"{-100 * r['gain']:+.1f}% | {100 * (r['median_pas'] / r['median_plain'] - 1):+.1f}% | "
                     f"{100 * r['worse_samples']:.0f}% | {r['accepted']} | {r['parameters']} | {r['teacher_seconds']:.2f} | "
                     f"{r['search_seconds']:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nfe", type=int, nargs="+", default=[4, 5, 6, 8, 10])
    parser.add_argument("--train", type=int, default=256, help="training trajectories (seeds 0..N-1)")
    parser.add_argument("--eval", type=int, default=512, help="held-out seeds from 100000")
    parser.add_argument("--teacher-nfe", type=int, default=100)
    parser.add_argument("--reference-nfe", type=int, default=400, help="teacher used to score held-out samples")
    parser.add_argument("--parameterization", nargs="+", default=["absolute", "relative"])
    parser.add_argument("--out", default="out/bench_gmm.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    model = GaussianMixtureDenoiser.random(**GMM_SETTINGS)
    train_x = seeded_noise(range(args.train), (model.dim,)) * model.sigma_max
    eval_x = seeded_noise(range(EVAL_SEED_OFFSET, EVAL_SEED_OFFSET + args.eval), (model.dim,)) * model.sigma_max
    started = time.perf_counter()
    reference = references(model, eval_x, args.nfe, args.reference_nfe)
    rows = []
    for parameterization in args.parameterization:
        for solver, order in (("euler", 1), ("ipndm", 3)):
            for nfe in args.nfe:
                rows.append(run_case(model, solver, order, nfe, train_x, eval_x, reference, parameterization,
                                     teacher_nfe=args.teacher_nfe))
    table = format_table(rows)
    print(f"Gaussian mixture {GMM_SETTINGS}; {args.train} training trajectories, {args.eval} held-out seeds, "
          f"teacher {args.teacher_nfe} NFE, scored against a {args.reference_nfe}-NFE Heun reference")
    print(table)
    verdicts = []
    for parameterization in args.parameterization:
        sub = [r for r in rows if r["parameterization"] == parameterization]
        euler_ok = all(r["gain"] >= 0.25 for r in sub if r["solver"] == "euler")
        ipndm_ok = all(r["rmse_pas"] <= r["rmse_plain"] for r in sub if r["solver"] == "ipndm")
        ratio = sum(r["search_seconds"] for r in sub) / max(1e-9, sum(r["teacher_seconds"] for r in sub))
        verdicts.append({"parameterization": parameterization, "euler_gain_at_least_25pct": euler_ok,
                         "ipndm_never_worse": ipndm_ok, "search_over_teacher_time": ratio})
        print(f"{parameterization}: euler+PAS >= 25% better at every NFE: {'yes' if euler_ok else 'NO'}; "
              f"ipndm+PAS never worse: {'yes' if ipndm_ok else 'NO'}; search time / teacher time = {ratio:.2f}")
    print(f"(library default parameterization: {DEFAULT_PARAMETERIZATION}; total {time.perf_counter() - started:.0f} s)")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump({"gmm": GMM_SETTINGS, "args": vars(args), "rows": rows, "verdicts": verdicts}, handle, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
