"""Inception FD of a reproduction's headline rows, with paired intervals: does it agree with the bench?

    python -m train_tools.studies.inception_check --run out/reproduce/full_cond_cfg4 --nfe 4 5 6
    python -m train_tools.studies.inception_check --case cond:4:deis:4:9 --case uncond:1:deis:4:3 --n 500

With --run: for each NFE, the best PAS row and the best built-in that `make reproduce` chose (results.json,
extra.bench.best_vs_builtin) sample the run's evaluation seeds again, on the run's grid and with its saved
coordinates. Both are scored on the quality bench against the teacher's samples on other seeds (the bench's
cached Heun 35 reference), in the classifier's features and in pytorch-fid's Inception features, each with
a paired 95% interval. Prints a table; writes <run>/inception_check_nfe<NFEs>.md.

With --case MODEL:CFG:SOLVER:NFE:RHO[:BUILTIN@RHO] (repeatable): SOLVER+PAS, trained as the best-row study
trains it (rule `auto` for that solver, CFG and NFE; 48 training trajectories, a 48-NFE Heun teacher), against
the same solver on ComfyUI's karras grid with that rho, and against BUILTIN on its own rho if given, all on the
first --n evaluation seeds: FD to the teacher's samples and to the data in the classifier's features, RMSE,
class accuracy (conditional), the share of seeds whose sample shows the class of the teacher's sample on that
seed, and Inception FD to the teacher's samples; the teacher's own samples on the same
seeds head each setting (the floor). Writes --out, and with --sheet K a PNG per case of its first K seeds.
--second-classifier WEIGHTS adds FD to the teacher's samples and to the data, and the teacher's class, in another
classifier's features
(one trained with another seed: does the classifier's verdict depend on the network's own training noise?).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from comfyui_pas import PASCoordinates, edm_sigmas
from train_tools.bench_setup import BenchSetup, karras
from train_tools.data.seeds import EVAL_SEED_START
from train_tools.reproduction.reproduce_report import (
    LEARNED,
    builtin_name,
    coords_path,
    coords_tag,
    split_method,
)
from train_tools.studies.rule_study import RuleTrainer, pct
from train_tools.tables import markdown_table


def row_sampler(setup: BenchSetup, run: Path, rows: list[dict], method: str, nfe: int):
    """(sampler, sigmas) of a reproduction row: ComfyUI's built-in, or our solver with the run's coordinates."""
    solver, corrected, kind = split_method(method)
    own = next(r for r in rows if r["nfe"] == nfe and r["method"] == method)
    if "sigmas" in own:  # a built-in on a best-row grid, or an uncorrected learned row
        sigmas = torch.tensor(own["sigmas"], dtype=torch.float32)
    elif kind == LEARNED:  # the uncorrected learned row records the grid
        grid = next(r["sigmas"] for r in rows if r["nfe"] == nfe and "sigmas" in r and split_method(r["method"])[0] == solver)
        sigmas = torch.tensor(grid, dtype=torch.float32)
    else:
        sigmas = edm_sigmas(nfe, setup.guided.sigma_min, setup.guided.sigma_max).float()
    if not corrected:
        return setup.builtin(builtin_name(solver)), sigmas
    return setup.pas(solver, PASCoordinates.load(coords_path(run, solver, coords_tag(nfe, kind)))), sigmas


def parse_case(text: str) -> tuple:
    """'MODEL:CFG:SOLVER:NFE:RHO[:BUILTIN@RHO]' -> (model, cfg, solver, nfe, rho, (builtin, rho) or None)."""
    parts = text.split(":")
    if len(parts) not in (5, 6) or (len(parts) == 6 and parts[5].count("@") != 1):
        raise argparse.ArgumentTypeError(f"a case is MODEL:CFG:SOLVER:NFE:RHO[:BUILTIN@RHO], got {text!r}")
    model, cfg, solver, nfe, rho = parts[:5]
    against = None
    if len(parts) == 6:
        name, other_rho = parts[5].split("@")
        against = (name, float(other_rho))
    return model, float(cfg), solver, int(nfe), float(rho), against


CASE_METRICS = (("fd_teacher", "FD teacher"), ("fd_data", "FD data"), ("rmse", "RMSE"), ("acc", "class acc"),
                ("agree", "teacher's class"), ("fid", "Inception FD teacher"))
SECOND = "second_"  # the prefix of the second classifier's metrics
SECOND_METRICS = ((SECOND + "fd_teacher", "FD teacher (second classifier)"),
                  (SECOND + "fd_data", "FD data (second classifier)"),
                  (SECOND + "agree", "teacher's class (second classifier)"))


def comparison_row(label: list, base, corrected, metrics=CASE_METRICS) -> list:
    """label, then per metric 'base -> corrected: change % [interval]' ('-' where not scored)."""
    from train_tools.evaluation.quality import Judge

    row = list(label)
    for metric, _ in metrics:
        if metric in corrected.values:
            row.append(f"{base.values[metric]:.3g} -> {corrected.values[metric]:.3g}: "
                       f"{pct(Judge.relative(corrected, base, metric).as_dict())}")
        else:
            row.append("-")
    return row


def both_features(judge, images, finals, second=None):
    """uint8 images (and their finals, for RMSE) scored in the classifier's and in Inception's features, and
    with `second` (a Judge in another classifier's features) its FDs under SECOND-prefixed names."""
    from train_tools.evaluation import fid

    scored = judge.score(images, finals, inception_feats=fid.features(images))
    if second is not None:
        other = second.score(images, finals, labels=None)
        for metric, _ in SECOND_METRICS:
            plain = metric.removeprefix(SECOND)
            scored.values[metric], scored.boots[metric] = other.values[plain], other.boots[plain]
    return scored


def floor_row(setup: BenchSetup, judge, second=None, metrics=CASE_METRICS) -> tuple[list, np.ndarray]:
    """The teacher's own samples on the evaluation seeds: the least FD any sampler could show (a table row)."""
    from train_tools.data.fashion_mnist import to_uint8

    teacher = setup.teacher_finals("eval")
    images = to_uint8(teacher)
    scored = both_features(judge, images, teacher, second)
    cells = [f"{scored.values[m]:.3g}" if m in scored.values else "-" for m, _ in metrics]
    return [setup.label(), "-", "the teacher's own samples (Heun 35)", "-", *cells], images


def check_cases(cases, n: int, out: Path, sheet: int = 0, second_classifier: Path | None = None) -> None:
    """SOLVER+PAS against its solver (and a built-in) per case, in both feature spaces (the module's docstring);
    sheet > 0: also a PNG per case of its first `sheet` seeds, one row per sampler (teacher first);
    second_classifier: also FD and the teacher's class in that classifier's features."""
    from comfyui_pas.settings import TRAINER_TRAJECTORIES, default_rule
    from train_tools.data.fashion_mnist import image_grid
    from train_tools.evaluation.classifier import load_classifier

    network = load_classifier(second_classifier) if second_classifier else None
    metrics = CASE_METRICS + (SECOND_METRICS if network is not None else ())
    started, table, setups = time.perf_counter(), [], {}
    out.parent.mkdir(parents=True, exist_ok=True)
    for model, cfg, solver, nfe, rho, against in cases:
        if (model, cfg) not in setups:
            setup = BenchSetup.create(model, cfg, n=n)
            judge = setup.judge(with_inception=True)
            second = setup.judge(network=network) if network is not None else None
            floor, teacher_images = floor_row(setup, judge, second, metrics)
            table.append(floor)
            setups[model, cfg] = setup, judge, second, RuleTrainer(setup, TRAINER_TRAJECTORIES), teacher_images
        setup, judge, second, trainer, teacher_images = setups[model, cfg]
        sigmas = karras(nfe, rho)
        rule = default_rule(solver, setup.rule_cfg, steps=nfe)
        coords, _, _ = trainer.train(solver, sigmas, rule, TRAINER_TRAJECTORIES)
        samples = {"base": setup.sample(setup.builtin(solver), sigmas),
                   "pas": setup.sample(setup.pas(solver, coords), sigmas)}
        if against is not None:
            samples["other"] = setup.sample(setup.builtin(against[0]), karras(nfe, against[1]))
        scored = {key: both_features(judge, *pair, second) for key, pair in samples.items()}
        label = [setup.label(), str(nfe), f"{solver}+PAS (rho {rho:g}, {rule}, steps {coords.steps})"]
        table.append(comparison_row([*label, f"{solver} (rho {rho:g})"], scored["base"], scored["pas"], metrics))
        if against is not None:
            table.append(comparison_row([*label, f"{against[0]} (rho {against[1]:g})"], scored["other"],
                                        scored["pas"], metrics))
        print(*table[-2 if against else -1:], f"({time.perf_counter() - started:.0f} s)", sep="\n", flush=True)
        if sheet:
            rows = [teacher_images, *(samples[k][0] for k in ("other", "base", "pas") if k in samples)]
            stem = f"{model}_cfg{cfg:g}_{solver}_nfe{nfe}_rho{rho:g}"
            image_grid(np.concatenate([r[:sheet] for r in rows]), len(rows), sheet).save(out.parent / f"{stem}.png")
    header = ["setting", "NFE", "PAS row", "against",
              *[f"{name}: against -> PAS row, change %" for _, name in metrics]]
    other = f"; second classifier: {second_classifier}" if network is not None else ""
    text = (f"{n} evaluation seeds per case; PAS trained as in the best-row study ({TRAINER_TRAJECTORIES} training "
            f"trajectories, rule `auto`); references: the teacher's samples on other seeds (Heun 35) and the "
            f"10,000 test images{other}.\n\n" + markdown_table(header, table))
    out.write_text(text + "\n")
    print(text)


def main(argv=None):
    from train_tools.data.fashion_mnist import to_uint8
    from train_tools.evaluation import classifier, fid
    from train_tools.evaluation.quality import Judge

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="a finished reproduction's folder (results.json, coords/)")
    source.add_argument("--case", type=parse_case, action="append",
                        help="MODEL:CFG:SOLVER:NFE:RHO[:BUILTIN@RHO] (repeatable)")
    parser.add_argument("--nfe", type=int, nargs="+", default=[4, 5, 6])
    parser.add_argument("--n", type=int, default=500, help="evaluation seeds per case (with --case)")
    parser.add_argument("--out", default="out/inception_check/cases.md", help="the table (with --case)")
    parser.add_argument("--sheet", type=int, default=0,
                        help="with --case: also save each case's first SHEET seeds as a PNG beside --out "
                             "(rows: the teacher, the built-in, the solver, solver+PAS)")
    parser.add_argument("--second-classifier", type=Path, default=None,
                        help="with --case: also FD and the teacher's class in this classifier's features (`python -m "
                             "train_tools.evaluation.classifier --seed 1 --out WEIGHTS` trains one)")
    args = parser.parse_args(argv)
    if args.second_classifier and not args.case:
        parser.error("--second-classifier needs --case")
    torch.set_num_threads(1)
    if args.case:
        check_cases(args.case, args.n, Path(args.out), args.sheet, args.second_classifier)
        return
    run = Path(args.run)
    saved = json.loads((run / "results.json").read_text())
    options, rows = saved["args"], saved["rows"]
    if options["eval_seed_start"] != EVAL_SEED_START:
        raise SystemExit(f"the bench's evaluation seeds start at {EVAL_SEED_START}; this run used other seeds")
    setup = BenchSetup.create(options["model"], options["cfg"], options["eval"])
    started = time.perf_counter()
    reference = to_uint8(setup.teacher_finals("reference"))
    judge = Judge(setup.n, {"teacher": classifier.features(reference)}, setup.teacher_finals("eval"),
                  inception_reference=fid.features(reference))
    table = []
    for nfe in args.nfe:
        best = saved["extra"]["bench"]["best_vs_builtin"][str(nfe)]
        scored = {}
        for method in (best["builtin"], best["pas"]):
            sampler, sigmas = row_sampler(setup, run, rows, method, nfe)
            images, finals = setup.sample(sampler, sigmas)
            scored[method] = judge.score(images, finals, inception_feats=fid.features(images))
        a, b = scored[best["pas"]], scored[best["builtin"]]
        table.append([str(nfe), best["builtin"], best["pas"], f"{b.values['fd_teacher']:.3g} -> {a.values['fd_teacher']:.3g}",
                      pct(Judge.relative(a, b, "fd_teacher").as_dict()),
                      f"{b.values['fid']:.3g} -> {a.values['fid']:.3g}", pct(Judge.relative(a, b, "fid").as_dict())])
        print(table[-1], f"({time.perf_counter() - started:.0f} s)", flush=True)
    header = ["NFE", "best built-in", "best PAS row", "FD teacher (classifier)", "change %",
              "Inception FD to the teacher's samples", "change %"]
    text = (f"{setup.label()}, {setup.n} seeds; references: the teacher's samples on other seeds (Heun 35).\n\n"
            + markdown_table(header, table))
    (run / f"inception_check_nfe{'-'.join(map(str, args.nfe))}.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
