"""Inception FD of a reproduction's headline rows, with paired intervals: does it agree with the bench?

    python -m train_tools.studies.inception_check --run out/reproduce/full_cond_cfg4 --nfe 4 5 6

For each NFE, the best PAS row and the best built-in that `make reproduce` chose (results.json,
extra.bench.best_vs_builtin) sample the run's evaluation seeds again, on the run's grid and with its saved
coordinates. Both are scored on the quality bench against the teacher's samples on other seeds (the bench's
cached Heun 35 reference), in the classifier's features and in pytorch-fid's Inception features, each with
a paired 95% interval. Prints a table; writes <run>/inception_check_nfe<NFEs>.md.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from comfyui_pas import PASCoordinates, edm_sigmas
from train_tools.bench_setup import BenchSetup
from train_tools.data.seeds import EVAL_SEED_START
from train_tools.reproduction.reproduce_report import (
    LEARNED,
    builtin_name,
    coords_path,
    coords_tag,
    split_method,
)
from train_tools.studies.rule_study import pct
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


def main(argv=None):
    from train_tools.data.fashion_mnist import to_uint8
    from train_tools.evaluation import classifier, fid
    from train_tools.evaluation.quality import Judge

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="a finished reproduction's folder (results.json, coords/)")
    parser.add_argument("--nfe", type=int, nargs="+", default=[4, 5, 6])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
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
