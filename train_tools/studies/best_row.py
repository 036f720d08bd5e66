"""PAS against every ComfyUI built-in on its best EDM grid, judged on image quality with paired intervals.

    python -m train_tools.studies.best_row --model cond --cfg 4 --nfe 4 5 6

Per NFE: every deterministic one-call-per-step ComfyUI sampler (train_tools.comfy_builtins) on the EDM grids
rho 3, 5, 7, 9 (80 -> 0.002, then 0). Each sampler's best rho is the one with the lowest FD to the teacher on
the first --pilot evaluation seeds; that grid is then sampled on all of them. PAS (the default rule, the
Trainer's trajectories and teacher) is trained for each registry solver on that solver's best grid. Two
verdicts, each on the same evaluation seeds with paired 95% intervals:

* never worse: solver+PAS against the same solver on the same grid (FD to the teacher's samples);
* best row: the best PAS row against every built-in on its best grid (FD to the teacher, and RMSE by 10%).

Writes out/best_row/cond_cfg<w>/ (or out/best_row/uncond/) best_row.json and best_row.md.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from comfyui_pas.settings import TRAINER_TRAJECTORIES, default_rule
from comfyui_pas.solvers import SOLVERS
from train_tools.bench_setup import BenchSetup, add_output_options, bench_parser, karras, write_combined
from train_tools.data.fashion_mnist import to_uint8
from train_tools.evaluation import classifier
from train_tools.evaluation.quality import Judge, beats, verdict
from train_tools.studies.rule_study import RuleTrainer, contrast, pct
from train_tools.tables import markdown_table, write_json, write_results

RHOS = (3.0, 5.0, 7.0, 9.0)
METRICS = ("fd_teacher", "fd_data", "rmse")


def builtin_names() -> list[str]:
    from train_tools.comfy_builtins import load_builtin_samplers

    functions = load_builtin_samplers()
    if not functions:
        raise RuntimeError("ComfyUI host not installed: run `make host`")
    return list(functions)


class Samples:
    """Finals of one sampler on the evaluation seeds, sampled in two parts: the pilot seeds first (to pick
    the grid), the rest only for the grid that is kept."""

    def __init__(self, setup: BenchSetup, pilot: int):
        self.setup, self.seeds = setup, setup.seeds("eval")
        self.pilot = min(pilot, len(self.seeds))

    def pilot_fd(self, sampler, sigmas, reference) -> tuple[float, torch.Tensor]:
        """FD to the teacher's samples of the pilot seeds' finals, and those finals."""
        finals = self.setup.run(sampler, sigmas, self.seeds[:self.pilot])
        return reference.distance(classifier.features(to_uint8(finals))), finals

    def complete(self, sampler, sigmas, pilot_finals: torch.Tensor | None = None):
        """(uint8 images, finals) on every evaluation seed, reusing the pilot part when given."""
        if pilot_finals is None:
            return self.setup.sample(sampler, sigmas)
        rest = self.seeds[self.pilot:]
        finals = torch.cat([pilot_finals, self.setup.run(sampler, sigmas, rest)]) if rest else pilot_finals
        return to_uint8(finals), finals


def best_grids(samples: Samples, judge: Judge, names, nfe: int) -> dict:
    """name -> (rho, pilot FDs per rho, pilot finals of that rho): each built-in's best grid at this NFE."""
    reference, chosen = judge.frechet["teacher"], {}
    for name in names:
        sampler, pilot = samples.setup.builtin(name), {}
        for rho in RHOS:
            pilot[rho] = samples.pilot_fd(sampler, karras(nfe, rho), reference)
        best = min(pilot, key=lambda rho: pilot[rho][0])
        chosen[name] = (best, {rho: fd for rho, (fd, _) in pilot.items()}, pilot[best][1])
        print(f"  NFE {nfe} {name}: pilot FD teacher by rho "
              f"{ {rho: round(fd, 2) for rho, (fd, _) in pilot.items()} } -> rho {best:g}", flush=True)
    return chosen


def change(a, b) -> dict:
    return {m: Judge.relative(a, b, m).as_dict() for m in METRICS}


def nfe_rows(setup, judge, samples, trainer, nfe, names, solvers, cfg) -> list[dict]:
    """The built-in rows (best grid each) and the PAS rows (each solver on its built-in's best grid)."""
    rows, scored = [], {}
    for name, (rho, pilot, finals) in best_grids(samples, judge, names, nfe).items():
        t0 = time.perf_counter()
        images, finals = samples.complete(setup.builtin(name), karras(nfe, rho), finals)
        scored[name] = judge.score(images, finals)
        rows.append({"nfe": nfe, "method": name, "kind": "builtin", "rho": rho, "pilot_fd_teacher": pilot,
                     "values": {m: scored[name].values[m] for m in METRICS}, "spread": contrast(finals),
                     "seconds": time.perf_counter() - t0})
    grids = {row["method"]: row["rho"] for row in rows}
    for solver in solvers:
        t0 = time.perf_counter()
        rule, sigmas = default_rule(solver, cfg, steps=nfe), karras(nfe, grids[solver])
        coords, report, calls = trainer.train(solver, sigmas, rule, TRAINER_TRAJECTORIES)
        images, finals = setup.sample(setup.pas(solver, coords), sigmas)
        mine = judge.score(images, finals)
        scored[f"{solver}+PAS"] = mine
        rows.append({"nfe": nfe, "method": f"{solver}+PAS", "kind": "pas", "solver": solver, "rho": grids[solver],
                     "rule": rule, "steps": coords.steps, "model_calls": calls, "spread": contrast(finals),
                     "values": {m: mine.values[m] for m in METRICS}, "vs_base": change(mine, scored[solver]),
                     "vs_builtins": {name: change(mine, scored[name]) for name in names},
                     "seconds": time.perf_counter() - t0})
        print(f"  NFE {nfe} {solver}+PAS ({rule}, rho {grids[solver]:g}): steps {coords.steps}, FD teacher "
              f"{100 * rows[-1]['vs_base']['fd_teacher']['value']:+.1f}% vs {solver}", flush=True)
    return rows


def best_pas(rows) -> dict:
    """The PAS row with the lowest FD to the teacher among those that correct a step (a row that corrects
    nothing is its built-in), or among all when none does."""
    pas = [r for r in rows if r["kind"] == "pas"]
    return min([r for r in pas if r["steps"]] or pas, key=lambda r: r["values"]["fd_teacher"])


def builtin_markdown(rows) -> str:
    body, best = [], {nfe: best_pas([r for r in rows if r["nfe"] == nfe]) for nfe in {r["nfe"] for r in rows}}
    for r in rows:
        if r["kind"] != "builtin":
            continue
        vs = best[r["nfe"]]["vs_builtins"][r["method"]]
        body.append([r["nfe"], r["method"], " / ".join(f"{fd:.3g}" for fd in r["pilot_fd_teacher"].values()),
                     f"{r['rho']:g}", f"{r['values']['fd_teacher']:.3g}", f"{r['values']['fd_data']:.3g}",
                     f"{r['values']['rmse']:.4f}", best[r["nfe"]]["method"], pct(vs["fd_teacher"]), pct(vs["fd_data"]),
                     pct(vs["rmse"]), "yes" if beats(vs) else "no"])
    head = ["NFE", "built-in", "pilot FD teacher, rho " + " / ".join(f"{rho:g}" for rho in RHOS), "best rho",
            "FD teacher", "FD data", "RMSE", "best PAS row", "its FD teacher vs built-in %", "FD data %", "RMSE %",
            "beaten"]
    return markdown_table(head, body, "rllrrrrlrrrl")


def pas_markdown(rows) -> str:
    body = []
    for r in rows:
        if r["kind"] != "pas":
            continue
        vs = r["vs_base"]
        body.append([r["nfe"], r["method"], f"{r['rho']:g}", r["rule"], r["steps"] or "-",
                     f"{r['values']['fd_teacher']:.3g}", pct(vs["fd_teacher"]), pct(vs["fd_data"]), pct(vs["rmse"]),
                     verdict(r), f"{r['model_calls']:,}"])
    head = ["NFE", "PAS row", "rho", "rule", "corrected steps", "FD teacher", "vs same solver, same grid: FD teacher %",
            "FD data %", "RMSE %", "verdict", "model calls"]
    return markdown_table(head, body, "rlrllrrrrlr")


def summary(rows) -> str:
    """The two targets per NFE: never worse (every PAS row), best row (beats every built-in)."""
    lines = []
    for nfe in sorted({r["nfe"] for r in rows}):
        mine = [r for r in rows if r["nfe"] == nfe]
        pas = [r for r in mine if r["kind"] == "pas"]
        bad = [r["method"] for r in pas if verdict(r) not in ("better", "plain")]
        best = best_pas(mine)
        unbeaten = [name for name, vs in best["vs_builtins"].items() if not beats(vs)]
        lines.append(f"* NFE {nfe}: never worse {'met' if not bad else 'MISSED (' + ', '.join(bad) + ')'}; "
                     f"best row {best['method']} "
                     f"{'beats every built-in' if not unbeaten else 'MISSED against ' + ', '.join(unbeaten)}")
    return "\n".join(lines)


def headline(rows, label: str) -> list[list]:
    """Per NFE: the best built-in and the best PAS row, their paired changes, and the PAS rows' verdicts."""
    body = []
    for nfe in sorted({r["nfe"] for r in rows}):
        mine = [r for r in rows if r["nfe"] == nfe]
        top = min((r for r in mine if r["kind"] == "builtin"), key=lambda r: r["values"]["fd_teacher"])
        best = best_pas(mine)
        vs = best["vs_builtins"][top["method"]]
        kinds = [verdict(r) for r in mine if r["kind"] == "pas"]
        body.append([label, nfe, f"{top['method']} (rho {top['rho']:g}): {top['values']['fd_teacher']:.3g}",
                     f"{best['method']} (rho {best['rho']:g}): {best['values']['fd_teacher']:.3g}",
                     pct(vs["fd_teacher"]), pct(vs["fd_data"]), pct(vs["rmse"]),
                     " / ".join(str(kinds.count(k)) for k in ("better", "plain", "level", "worse"))])
    return body


HEADLINE_HEAD = ["setting", "NFE", "best built-in: FD teacher", "best PAS row: FD teacher",
                 "PAS vs built-in: FD teacher %", "FD data %", "RMSE %", "PAS rows better / plain / level / worse"]


def floor_text(floor: dict | None) -> str:
    if not floor:
        return ""
    return (f"The teacher's own samples on the evaluation seeds (the floor of this N): FD teacher "
            f"{floor['fd_teacher']:.3g}, FD data {floor['fd_data']:.3g}.\n\n")


def command(args: dict) -> str:
    """The command line of a run with these arguments (every option spelled out)."""
    guidance = [] if args["model"] == "uncond" else ["--cfg", f"{args['cfg']:g}"]
    words = ["--model", args["model"], *guidance, "--n", args["n"], "--pilot", args["pilot"], "--nfe", *args["nfe"],
             "--solvers", *args["solvers"]]
    words += ["--builtins", *args["builtins"]] if args.get("builtins") else []
    return "python -m train_tools.studies.best_row " + " ".join(str(w) for w in words)


def report(data: dict) -> str:
    """One setting's Markdown from its saved results (best_row.json)."""
    rows, args = data["rows"], data["args"]
    minutes = f", {data['minutes']:.0f} min" if "minutes" in data else ""
    return (f"## {data['label']}, N = {args['n']} (pilot {args['pilot']}){minutes}\n\n"
            f"`{command(args)}`\n\n{floor_text(data.get('floor'))}{summary(rows)}\n\n"
            f"{markdown_table(HEADLINE_HEAD, headline(rows, data['label']), 'lrllrrrl')}\n\n"
            f"### Built-ins on their best grid, and the best PAS row against each\n\n{builtin_markdown(rows)}\n\n"
            f"### PAS rows against the same solver on the same grid\n\n{pas_markdown(rows)}")


def combine(folders) -> str:
    """One headline table over finished runs (folders with best_row.json), then each run's report."""
    runs = [json.loads((Path(f) / "best_row.json").read_text()) for f in folders]
    table = markdown_table(HEADLINE_HEAD, [line for d in runs for line in headline(d["rows"], d["label"])], "lrllrrrl")
    return "\n\n".join([f"## Headline: the best PAS row against the best built-in\n\n{table}"] + [report(d) for d in runs])


def main(argv=None):
    p = bench_parser(__doc__)
    p.set_defaults(n=500)
    p.add_argument("--nfe", type=int, nargs="+", default=[4, 5, 6])
    p.add_argument("--pilot", type=int, default=150, help="evaluation seeds that pick each built-in's rho")
    p.add_argument("--builtins", nargs="+", default=None, help="ComfyUI samplers (default: every one)")
    p.add_argument("--solvers", nargs="+", choices=SOLVERS, default=list(SOLVERS), help="PAS base solvers")
    add_output_options(p, "best_row")
    args = p.parse_args(argv)
    if write_combined(args, "best_row", combine):
        return
    names = args.builtins or builtin_names()
    missing = [s for s in args.solvers if s not in names]
    if missing:
        p.error(f"every PAS solver needs its built-in for the grid: add {', '.join(missing)} to --builtins")
    torch.set_num_threads(1)
    started = time.perf_counter()
    setup = BenchSetup.create(args.model, args.cfg, args.n)
    judge, samples = setup.judge(), Samples(setup, args.pilot)
    trainer = RuleTrainer(setup, TRAINER_TRAJECTORIES)
    cfg = setup.rule_cfg
    teacher = setup.teacher_finals("eval")
    floor = judge.score(to_uint8(teacher), teacher).values
    data = {"args": vars(args), "label": setup.label(),
            "floor": {m: floor[m] for m in ("fd_teacher", "fd_data")}, "rows": []}
    out = args.out or Path("out/best_row") / (f"{args.model}_cfg{args.cfg:g}" if cfg else args.model)
    for nfe in args.nfe:
        data["rows"] += nfe_rows(setup, judge, samples, trainer, nfe, names, args.solvers, cfg)
        write_json(out / "best_row.json", dict(data, partial=True), default=str)
    data["minutes"] = (time.perf_counter() - started) / 60
    write_results(out, "best_row", data, report(data))


if __name__ == "__main__":
    main()
