"""Validate the quality bench before it judges anything: floors, noise, precision and agreement with FID.

    python -m train_tools.studies.quality_study --model cond --cfg 4 --n 1000 --fid-n 500
    python -m train_tools.studies.quality_study --model uncond --n 1000 --fid-n 500

Writes out/quality/<model>_cfg<w>/study.json and study.md (docs/quality-bench.md quotes them):
* floors: real training images and the teacher, scored like any sampler;
* configurations: ComfyUI's built-ins and PAS (the Trainer's defaults) on karras grids, every metric with
  its 95% interval, both references (the teacher's samples on other seeds, and the test images);
* noise: one configuration on disjoint seed sets of the same size, the spread of each metric;
* precision: the half-width of every paired relative difference between configurations of one NFE;
* agreement: Spearman's rho of each distance against Inception FID over the configurations.
"""
from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch

from comfyui_pas.settings import TRAINER_TEACHER_NFE
from train_tools.bench_setup import BenchSetup, bench_parser, karras
from train_tools.data import fashion_mnist
from train_tools.evaluation.quality import Judge, metrics_of, scored_table
from train_tools.tables import markdown_table, write_results

BUILTINS = ("euler", "deis", "dpmpp_2m", "ipndm", "res_multistep")


def configurations(nfes, builtins, pas_solvers, pas_nfe):
    """(label, kind, solver, nfe): the built-ins at every NFE, PAS rows at pas_nfe."""
    out = [(f"{name} {nfe}", "builtin", name, nfe) for nfe in nfes for name in builtins]
    out += [(f"{name}+PAS {nfe}", "pas", name, nfe) for nfe in pas_nfe for name in pas_solvers]
    return out


# The PAS rows of the published validation (docs/quality-bench.md), pinned: the Trainer's defaults when it ran.
STUDY_RULE, STUDY_TRAJECTORIES = "fid-safe", 12


def train_default(setup: BenchSetup, solver: str, sigmas: torch.Tensor, trajectories: int = STUDY_TRAJECTORIES,
                  **settings):
    """PAS as the validation trained it (the fid-safe rule, 12 trajectories, teacher 48 NFE) on the training
    seeds; `settings` replace fields of those SearchSettings."""
    from comfyui_pas import Denoiser, SearchSettings, TeacherSettings, train_pas

    seeds = setup.seeds("train", trajectories)
    denoiser = Denoiser(setup.guided, per_sample_args=setup.per_sample_args(seeds))
    return train_pas(denoiser, setup.noise(seeds) * sigmas[0], sigmas, solver=solver,
                     settings=SearchSettings.for_rule(STUDY_RULE, **settings),
                     teacher=TeacherSettings(nfe=TRAINER_TEACHER_NFE))


def sample_config(setup: BenchSetup, kind: str, solver: str, nfe: int, seeds=None):
    sigmas = karras(nfe)
    if kind == "builtin":
        return setup.sample(setup.builtin(solver), sigmas, seeds), {}
    coords, report = train_default(setup, solver, sigmas)
    info = {"corrected_steps": coords.steps, "model_calls": report.get("model_calls")}
    return setup.sample(setup.pas(solver, coords), sigmas, seeds), info


def noise_study(setup: BenchSetup, judge: Judge, config, sets: int) -> dict:
    """One configuration on `sets` disjoint seed sets of N (the first is the evaluation set)."""
    label, kind, solver, nfe = config
    values = []
    for k in range(sets):
        seeds = [s + k * setup.n for s in setup.seeds("eval")]
        (images, _), _ = sample_config(setup, kind, solver, nfe, seeds)
        scored = judge.score(images, labels=setup.labels(seeds).numpy() if setup.conditional else None)
        values.append(scored.values)
    metrics = [m for m in values[0] if m != "rmse"]
    return {"config": label, "sets": sets,
            "spread": {m: {"mean": float(np.mean([v[m] for v in values])), "std": float(np.std([v[m] for v in values],
                                                                                              ddof=1)),
                           "min": float(min(v[m] for v in values)), "max": float(max(v[m] for v in values))}
                       for m in metrics}}


def precision(results: dict, configs) -> dict:
    """Half-width of the paired relative difference (% of the value) for every pair of one NFE."""
    widths = {}
    for (a, _, _, nfe_a), (b, _, _, nfe_b) in itertools.combinations(configs, 2):
        if nfe_a != nfe_b:
            continue
        for metric in metrics_of(results[a]):
            rel = Judge.relative(results[a], results[b], metric)
            widths.setdefault(metric, []).append(50 * (rel.high - rel.low))
    return {m: {"median": float(np.median(w)), "max": float(np.max(w)), "pairs": len(w),
                "within_1pct": int(sum(x <= 1.0 for x in w))} for m, w in widths.items()}


def agreement(results: dict, fids: dict) -> dict:
    from scipy.stats import spearmanr

    names = [n for n in fids if n in results]
    out = {}
    for metric in ("fd_teacher", "fd_data", "kid_teacher", "kid_data", "rmse"):
        if all(metric in results[n].values for n in names):
            rho = spearmanr([results[n].values[metric] for n in names], [fids[n] for n in names])
            out[metric] = {"rho": float(rho.statistic), "p": float(rho.pvalue), "configs": len(names)}
    return out


def inception_scores(images_by_config: dict, fid_n: int, ref_count: int) -> tuple[dict, dict]:
    """Inception FID of each configuration's first fid_n samples against the first ref_count test images, and
    KID (x 1000) in Inception features against the first fid_n test images."""
    from train_tools.evaluation import fid
    from train_tools.evaluation.quality import KIDReference

    ref = fid.reference_stats(ref_count)
    kid_ref = KIDReference(fid.features(fashion_mnist.load_images("test")[:fid_n]))
    fids, kids = {}, {}
    for name, images in images_by_config.items():
        feats = fid.features(images[:fid_n])
        fids[name] = fid.fid_from_stats(fid.statistics(feats), ref)
        kids[name] = kid_ref.distance(kid_ref.prepare(feats))
    return fids, kids


def conditional_checks(n_sweep: int, cfgs, n_best: int, best_nfe: int) -> dict:
    """The conditional model's own quality: class accuracy of Heun samples over a CFG sweep (n_sweep seeds,
    the bench's teacher NFE), at the best CFG with a best_nfe-NFE Heun (n_best seeds); and with the empty
    prompt, its FD to the test images next to the unconditional model's (the bench's teacher, same seeds)."""
    from train_tools.evaluation import classifier

    out = {"sweep": {}, "n_sweep": n_sweep}
    for cfg in cfgs:
        setup = BenchSetup.create("cond", cfg, n_sweep)
        seeds = setup.seeds("eval")
        images = fashion_mnist.to_uint8(setup.run(setup.heun, karras(18), seeds))
        out["sweep"][cfg] = float((classifier.predict(images) == setup.labels(seeds).numpy()).mean())
    best = max(out["sweep"], key=out["sweep"].get)
    setup = BenchSetup.create("cond", best, n_best)
    seeds = setup.seeds("eval")
    images = fashion_mnist.to_uint8(setup.run(setup.heun, karras((best_nfe + 1) // 2), seeds))
    out["best"] = {"cfg": best, "nfe": best_nfe, "n": n_best,
                   "acc": float((classifier.predict(images) == setup.labels(seeds).numpy()).mean())}
    from train_tools.bench_setup import data_features
    from train_tools.evaluation.quality import FrechetReference

    data = FrechetReference(data_features())
    out["empty_prompt_fd_data"] = {}
    for name, empty in (("cond", True), ("uncond", False)):
        setup = BenchSetup.create(name, 1.0, 1000, empty_prompt=empty)
        feats = classifier.features(fashion_mnist.to_uint8(setup.teacher_finals("eval")))
        out["empty_prompt_fd_data"][name] = data.distance(feats)
    return out


def run(args) -> dict:
    setup = BenchSetup.create(args.model, args.cfg, args.n, args.empty_prompt)
    started = time.perf_counter()
    judge = setup.judge()
    log = {"setup": setup.label(), "n": args.n, "references_s": time.perf_counter() - started}
    print(f"{setup.label()}: references {log['references_s']:.0f} s", flush=True)
    results, images_by_config, info = {}, {}, {}
    train_images = fashion_mnist.load_images("train")[:args.n]
    results["data (train images)"] = judge.score(train_images, labels=fashion_mnist.load_labels("train")[:args.n]
                                                 if setup.conditional else None)
    teacher = setup.teacher_finals("eval")
    images_by_config["teacher"] = fashion_mnist.to_uint8(teacher)
    results["teacher"] = judge.score(images_by_config["teacher"], teacher)
    configs = configurations(args.nfe, args.builtins, args.pas, args.pas_nfe)
    for config in configs:
        t0 = time.perf_counter()
        (images, finals), info[config[0]] = sample_config(setup, *config[1:])
        images_by_config[config[0]] = images
        results[config[0]] = judge.score(images, finals)
        info[config[0]]["seconds"] = time.perf_counter() - t0
        print(f"  {config[0]}: {info[config[0]]['seconds']:.0f} s", flush=True)
    study = {"log": log, "configs": info, "precision": precision(results, configs),
             "values": {name: s.values for name, s in results.items()},
             "intervals": {name: {m: Judge.interval(s, m).as_dict() for m in s.boots} for name, s in results.items()}}
    if args.noise_sets > 1:
        config = next(c for c in configs if c[0] == args.noise_config)
        study["noise"] = noise_study(setup, judge, config, args.noise_sets)
    if args.fid_n:
        t0 = time.perf_counter()
        fids, kids = inception_scores(images_by_config, args.fid_n, args.fid_ref)
        study["fid"] = {"n": args.fid_n, "ref": args.fid_ref, "values": fids, "kid_inception": kids,
                        "seconds": time.perf_counter() - t0}
        study["agreement"] = agreement(results, {k: v for k, v in fids.items() if k != "teacher"})
    study["total_s"] = time.perf_counter() - started
    study["table"] = scored_table(results)
    return study


def study_markdown(study: dict) -> str:
    parts = [f"## {study['log']['setup']}, N = {study['log']['n']}", "", study["table"], ""]
    prec = study["precision"]
    parts += ["Paired relative differences between configurations of one NFE: half-width of the 95% interval "
              "(% of the value).", "",
              markdown_table(["metric", "median", "max", "pairs within 1%"],
                             [[m, f"{v['median']:.2f}", f"{v['max']:.2f}", f"{v['within_1pct']}/{v['pairs']}"]
                              for m, v in prec.items()]), ""]
    if "noise" in study:
        noise = study["noise"]
        parts += [f"Noise: `{noise['config']}` on {noise['sets']} disjoint seed sets of N.", "",
                  markdown_table(["metric", "mean", "std", "min", "max"],
                                 [[m, *(f"{v[k]:.4g}" for k in ("mean", "std", "min", "max"))]
                                  for m, v in noise["spread"].items()]), ""]
    if "fid" in study:
        parts += [f"Inception FID of the first {study['fid']['n']} samples against {study['fid']['ref']} test images "
                  f"({study['fid']['seconds']:.0f} s), and KID x1000 in Inception features against as many test "
                  "images:", "",
                  markdown_table(["configuration", "Inception FID", "Inception KID"],
                                 [[k, f"{v:.2f}", f"{study['fid']['kid_inception'][k]:.2f}"]
                                  for k, v in study["fid"]["values"].items()], "lrr"),
                  "", "Spearman's rho against Inception FID over the configurations:", "",
                  markdown_table(["metric", "rho", "p", "configs"],
                                 [[m, f"{v['rho']:.3f}", f"{v['p']:.2g}", v["configs"]]
                                  for m, v in study["agreement"].items()]), ""]
    parts.append(f"Total {study['total_s'] / 60:.1f} min.")
    return "\n".join(parts)


def main(argv=None):
    p = bench_parser(__doc__)
    p.add_argument("--empty-prompt", action="store_true")
    p.add_argument("--nfe", type=int, nargs="+", default=[4, 6, 8])
    p.add_argument("--builtins", nargs="+", default=list(BUILTINS))
    p.add_argument("--pas", nargs="*", default=["deis", "dpmpp_2m"], help="PAS rows (Trainer defaults)")
    p.add_argument("--pas-nfe", type=int, nargs="*", default=[6])
    p.add_argument("--noise-config", default="deis 6")
    p.add_argument("--noise-sets", type=int, default=4)
    p.add_argument("--fid-n", type=int, default=500, help="samples per configuration scored by Inception (0: none)")
    p.add_argument("--fid-ref", type=int, default=1000, help="test images in the Inception reference")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--conditional-checks", action="store_true",
                   help="only the conditional model's class accuracy over CFG and its empty-prompt FD")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.conditional_checks:
        checks = conditional_checks(200, (1.0, 2.0, 3.0, 4.0, 5.0), 300, 101)
        out = args.out or Path("out/quality/conditional_checks.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(checks, indent=1))
        print(json.dumps(checks, indent=1))
        return
    study = run(args)
    out = args.out or Path("out/quality") / f"{args.model}_cfg{args.cfg:g}{'_empty' if args.empty_prompt else ''}"
    write_results(out, "study", {**study, "args": vars(args)}, study_markdown(study))


if __name__ == "__main__":
    main()
