"""Which steps PAS should correct, judged on image quality: acceptance rules compared on the quality bench.

    python -m train_tools.studies.rule_study --model cond --cfg 4 --solvers deis dpmpp_2m --nfe 4 5 6

A rule is `name@trajectories` (paper@48); all rules share one Heun teacher of TRAINER_TEACHER_NFE per grid
on the training seeds, and sample the evaluation seeds on ComfyUI's karras grid; each PAS row gets the paired difference to ComfyUI's
own solver on the same seeds and grid (FD to the teacher's samples, FD to the data, RMSE), 95% intervals, and
each rule after the first also its paired difference to the first rule's row.
Writes out/rule_study/<model>_cfg<w>/rules.json and rules.md.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from comfyui_pas.acceptance import spread
from comfyui_pas.settings import ACCEPTANCE_RULES, TRAINER_TEACHER_NFE, TRAINER_TRAJECTORIES, default_rule
from train_tools.bench_setup import BenchSetup, add_output_options, bench_parser, karras, write_combined
from train_tools.evaluation.quality import Judge, verdict
from train_tools.tables import markdown_table, write_json, write_results

# name -> the SearchSettings fields of a rule: the library's named rules and two study-only variants.
RULES = {
    **ACCEPTANCE_RULES,
    "paper, last step plain": dict(guard="none", min_held_out_gain=0.0, correct_last_step=False),
    "validation, any gain": dict(guard="validation", min_held_out_gain=0.0, correct_last_step=False),
}
METRICS = ("fd_teacher", "fd_data", "rmse")


def parse_rule(spec: str, trajectories: int) -> tuple[str, int]:
    """'paper@48' -> ('paper', 48); a rule without '@' trains on `trajectories`."""
    name, _, count = spec.partition("@")
    if name not in RULES:
        raise ValueError(f"unknown rule {name!r}; rules: {', '.join(RULES)}")
    return name, int(count) if count else trajectories


class RuleTrainer:
    """PAS on the training seeds with one Heun teacher (TRAINER_TEACHER_NFE) per grid, shared by every rule
    and solver on that grid; a rule on T trajectories trains on the first T seeds and their teacher states."""

    def __init__(self, setup: BenchSetup, most: int):
        self.setup, self.seeds = setup, setup.seeds("train", most)
        self.x = setup.noise(self.seeds)
        self.teachers = {}  # grid values -> (teacher states, model calls per trajectory)

    def denoiser(self, count: int):
        from comfyui_pas import Denoiser

        return Denoiser(self.setup.guided, per_sample_args=self.setup.per_sample_args(self.seeds[:count]))

    def train(self, solver: str, sigmas: torch.Tensor, rule: str, count: int):
        from comfyui_pas import SearchSettings, train_pas
        from comfyui_pas.search import teacher_targets

        x, key = self.x * sigmas[0], tuple(sigmas.tolist())
        if key not in self.teachers:
            states, info = teacher_targets(self.denoiser(len(self.seeds)), x, [sigmas], TRAINER_TEACHER_NFE, None)
            self.teachers[key] = states[0], info["nfe"]
        states, teacher_nfe = self.teachers[key]
        coords, report = train_pas(self.denoiser(count), x[:count], sigmas, solver=solver,
                                   settings=SearchSettings(**RULES[rule]), teacher=states[:, :count])
        return coords, report, count * teacher_nfe + report["model_calls"]


def contrast(finals: torch.Tensor) -> float:
    """Mean per-sample pixel standard deviation (the held-out guards' contrast)."""
    return float(spread(finals).mean())


def study(setup: BenchSetup, judge: Judge, solvers, nfes, rules, trainer: RuleTrainer, saved=None) -> list[dict]:
    """Every rule against ComfyUI's solver per NFE and solver; saved(rows), if given, after every PAS row."""
    rows = []
    for nfe in nfes:
        sigmas = karras(nfe)
        for solver in solvers:
            t0 = time.perf_counter()
            images, finals = setup.sample(setup.builtin(solver), sigmas)
            base = judge.score(images, finals)
            rows.append({"nfe": nfe, "solver": solver, "rule": "(ComfyUI, uncorrected)", "steps": [],
                         "values": {m: base.values[m] for m in METRICS}, "spread": contrast(finals),
                         "seconds": time.perf_counter() - t0})
            first = None  # the first rule's scores: each later rule is also compared with it, paired
            for rule, count in rules:
                t0 = time.perf_counter()
                coords, report, calls = trainer.train(solver, sigmas, rule, count)
                images, finals = setup.sample(setup.pas(solver, coords), sigmas)
                scored = judge.score(images, finals)
                rows.append({"nfe": nfe, "solver": solver, "rule": f"{rule}@{count}", "steps": coords.steps,
                             "model_calls": calls, "spread": contrast(finals),
                             "values": {m: scored.values[m] for m in METRICS},
                             "vs_base": {m: Judge.relative(scored, base, m).as_dict() for m in METRICS},
                             "seconds": time.perf_counter() - t0})
                if first is None:
                    first = (f"{rule}@{count}", scored)
                else:
                    rows[-1]["vs_first_rule"] = {"rule": first[0], **{m: Judge.relative(scored, first[1], m).as_dict()
                                                                      for m in METRICS}}
                print(f"  NFE {nfe} {solver} {rule}@{count}: steps {coords.steps}, FD teacher "
                      f"{100 * rows[-1]['vs_base']['fd_teacher']['value']:+.1f}% ({rows[-1]['seconds']:.0f} s)",
                      flush=True)
                if saved:
                    saved(rows)
    return rows


def pct(d) -> str:
    """A relative change with its interval, in percent."""
    return f"{100 * d['value']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"


def rules_markdown(rows, label, n) -> str:
    against = any("vs_first_rule" in r for r in rows)  # columns only when a run compared rules with each other
    body = []
    for r in rows:
        vs, first = r.get("vs_base"), r.get("vs_first_rule")
        body.append([r["nfe"], r["solver"], r["rule"], r["steps"] or "-", f"{r['values']['fd_teacher']:.3g}",
                     pct(vs["fd_teacher"]) if vs else "", pct(vs["fd_data"]) if vs else "",
                     pct(vs["rmse"]) if vs else "", f"{r['spread']:.3f}" if "spread" in r else "",
                     f"{r['model_calls']:,}" if r.get("model_calls") else ""]
                    + ([f"{first['rule']}: {pct(first['fd_teacher'])}" if first else "",
                        pct(first["fd_data"]) if first else "", pct(first["rmse"]) if first else ""]
                       if against else []))
    head = ["NFE", "solver", "rule", "corrected steps", "FD teacher", "FD teacher vs base %", "FD data vs base %",
            "RMSE vs base %", "contrast", "model calls"]
    if against:
        head += ["FD teacher vs the first rule %", "FD data vs the first rule %", "RMSE vs the first rule %"]
    return f"## {label}, N = {n}\n\n" + markdown_table(head, body, "rllrrrrrrr" + "lrr" * against)



def verdict_markdown(results: dict[str, list[dict]]) -> str:
    """Per rule, how its rows fare in each setting (label -> rows): counts of better / level / plain / worse,
    and the worse rows named."""
    rules = list(dict.fromkeys(r["rule"] for rows in results.values() for r in rows if "vs_base" in r))
    body = []
    for rule in rules:
        for label, rows in results.items():
            mine = [r for r in rows if r["rule"] == rule]
            if not mine:
                continue
            kinds = [verdict(r) for r in mine]
            worse = [f"{r['solver']} {r['nfe']}" for r, k in zip(mine, kinds, strict=True) if k == "worse"]
            body.append([rule, label] + [kinds.count(k) for k in ("better", "level", "plain", "worse")]
                        + [", ".join(worse) or "-"])
    head = ["rule", "setting", "better", "level", "plain", "worse", "worse rows (solver NFE)"]
    return markdown_table(head, body, "llrrrrl")


def auto_rows(rows, cfg, trajectories) -> list[dict]:
    """The rows of the rule `auto` picks (settings.default_rule) on `trajectories`, renamed auto@T."""
    picked = []
    for r in rows:
        if r["rule"] == f"{default_rule(r['solver'], cfg, steps=r['nfe'])}@{trajectories}":
            picked.append(dict(r, rule=f"auto@{trajectories}"))
    return picked


def combine(folders, trajectories: int = TRAINER_TRAJECTORIES) -> str:
    """One verdict table over finished runs (their rules.json), with the rows `auto` picks, then each
    setting's table."""
    results, tables, guidance = {}, [], {}
    for folder in folders:
        data = json.loads((Path(folder) / "rules.json").read_text())
        args = data["args"]
        label = data.get("label") or ("unconditional model" if args["model"] == "uncond"
                                      else f"conditional model, CFG {args['cfg']:g}")
        results.setdefault(label, []).extend(data["rows"])
        guidance[label] = None if args["model"] == "uncond" else float(args["cfg"])
    for label, rows in results.items():
        rows.extend(auto_rows(rows, guidance[label], trajectories))
    for label, rows in results.items():
        tables.append(rules_markdown(rows, label, data["args"]["n"]))
    return "## Verdicts: FD to the teacher against the same solver uncorrected\n\n" + verdict_markdown(results) + \
        "\n\n" + "\n\n".join(tables)


def main(argv=None):
    p = bench_parser(__doc__)
    p.add_argument("--solvers", nargs="+", default=["deis", "dpmpp_2m"])
    p.add_argument("--nfe", type=int, nargs="+", default=[4, 5, 6])
    p.add_argument("--rules", nargs="+", default=["fid-safe@12", "paper@48", "sharpness@48"],
                   help=f"rule[@trajectories], rules: {', '.join(RULES)}")
    p.add_argument("--trajectories", type=int, default=TRAINER_TRAJECTORIES,
                   help="training trajectories of a rule given without @ (default: the Trainer's)")
    add_output_options(p, "rules")
    args = p.parse_args(argv)
    if write_combined(args, "rule_study", combine):
        return
    torch.set_num_threads(1)
    started = time.perf_counter()
    rules = [parse_rule(spec, args.trajectories) for spec in args.rules]
    setup = BenchSetup.create(args.model, args.cfg, args.n)
    trainer = RuleTrainer(setup, max(count for _, count in rules))
    out = args.out or Path("out/rule_study") / f"{args.model}_cfg{args.cfg:g}"

    def saved(rows):  # a stopped run keeps its finished rows
        write_json(out / "rules.json", {"args": vars(args), "label": setup.label(), "rows": rows, "partial": True},
                   default=str)

    rows = study(setup, setup.judge(), args.solvers, args.nfe, rules, trainer, saved)
    text = rules_markdown(rows, setup.label(), args.n) + (
        f"\n\nContrast: mean per-sample pixel std; the teacher's on these seeds "
        f"{contrast(setup.teacher_finals('eval')):.3f}.") + f" Total {(time.perf_counter() - started) / 60:.1f} min."
    write_results(out, "rules", {"args": vars(args), "label": setup.label(), "rows": rows}, text)


if __name__ == "__main__":
    main()
