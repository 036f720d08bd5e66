"""A/B study of PAS design choices, on the Gaussian mixture or on the bundled demo model.

    python -m train_tools.benches.ab_study --model gmm --study all --out out/ab/gmm
    python -m train_tools.benches.ab_study --model fashion --study parameterization --nfe 5 8 --out out/ab/fashion

Studies: parameterization (absolute / relative, with and without the validation guard, and the paper's
settings), trajectories (training trajectories N), teacher (teacher NFE), basis (n_basis), loss (l1 / l2),
tolerance (acceptance rule), guard (share of the trajectories the validation guard holds out), budget
(N x teacher NFE), transfer (coordinates used at another latent size), subsets (the baseline's accepted
steps at one NFE, scored one subset at a time: which step helps or hurts), teacher-error (the teacher's
own error against the reference, next to the plain solvers'), calls (end-to-end training runs of the
baseline, teacher included: the model calls train_pas reports against the formula bound).
Every study varies one knob of BASELINE (the library's defaults when the study was run) with
N = --baseline-train and teacher --baseline-teacher (n_basis --baseline-n-basis), and trains on every
--solvers entry (registry names of comfyui_pas.solvers, "name:order" for an order; default euler and
ipndm order 3, the pair of the published tables) at every --nfe.

Training seeds of repetition r are [r * 10000, r * 10000 + N); held-out seeds are [100000, 100000 + E),
so they never overlap. Each held-out sample is scored against one high-accuracy Heun reference (its final
state does not depend on the student grid). "gain" = 1 - RMSE_pas / RMSE_plain over all held-out samples;
"median change" = median_pas / median_plain - 1 of the per-sample RMSEs (a rare mode flip dominates the
RMSE of a mixture with separated modes, not the median); "worse" = share of samples PAS made worse;
"mode flips" (mixtures only) = share of samples nearest to another component than their reference.
Model calls per training run = N x teacher NFE (teacher) + the search's own calls (N x student NFE plus
the guard's roll-outs), counted. Prints Markdown tables; writes <out>/<study>.json and <out>/<study>.md.
STUDIES below lists every study (how it runs, how it renders); the models and the held-out bench live in
train_tools/benches/ab_bench.py, the summaries and tables in train_tools/benches/ab_report.py.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

from comfyui_pas.solvers import ORDER, SOLVERS, canonical_solver, solver_class, solver_options
from train_tools.benches.ab_bench import BASELINE, Bench, baseline, make_spec
from train_tools.benches.ab_report import (
    calls_markdown,
    case_name,
    study_markdown,
    subsets_markdown,
    teacher_error_markdown,
    transfer_markdown,
)
from train_tools.benches.ab_special import run_calls, run_subsets, run_teacher_error, run_transfer
from train_tools.benches.bench_gmm import EVAL_SEED_OFFSET
from train_tools.tables import command_line, write_json

# The solver pair of the published tables (docs/ab-study.md): euler and ipndm with order 3.
DEFAULT_SOLVERS = ("euler", "ipndm:3")


def parse_solver(spec):
    """'deis' -> ('deis', 3) (the registry's default order), 'ipndm:3' -> ('ipndm', 3), 'euler' -> ('euler', None):
    a registry solver and its order (None for solvers without one)."""
    name, _, order = str(spec).partition(":")
    name = canonical_solver(name)
    has_order = any(option.name == ORDER for option in solver_class(name).options)
    if order and not has_order:
        raise ValueError(f"solver {name} has no order option (got {spec!r})")
    if not has_order:
        return name, None
    return name, solver_options(name, int(order) if order else None)[ORDER]

# The baseline each study varies one knob of: the library's defaults when the study was run (docs/ab-study.md),
# fixed here so that the published tables reproduce whatever the library's defaults become.
def solver_pairs(args):
    """[(solver, order)] of --solvers (the published pair for runs recorded before the option existed)."""
    return [parse_solver(spec) for spec in (getattr(args, "solvers", None) or DEFAULT_SOLVERS)]


class Session:
    """What the studies of one invocation share: the arguments, the log, and one held-out bench of the
    model at its own size (made on first use)."""

    def __init__(self, args, log):
        self.args, self.log, self._bench, self._logged = args, log, None, set()
        self.solvers = solver_pairs(args)

    @property
    def bench(self):
        if self._bench is None:
            self._bench = Bench(make_spec(self.args.model), self.args.eval, self.args.reference_nfe)
        return self._bench

    def reference_error(self):
        """The reference's own error on the first --check-reference held-out seeds (None: not checked)."""
        count = self.args.check_reference
        error = self.bench.reference_error(count)
        if error is not None and count not in self._logged:
            self._logged.add(count)
            self.log(f"reference RMSE vs a {2 * self.args.reference_nfe}-NFE Heun on the first {count} held-out "
                     f"seeds: {error:.3g}")
        return error


# ---------------------------------------------------------------- studies that vary knobs of the baseline

def run_knobs(study, settings_of, session):
    """Every setting of one study (settings_of(args): [(label, overrides of the baseline)]) trained on the
    bench for every repetition, NFE and solver, and scored on the held-out seeds."""
    bench, args, log = session.bench, session.args, session.log
    base = baseline(args)
    settings = [(label, dict(base, **overrides)) for label, overrides in settings_of(args)
                if not args.only or any(part in label for part in args.only)]
    if not settings:
        raise ValueError(f"--only {args.only} leaves no setting of the {study} study")
    rows = []
    for rep in range(args.first_rep, args.first_rep + args.reps):
        for nfe in args.nfe:
            bench.forget_teachers()
            for teacher_nfe in sorted({s["teacher_nfe"] for _, s in settings}):
                bench.targets(rep, nfe, teacher_nfe, max(s["n_train"] for _, s in settings
                                                         if s["teacher_nfe"] == teacher_nfe))
            for solver, order in session.solvers:
                for label, setting in settings:
                    coords, report, cost = bench.train(setting, solver, order, nfe, rep)
                    row = dict(setting=label, config=setting, solver=solver, order=order, nfe=nfe, rep=rep,
                               accepted=coords.steps, parameters=coords.n_parameters, **cost,
                               **bench.score(coords, solver, order, nfe))
                    rows.append(row)
                    log(f"  rep {rep} {case_name(solver, order, nfe):9s} {label:42s} gain {100 * row['gain']:+6.1f}% "
                        f"median {100 * row['median_change']:+6.1f}% steps {coords.steps}")
    bench.forget_teachers()
    return rows


def _tolerance_rules(args):
    rules = [("relative", t) for t in (0.001, 0.01, 0.05, 0.1)] + [("absolute", t) for t in (1e-4, 1e-3)]
    return [(f"{mode} {t:g}", dict(tolerance_mode=mode, tolerance=t)) for mode, t in rules]


# study -> settings(args): [(label, overrides of the baseline)]; args.parameterizations is --parameterizations
KNOBS = {
    "parameterization": lambda args: [
        ("paper: absolute, no guard, abs. tol 1e-4",
         dict(parameterization="absolute", guard="none", tolerance_mode="absolute", tolerance=1e-4)),
        ("absolute, no guard", dict(parameterization="absolute", guard="none")),
        ("absolute, guard", dict(parameterization="absolute")),
        ("relative, no guard", dict(parameterization="relative", guard="none")),
        ("relative, guard", dict(parameterization="relative"))],
    "trajectories": lambda args: [(f"{p}, N={n}", dict(parameterization=p, n_train=n))
                                  for p in args.parameterizations for n in args.train_counts],
    "teacher": lambda args: [(f"{p}, teacher {t}", dict(parameterization=p, teacher_nfe=t))
                             for p in args.parameterizations for t in args.teacher_nfes],
    "basis": lambda args: [(f"{p}, n_basis={k}", dict(parameterization=p, n_basis=k))
                           for p in args.parameterizations for k in args.basis],
    "loss": lambda args: [(f"{p}, {loss}", dict(parameterization=p, loss=loss))
                          for p in args.parameterizations for loss in ("l1", "l2")],
    "tolerance": _tolerance_rules,
    "guard": lambda args: [(f"{p}, validation {int(100 * f)}%", dict(parameterization=p, validation_fraction=f))
                           for p in args.parameterizations for f in (0.125, 0.25, 0.5)],
    "budget": lambda args: [(f"relative, N={n}, teacher {t}", dict(parameterization="relative", n_train=n,
                                                                    teacher_nfe=t))
                            for n in args.budget_counts for t in args.budget_teachers],
}


# ---------------------------------------------------------------- the table of studies

@dataclass(frozen=True)
class Study:
    """How one study runs (session -> result rows) and renders (rows, header -> markdown, summary or None)."""

    run: Callable
    render: Callable
    checks_reference: bool = False  # its header names the reference's own error (--check-reference)
    scores: bool = True  # it scores on the held-out seeds (its header names them and the reference)


STUDIES = {
    **{name: Study(partial(run_knobs, name, settings), partial(study_markdown, name), checks_reference=True)
       for name, settings in KNOBS.items()},
    "transfer": Study(run_transfer, transfer_markdown),
    "subsets": Study(run_subsets, subsets_markdown),
    "teacher-error": Study(run_teacher_error, teacher_error_markdown),
    "calls": Study(run_calls, calls_markdown, scores=False),
}


# ---------------------------------------------------------------- CLI

MODEL_DEFAULTS = {
    "gmm": dict(nfe=[4, 5, 6, 8, 10], eval=512, reps=3, reference_nfe=400, baseline_train=256, baseline_teacher=100,
                train_counts=[8, 16, 32, 64, 256, 1024], teacher_nfes=[12, 24, 48, 100], basis=[1, 2, 3, 4, 5],
                budget_counts=[16, 32, 64, 256], budget_teachers=[24, 48, 100],
                transfer_train=[64, 256], transfer_eval=[64, 256]),
    "fashion": dict(nfe=[5, 8], eval=128, reps=1, reference_nfe=200, baseline_train=128, baseline_teacher=100,
                    train_counts=[8, 16, 32, 64, 128], teacher_nfes=[12, 24, 48, 100], basis=[2, 3, 4, 5],
                    budget_counts=[16, 32, 128], budget_teachers=[24, 100],
                    transfer_train=[16, 24, 32], transfer_eval=[32]),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODEL_DEFAULTS), default="gmm")
    parser.add_argument("--study", nargs="+", choices=(*STUDIES, "all"), default=["parameterization"])
    parser.add_argument("--out", default=None, help="folder for <study>.json and <study>.md (default out/ab/<model>)")
    parser.add_argument("--nfe", type=int, nargs="+", help="student NFEs every study trains and scores at")
    parser.add_argument("--eval", type=int, help="held-out seeds (from 100000)")
    parser.add_argument("--reps", type=int, help="repetitions with disjoint training seeds")
    parser.add_argument("--first-rep", type=int, default=0, help="index of the first repetition (its seed block)")
    parser.add_argument("--reference-nfe", type=int, help="Heun calls of the reference that scores held-out samples")
    parser.add_argument("--baseline-train", type=int, help="training trajectories of the baseline (incl. the guard's 25%%)")
    parser.add_argument("--baseline-teacher", type=int, help="teacher NFE of the baseline")
    parser.add_argument("--baseline-n-basis", type=int, help=f"n_basis of the baseline (default {BASELINE.n_basis})")
    parser.add_argument("--solvers", nargs="+", default=list(DEFAULT_SOLVERS),
                        help=f"base solvers to train on: {', '.join(SOLVERS)}, 'name:order' for an order "
                             "(default: euler ipndm:3)")
    parser.add_argument("--train-counts", type=int, nargs="+", help="trajectories N of the trajectories study")
    parser.add_argument("--teacher-nfes", type=int, nargs="+", help="teacher NFEs of the teacher and teacher-error studies")
    parser.add_argument("--basis", type=int, nargs="+", help="n_basis values of the basis study")
    parser.add_argument("--budget-counts", type=int, nargs="+", help="trajectories N of the budget study")
    parser.add_argument("--budget-teachers", type=int, nargs="+", help="teacher NFEs of the budget study")
    parser.add_argument("--transfer-train", type=int, nargs="+", help="sizes trained at (gmm: dimension, fashion: side)")
    parser.add_argument("--transfer-eval", type=int, nargs="+", help="sizes scored at")
    parser.add_argument("--subset-nfe", type=int, default=10, help="NFE of the subsets study")
    parser.add_argument("--parameterizations", nargs="+", choices=("absolute", "relative"),
                        default=["absolute", "relative"])
    parser.add_argument("--check-reference", type=int, default=32,
                        help="held-out seeds on which the reference is compared with one of twice its NFE (0: skip)")
    parser.add_argument("--only", nargs="+", help="keep only the settings whose label contains one of these")
    parser.add_argument("--from-json", action="store_true", help="only rebuild the Markdown from <out>/<study>.json")
    parser.add_argument("--merge", nargs="+", metavar="FOLDER",
                        help="run nothing: one table per --study from these folders' JSON (rows joined, --only kept)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    for name, value in MODEL_DEFAULTS[args.model].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.out is None:
        args.out = os.path.join("out", "ab", args.model)
    if "all" in args.study:
        args.study = [name for name in STUDIES if name != "calls"]
    try:
        solver_pairs(args)
    except ValueError as exc:
        parser.error(f"--solvers: {exc}")
    return args


def make_header(args, command, reference_error=None, scores=True):
    """One paragraph naming the model, seeds, repetitions, NFEs, reference, baseline and the command."""
    if not scores:
        return (f"{args.model}: training runs only (nothing scored), repetition(s) {args.first_rep}.."
                f"{args.first_rep + args.reps - 1}, NFE {args.nfe}; baseline {baseline(args)}. Command: `{command}`")
    text = (f"{args.model}: held-out seeds {EVAL_SEED_OFFSET}..{EVAL_SEED_OFFSET + args.eval - 1}, "
            f"{args.reps} repetition(s) with disjoint training seeds"
            + (f" (from repetition {args.first_rep})" if getattr(args, "first_rep", 0) else "")
            + f", NFE {args.nfe}, reference Heun "
            f"~{args.reference_nfe} NFE; baseline {baseline(args)}. Command: `{command}`")
    if reference_error is not None:
        text += (f" Reference error (RMSE vs {2 * args.reference_nfe}-NFE Heun, first {args.check_reference} "
                 f"seeds): {reference_error:.2e}.")
    return text


def write_markdown(folder, study, markdown, rows, seconds):
    """Print <study>.md and write it, with the row count and the run time under the tables."""
    markdown += f"\n({len(rows)} result rows, {seconds:.0f} s)\n"
    print(markdown, flush=True)
    with open(os.path.join(folder, f"{study}.md"), "w") as handle:
        handle.write(markdown)


def rewrite_markdown(folder, study):
    """Rebuild <study>.md from <study>.json (tables only; nothing is re-run); None without the JSON."""
    path = os.path.join(folder, f"{study}.json")
    if not os.path.isfile(path):
        return None
    with open(path) as handle:
        data = json.load(handle)
    header = data.get("header") or make_header(argparse.Namespace(**data["args"]), data["command"])
    markdown, summary = STUDIES[study].render(data["rows"], header)
    write_markdown(folder, study, markdown, data["rows"], data["seconds"])
    return summary


def merge_runs(folders, study, out, only=None, command=""):
    """One table from the rows of several runs' <study>.json (e.g. two training-seed sets run apart), kept to
    the settings whose label contains one of `only`; writes <out>/<study>.md and .json, returns the summary."""
    rows, headers, seconds = [], [], 0.0
    for folder in folders:
        with open(os.path.join(folder, f"{study}.json")) as handle:
            data = json.load(handle)
        rows += [r for r in data["rows"] if not only or any(part in r.get("setting", "") for part in only)]
        headers.append(f"`{folder}`: {data.get('header') or data['command']}")
        seconds += data["seconds"]
    if not rows:
        raise ValueError(f"no rows of the {study} study in {folders} (--only {only})")
    header = (f"Merged by `{command}` from {len(folders)} runs" + (f", settings matching {only}" if only else "")
              + ":\n\n" + "\n".join(f"* {h}" for h in headers))
    markdown, summary = STUDIES[study].render(rows, header)
    os.makedirs(out, exist_ok=True)
    write_markdown(out, study, markdown, rows, seconds)
    write_json(os.path.join(out, f"{study}.json"), {"study": study, "command": command, "header": header,
                                                    "merged": list(folders), "summary": summary, "rows": rows,
                                                    "seconds": seconds}, default=str)
    return summary


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    log = (lambda _: None) if args.quiet else (lambda text: print(text, flush=True))
    os.makedirs(args.out, exist_ok=True)
    command = command_line("train_tools.benches.ab_study", argv)
    session = Session(args, log)
    results = {}
    for name in args.study:
        if args.merge:
            results[name] = merge_runs(args.merge, name, args.out, args.only, command)
            continue
        if args.from_json:
            results[name] = rewrite_markdown(args.out, name)
            continue
        study, t0 = STUDIES[name], time.perf_counter()
        header = make_header(args, command, session.reference_error() if study.checks_reference else None,
                             study.scores)
        rows = study.run(session)
        markdown, summary = study.render(rows, header)
        seconds = time.perf_counter() - t0
        write_markdown(args.out, name, markdown, rows, seconds)
        write_json(os.path.join(args.out, f"{name}.json"),
                   {"model": args.model, "study": name, "args": vars(args), "command": command, "header": header,
                    "baseline": baseline(args), "summary": summary, "rows": rows, "seconds": seconds}, default=str)
        results[name] = summary
    log(f"done in {time.perf_counter() - started:.0f} s; tables and JSON in {args.out}")
    return results


if __name__ == "__main__":
    main()
