"""Which grid the PAS Trainer's `grid: learned` should pick, judged on image quality with paired intervals.

    python -m train_tools.studies.schedule_choice --model cond --cfg 4 --nfe 4 5 6

Per NFE, one candidate teacher on the training seeds exactly as learn_and_train builds it (48 candidates
joined with the EDM baselines, ending in 0 as ComfyUI's grids). The candidate grids: the GITS programme on
plain local costs ("local", today's), the programme on costs weighted by the share of each error that reaches
the final sample ("final", schedule.final_share), and EDM rho 3, 5, 7, 9. Each solver runs plain on every
grid over the evaluation seeds; the end-to-end choice (least final MSE on the training trajectories) is made
twice, among {local, rho grids} (today's) and among {final, rho grids}. Verdicts: FD to the teacher's
samples of each choice against today's and against rho 7 (ComfyUI's karras), paired 95% intervals.

Writes out/schedule_choice/<setting>/schedule_choice.json and .md.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from comfyui_pas import Denoiser
from comfyui_pas.schedule import (
    CandidateTeacher,
    cheapest_path,
    end_to_end_error,
    local_costs,
    schedule_grids,
)
from comfyui_pas.settings import TRAINER_TRAJECTORIES, ScheduleSettings
from comfyui_pas.solvers import solver_options
from train_tools.bench_setup import BenchSetup, bench_parser
from train_tools.evaluation.quality import Judge
from train_tools.tables import command_line, markdown_table, write_json, write_results

RHO_GRIDS = ("edm rho 3", "edm rho 5", "edm rho 7", "edm rho 9")
CHOICES = {"today": ("local", *RHO_GRIDS), "final-weighted": ("final", *RHO_GRIDS)}


def candidate_grids(setup: BenchSetup, nfe: int, trajectories: int):
    """(grids by name, training start points, denoiser, the candidate teacher) for one NFE."""
    model = setup.guided
    settings = ScheduleSettings(objective="end_to_end", sigma_min=float(model.sigma_min),
                                sigma_max=float(model.sigma_max), append_zero=True)
    grid, baselines = schedule_grids(settings, nfe, None)
    seeds = setup.seeds("train", trajectories)
    denoiser = Denoiser(model, per_sample_args=setup.per_sample_args(seeds))
    x = setup.noise(seeds) * float(model.sigma_max)
    with torch.no_grad():
        teacher = CandidateTeacher.run(denoiser, x, grid, settings.teacher_substeps)
    grids = {"local": grid[cheapest_path(local_costs(teacher), nfe)],
             "final": grid[cheapest_path(local_costs(teacher, "final"), nfe)], **baselines}
    return {name: g.float() for name, g in grids.items()}, x, denoiser, teacher


def study(setup: BenchSetup, nfes, solvers, trajectories: int, save=lambda rows: None) -> list[dict]:
    """The rows; save(rows) after each one (a stopped run keeps what it measured)."""
    judge = setup.judge()
    rows = []
    for nfe in nfes:
        grids, x, denoiser, teacher = candidate_grids(setup, nfe, trajectories)
        for solver in solvers:
            options = solver_options(solver)
            with torch.no_grad():
                errors = {name: end_to_end_error(denoiser, x, g.double(), solver, options, teacher.states[-1])
                          for name, g in grids.items()}
            scored = {}
            for name, g in grids.items():
                images, finals = setup.sample(setup.pas(solver), g)
                scored[name] = judge.score(images, finals)
            picks = {rule: min(names, key=errors.get) for rule, names in CHOICES.items()}
            row = {"nfe": nfe, "solver": solver, "grids": {n: g.tolist() for n, g in grids.items()},
                   "train_mse": errors, "picks": picks,
                   "fd_teacher": {n: Judge.interval(s, "fd_teacher").as_dict() for n, s in scored.items()},
                   "fd_data": {n: Judge.interval(s, "fd_data").as_dict() for n, s in scored.items()},
                   "rmse": {n: s.values["rmse"] for n, s in scored.items()}}
            new, old = scored[picks["final-weighted"]], scored[picks["today"]]
            row["new_vs_today"] = {m: Judge.relative(new, old, m).as_dict() for m in ("fd_teacher", "fd_data", "rmse")}
            row["new_vs_rho7"] = {m: Judge.relative(new, scored["edm rho 7"], m).as_dict()
                                  for m in ("fd_teacher", "fd_data", "rmse")}
            row["today_vs_rho7"] = {m: Judge.relative(old, scored["edm rho 7"], m).as_dict()
                                    for m in ("fd_teacher", "fd_data", "rmse")}
            rows.append(row)
            save(rows)
            print(f"NFE {nfe} {solver}: picks {picks}; FD teacher "
                  + ", ".join(f"{n} {s.values['fd_teacher']:.2f}" for n, s in scored.items()), flush=True)
    return rows


def pct(d) -> str:
    return f"{100 * d['value']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"


def report(setup: BenchSetup, rows, command: str, seconds: float) -> str:
    names = ["local", "final", *RHO_GRIDS]
    head = ["NFE", "solver", *[f"FD {n}" for n in names], "today picks", "final-weighted picks",
            "FD teacher: new vs today %", "FD data: new vs today %", "FD teacher: new vs rho 7 %",
            "FD teacher: today vs rho 7 %"]
    body = [[r["nfe"], r["solver"], *[f"{r['fd_teacher'][n]['value']:.3g}" for n in names], r["picks"]["today"],
             r["picks"]["final-weighted"], pct(r["new_vs_today"]["fd_teacher"]), pct(r["new_vs_today"]["fd_data"]),
             pct(r["new_vs_rho7"]["fd_teacher"]), pct(r["today_vs_rho7"]["fd_teacher"])] for r in rows]
    grids = sorted({(r["nfe"], n, tuple(round(v, 3) for v in r["grids"][n])) for r in rows for n in ("local", "final")})
    lines = [f"# Schedule choice: {setup.label()}, N = {setup.n}", "", f"`{command}` ({seconds / 60:.0f} min)", "",
             "FD to the teacher's samples of each solver, plain, on each candidate grid; the end-to-end choice "
             "(least final MSE on the training trajectories) among {local, rho grids} (today) and among {final, "
             "rho grids} (new); paired relative changes with 95% intervals.", "",
             markdown_table(head, body), "", "Programme grids:", ""]
    lines += [f"* NFE {nfe}, {name}: {list(values)}" for nfe, name, values in grids]
    return "\n".join(lines)


def main(argv=None):
    parser = bench_parser(__doc__)
    parser.add_argument("--nfe", type=int, nargs="+", default=[4, 5, 6])
    parser.add_argument("--solvers", nargs="+", default=["euler", "ipndm", "deis", "dpmpp_2m"])
    parser.add_argument("--trajectories", type=int, default=TRAINER_TRAJECTORIES)
    parser.add_argument("--out", type=Path, default=Path("out/schedule_choice"))
    args = parser.parse_args(argv)
    setup = BenchSetup.create(args.model, args.cfg, args.n)
    started = time.perf_counter()
    command = command_line("train_tools.studies.schedule_choice", argv)
    out = args.out / (setup.name if setup.name == "uncond" else f"{setup.name}_cfg{setup.cfg:g}")

    def save(rows, partial=True):
        write_json(out / "schedule_choice.json", {"rows": rows, "n": setup.n, "command": command, "partial": partial})

    rows = study(setup, args.nfe, args.solvers, args.trajectories, save)
    save(rows, partial=False)
    write_results(out, "schedule_choice", {"rows": rows, "n": setup.n, "command": command},
                  report(setup, rows, command, time.perf_counter() - started))


if __name__ == "__main__":
    main()
