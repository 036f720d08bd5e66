"""Which steps PAS should correct, judged on image quality: acceptance rules compared on the quality bench.

    python -m train_tools.studies.rule_study --model cond --cfg 4 --solvers deis dpmpp_2m --nfe 4 5 6

Every rule trains with the PAS Trainer's budget (12 trajectories, or --trajectories; teacher 48 NFE) on the training seeds and
samples the evaluation seeds on ComfyUI's karras grid; each PAS row gets the paired difference to ComfyUI's
own solver on the same seeds and grid (FD to the teacher's samples, FD to the data, RMSE), 95% intervals.
Writes out/rule_study/<model>_cfg<w>/rules.json and rules.md.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from comfyui_pas.settings import TRAINER_TRAJECTORIES
from train_tools.bench_setup import MODELS, BenchSetup, karras
from train_tools.evaluation.quality import Judge
from train_tools.studies.quality_study import train_default
from train_tools.tables import markdown_table, write_results

# name -> train_pas settings. "fid-safe" is the library default.
RULES = {
    "paper": dict(guard="none", min_held_out_gain=0.0, correct_last_step=True),
    "paper, last step plain": dict(guard="none", min_held_out_gain=0.0, correct_last_step=False),
    "fid-safe": {},
    "validation, any gain": dict(min_held_out_gain=0.0),
}
METRICS = ("fd_teacher", "fd_data", "rmse")


def study(setup: BenchSetup, judge: Judge, solvers, nfes, rules, trajectories: int) -> list[dict]:
    rows = []
    for nfe in nfes:
        sigmas = karras(nfe)
        for solver in solvers:
            t0 = time.perf_counter()
            base = judge.score(*setup.sample(setup.builtin(solver), sigmas))
            rows.append({"nfe": nfe, "solver": solver, "rule": "(ComfyUI, uncorrected)", "steps": [],
                         "values": {m: base.values[m] for m in METRICS}, "seconds": time.perf_counter() - t0})
            for rule in rules:
                t0 = time.perf_counter()
                coords, report = train_default(setup, solver, sigmas, trajectories, **RULES[rule])
                scored = judge.score(*setup.sample(setup.pas(solver, coords), sigmas))
                rows.append({"nfe": nfe, "solver": solver, "rule": rule, "steps": coords.steps,
                             "model_calls": report.get("model_calls"),
                             "values": {m: scored.values[m] for m in METRICS},
                             "vs_base": {m: Judge.relative(scored, base, m).as_dict() for m in METRICS},
                             "seconds": time.perf_counter() - t0})
                print(f"  NFE {nfe} {solver} {rule}: steps {coords.steps}, FD teacher "
                      f"{100 * rows[-1]['vs_base']['fd_teacher']['value']:+.1f}% ({rows[-1]['seconds']:.0f} s)",
                      flush=True)
    return rows


def _pct(d):
    return f"{100 * d['value']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"


def rules_markdown(rows, label, n) -> str:
    body = []
    for r in rows:
        vs = r.get("vs_base")
        body.append([r["nfe"], r["solver"], r["rule"], r["steps"] or "-", f"{r['values']['fd_teacher']:.3g}",
                     _pct(vs["fd_teacher"]) if vs else "", _pct(vs["fd_data"]) if vs else "",
                     _pct(vs["rmse"]) if vs else ""])
    head = ["NFE", "solver", "rule", "corrected steps", "FD teacher", "FD teacher vs base %", "FD data vs base %",
            "RMSE vs base %"]
    return f"## {label}, N = {n}\n\n" + markdown_table(head, body, "rllrrrrr")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=MODELS, default="cond")
    p.add_argument("--cfg", type=float, default=4.0)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--solvers", nargs="+", default=["deis", "dpmpp_2m"])
    p.add_argument("--nfe", type=int, nargs="+", default=[4, 5, 6])
    p.add_argument("--rules", nargs="+", choices=RULES, default=list(RULES))
    p.add_argument("--trajectories", type=int, default=TRAINER_TRAJECTORIES, help="training trajectories (default: the Trainer's)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    setup = BenchSetup.create(args.model, args.cfg, args.n)
    rows = study(setup, setup.judge(), args.solvers, args.nfe, args.rules, args.trajectories)
    out = args.out or Path("out/rule_study") / f"{args.model}_cfg{args.cfg:g}"
    text = rules_markdown(rows, setup.label(), args.n) + f"\n\nTotal {(time.perf_counter() - started) / 60:.1f} min."
    write_results(out, "rules", {"args": vars(args), "rows": rows}, text)


if __name__ == "__main__":
    main()
