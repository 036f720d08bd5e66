"""`make bench`: PAS on the analytic Gaussian-mixture model, held-out seeds, every registered solver.

Prints a table (RMSE of the final sample against a high-accuracy teacher, without and with PAS; steps
accepted; parameters; teacher vs search time), then a distribution table: the Frechet distance of the finals
(in the mixture's own 128 coordinates) to exact draws from the mixture and to the reference teacher's finals
on other seeds, PAS against the plain solver with a paired 95% bootstrap interval over the held-out seeds,
and the finals' spread (total variance over the data's: under 1 is blur, over 1 grain). Writes both as JSON.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from comfyui_pas import SearchSettings, edm_sigmas, sample_pas, train_pas
from comfyui_pas.errors import rmse, sample_rmse
from comfyui_pas.settings import AUTO_RULE, RULE_CHOICES
from comfyui_pas.solvers import SOLVERS, describe_solver, solver_options
from comfyui_pas.teacher import teacher_states
from train_tools.data.gmm import GaussianMixtureDenoiser
from train_tools.data.seeds import GMM_EVAL_SEED_START, GMM_REFERENCE_SEED_START, seeded_noise
from train_tools.evaluation.metrics import compare
from train_tools.evaluation.quality import (
    N_BOOT,
    VERDICTS,
    FrechetReference,
    interval_verdict,
    percentile_interval,
)
from train_tools.tables import markdown_table, write_json

GMM_SETTINGS = dict(dim=128, components=16, spread=1.0, std=0.5, seed=0)
EVAL_SEED_OFFSET = GMM_EVAL_SEED_START
DISTRIBUTION_REFERENCES = ("data", "teacher")


class DistributionJudge:
    """FD of finals to fixed reference sets, on all held-out seeds and on shared bootstrap resamples of them."""

    def __init__(self, references: dict, n: int, n_boot: int = N_BOOT, seed: int = 0):
        self.references = {name: FrechetReference(x.numpy()) for name, x in references.items()}
        self.data_spread = self.references["data"].trace
        self.idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))

    def score(self, finals: torch.Tensor) -> dict:
        x = finals.reshape(len(finals), -1).numpy()
        out = {"spread": float(x.var(axis=0, ddof=1).sum() / self.data_spread)}
        for name, ref in self.references.items():
            rotated = x @ ref.root
            out[name] = (ref.distance(x, rotated), np.array([ref.distance(x[i], rotated[i]) for i in self.idx]))
        return out

    @staticmethod
    def change(plain: dict, corrected: dict, name: str) -> dict:
        """PAS minus plain in FD to reference `name`, with its paired interval."""
        return percentile_interval(corrected[name][0] - plain[name][0],
                                   corrected[name][1] - plain[name][1]).as_dict()


def corrected_finals(model, solver, nfe, train_x, eval_x, parameterization, targets, rule):
    coords, report = train_pas(model, train_x, edm_sigmas(nfe), solver=solver,
                               settings=SearchSettings.for_rule(rule, solver, parameterization=parameterization),
                               teacher=targets)
    return sample_pas(model, eval_x, edm_sigmas(nfe), solver=solver, coords=coords), coords, report


def run_case(model, solver, nfe, train_x, eval_x, reference, parameterization, targets, judge, plain_scores,
             rule=AUTO_RULE, against_rule=None):
    plain = sample_pas(model, eval_x, edm_sigmas(nfe), solver=solver)
    corrected, coords, report = corrected_finals(model, solver, nfe, train_x, eval_x, parameterization, targets, rule)
    summary = compare(sample_rmse(plain, reference[nfe]), sample_rmse(corrected, reference[nfe]))
    if (solver, nfe) not in plain_scores:
        plain_scores[solver, nfe] = judge.score(plain)
    before, after = plain_scores[solver, nfe], judge.score(corrected)
    distribution = {"spread_plain": before["spread"], "spread_pas": after["spread"]}
    for name in DISTRIBUTION_REFERENCES:
        distribution[f"fd_{name}_plain"], distribution[f"fd_{name}_pas"] = before[name][0], after[name][0]
        distribution[f"fd_{name}_change"] = judge.change(before, after, name)
    if against_rule is not None:
        other, other_coords, _ = corrected_finals(model, solver, nfe, train_x, eval_x, parameterization, targets,
                                                  against_rule)
        other_scores = judge.score(other)
        distribution.update({"against_rule": against_rule, "against_steps": other_coords.steps,
                             "against_rmse": rmse(other, reference[nfe]), "against_spread": other_scores["spread"],
                             "against_fd_data": other_scores["data"][0],
                             "fd_data_vs_against": judge.change(other_scores, after, "data")})
    return {**distribution, "solver": solver, "label": describe_solver(solver, solver_options(solver)), "nfe": nfe,
            "parameterization": parameterization, "rmse_plain": rmse(plain, reference[nfe]),
            "rmse_pas": rmse(corrected, reference[nfe]), "gain": summary["gain"],
            "median_plain": summary["median_plain"], "median_pas": summary["median_pas"],
            "worse_samples": summary["worse"], "accepted": coords.steps, "parameters": coords.n_parameters,
            "search_seconds": report["search_seconds"]}


def references(model, eval_x, nfes, reference_nfe):
    """Final states of a Heun teacher with `reference_nfe` calls, one per student grid."""
    return {nfe: teacher_states(model, eval_x, edm_sigmas(nfe), teacher_nfe=reference_nfe)[0][-1] for nfe in nfes}


def distribution_references(model, count, nfe, reference_nfe):
    """Exact draws from the mixture, and the reference teacher's finals on `count` seeds apart from the rest."""
    noise = seeded_noise(range(GMM_REFERENCE_SEED_START, GMM_REFERENCE_SEED_START + count), (model.dim,))
    teacher = teacher_states(model, noise * model.sigma_max, edm_sigmas(nfe), teacher_nfe=reference_nfe)[0][-1]
    return {"data": model.sample(count, seed=GMM_REFERENCE_SEED_START), "teacher": teacher}


def _change(c):
    return f"{c['value']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}]"


def format_distribution_table(rows):
    header = ["solver", "NFE", "FD data plain", "FD data PAS", "change [95%]", "FD teacher change [95%]",
              "spread plain", "spread PAS", "verdict (data)"]
    return markdown_table(header, [
        [r["label"], r["nfe"], f"{r['fd_data_plain']:.3f}", f"{r['fd_data_pas']:.3f}", _change(r["fd_data_change"]),
         _change(r["fd_teacher_change"]), f"{r['spread_plain']:.3f}", f"{r['spread_pas']:.3f}",
         interval_verdict(r["fd_data_change"])]
        for r in rows])


def format_against_table(rows, rule):
    header = ["solver", "NFE", f"steps ({rule})", "steps (other)", f"RMSE ({rule})", "RMSE (other)",
              f"FD data ({rule})", "FD data (other)", "difference [95%]", "verdict"]
    return markdown_table(header, [
        [r["label"], r["nfe"], r["accepted"], r["against_steps"], f"{r['rmse_pas']:.4f}", f"{r['against_rmse']:.4f}",
         f"{r['fd_data_pas']:.3f}", f"{r['against_fd_data']:.3f}", _change(r["fd_data_vs_against"]),
         interval_verdict(r["fd_data_vs_against"])]
        for r in rows])


def format_table(rows):
    header = ["solver", "NFE", "param.", "RMSE plain", "RMSE PAS", "change", "median change", "samples worse", "steps",
              "params", "search s"]
    return markdown_table(header, [
        [r["label"], r["nfe"], r["parameterization"], f"{r['rmse_plain']:.4f}", f"{r['rmse_pas']:.4f}",
         f"{-100 * r['gain']:+.1f}%", f"{100 * (r['median_pas'] / r['median_plain'] - 1):+.1f}%",
         f"{100 * r['worse_samples']:.0f}%", r["accepted"], r["parameters"], f"{r['search_seconds']:.2f}"]
        for r in rows])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nfe", type=int, nargs="+", default=[4, 5, 6, 8, 10])
    parser.add_argument("--train", type=int, default=256, help="training trajectories (seeds 0..N-1)")
    parser.add_argument("--eval", type=int, default=512, help="held-out seeds from 100000")
    parser.add_argument("--teacher-nfe", type=int, default=100)
    parser.add_argument("--reference-nfe", type=int, default=400, help="teacher used to score held-out samples")
    parser.add_argument("--references", type=int, default=2048,
                        help="exact mixture draws, and reference-teacher finals, for the distribution check")
    parser.add_argument("--parameterization", nargs="+", default=[SearchSettings.parameterization])
    parser.add_argument("--solvers", nargs="+", choices=SOLVERS, default=list(SOLVERS))
    parser.add_argument("--rule", choices=RULE_CHOICES, default=AUTO_RULE, help="acceptance rule (default: auto)")
    parser.add_argument("--against-rule", choices=RULE_CHOICES,
                        help="also train with this rule and compare the two corrected rows (paired FD to the data)")
    parser.add_argument("--out", default="out/bench_gmm.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    model = GaussianMixtureDenoiser.random(**GMM_SETTINGS)
    train_x = seeded_noise(range(args.train), (model.dim,)) * model.sigma_max
    eval_x = seeded_noise(range(EVAL_SEED_OFFSET, EVAL_SEED_OFFSET + args.eval), (model.dim,)) * model.sigma_max
    started = time.perf_counter()
    reference = references(model, eval_x, args.nfe, args.reference_nfe)
    teacher_started = time.perf_counter()
    targets = {nfe: teacher_states(model, train_x, edm_sigmas(nfe), teacher_nfe=args.teacher_nfe)[0] for nfe in args.nfe}
    teacher_seconds = time.perf_counter() - teacher_started
    judge = DistributionJudge(distribution_references(model, args.references, max(args.nfe), args.reference_nfe),
                              args.eval)
    plain_scores = {}
    rows = [run_case(model, solver, nfe, train_x, eval_x, reference, parameterization, targets[nfe], judge,
                     plain_scores, args.rule, args.against_rule)
            for parameterization in args.parameterization for solver in args.solvers for nfe in args.nfe]
    table = format_table(rows)
    print(f"Gaussian mixture {GMM_SETTINGS}; {args.train} training trajectories, {args.eval} held-out seeds, "
          f"rule {args.rule}, teacher {args.teacher_nfe} NFE ({teacher_seconds:.1f} s for all NFE, shared by the solvers), scored "
          f"against a {args.reference_nfe}-NFE Heun reference")
    print(table)
    verdicts = []
    for parameterization in args.parameterization:
        sub = [r for r in rows if r["parameterization"] == parameterization]
        never_worse = all(r["rmse_pas"] <= r["rmse_plain"] for r in sub)
        verdicts.append({"parameterization": parameterization, "every_solver_never_worse": never_worse,
                         "worst_change": max(-r["gain"] for r in sub)})
        print(f"{parameterization}: every solver+PAS never worse than the solver in held-out RMSE at every NFE: "
              f"{'met' if never_worse else 'MISSED'} (worst change {100 * verdicts[-1]['worst_change']:+.1f}%)")
    print(f"\nDistribution of the finals: Frechet distance in the mixture's {model.dim} coordinates to "
          f"{args.references} exact draws (data) and to the reference teacher's finals on {args.references} other "
          f"seeds; change = PAS - plain with a paired 95% bootstrap interval over the {args.eval} held-out seeds")
    print(format_distribution_table(rows))
    floor = judge.score(reference[max(args.nfe)])
    floor = {"spread": floor["spread"], **{f"fd_{name}": floor[name][0] for name in DISTRIBUTION_REFERENCES}}
    print(f"The {args.reference_nfe}-NFE reference's own finals on the held-out seeds (what an exact sampler shows "
          f"with these sample counts): FD to the data {floor['fd_data']:.3f}, to the teacher's finals "
          f"{floor['fd_teacher']:.3f}, spread {floor['spread']:.3f}")
    for parameterization in args.parameterization:
        sub = [r for r in rows if r["parameterization"] == parameterization]
        for name in DISTRIBUTION_REFERENCES:
            counts = {v: sum(interval_verdict(r[f"fd_{name}_change"]) == v for r in sub)
                      for v in VERDICTS}
            print(f"{parameterization}: FD to the {name}, PAS rows against the solver: "
                  + ", ".join(f"{n} {v}" for v, n in counts.items()))
    if args.against_rule:
        print(f"\nRule {args.rule} against rule {args.against_rule} (other), both corrected; difference = FD to the "
              f"data of {args.rule} minus other's, paired 95% interval")
        print(format_against_table(rows, args.rule))
    print(f"(total {time.perf_counter() - started:.0f} s)")
    write_json(args.out, {"gmm": GMM_SETTINGS, "args": vars(args), "rows": rows, "verdicts": verdicts,
                          "distribution_floor": floor})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
