"""The A/B studies that are not one knob of the baseline: subsets of accepted steps, the teacher's own error,
end-to-end model-call counts, and coordinates used at another latent size (run by train_tools.benches.ab_study)."""
from __future__ import annotations

import itertools
from dataclasses import replace

from comfyui_pas import Denoiser, TeacherSettings, sample_pas, train_pas
from comfyui_pas.coords import PASCoordinates
from comfyui_pas.errors import pooled_rmse, sample_rmse
from comfyui_pas.search import guard_model_calls
from comfyui_pas.teacher import teacher_states
from train_tools.benches.ab_bench import BASELINE, Bench, CountingModel, baseline, make_spec
from train_tools.benches.ab_report import case_name


def run_subsets(session):
    """Baseline coordinates at --subset-nfe, scored with every subset of the accepted steps."""
    bench, args, log = session.bench, session.args, session.log
    rows = []
    for rep in range(args.first_rep, args.first_rep + args.reps):
        for solver, order in session.solvers:
            for parameterization in args.parameterizations:
                setting = dict(baseline(args), parameterization=parameterization)
                coords, _, _ = bench.train(setting, solver, order, args.subset_nfe, rep)
                for size in range(1, len(coords.steps) + 1):
                    for keep in itertools.combinations(range(len(coords.steps)), size):
                        subset = PASCoordinates(coords.sigmas, coords.solver, coords.max_order, coords.n_basis,
                                                [coords.steps[i] for i in keep], coords.coordinates[list(keep)],
                                                coords.parameterization)
                        row = dict(parameterization=parameterization, solver=solver, order=order, nfe=args.subset_nfe,
                                   rep=rep, accepted=coords.steps, kept=subset.steps,
                                   coordinates=[[round(v, 4) for v in c] for c in subset.coordinates.tolist()],
                                   **bench.score(subset, solver, order, args.subset_nfe))
                        rows.append(row)
                        log(f"  rep {rep} {case_name(solver, order, args.subset_nfe)} {parameterization} steps "
                            f"{subset.steps}: gain {100 * row['gain']:+.0f}% median {100 * row['median_change']:+.0f}%")
    return rows


# ---------------------------------------------------------------- how accurate is the teacher

def run_teacher_error(session):
    """Error of the Heun teacher (student grid refined to each --teacher-nfes) against the reference, on the
    first --check-reference held-out seeds, next to the plain solvers' error on the same seeds."""
    bench, args, log = session.bench, session.args, session.log
    count = max(1, min(args.check_reference or len(bench.eval_seeds), len(bench.eval_seeds)))
    x, reference = bench.eval_x[:count], bench.reference[:count]
    rows = []
    for nfe in args.nfe:
        sigmas = bench.spec.sigmas(nfe)
        row = {"nfe": nfe, "seeds": count}
        for solver, order in session.solvers:
            final = sample_pas(bench.spec.model, x, sigmas, solver=solver, max_order=order)
            errors = sample_rmse(final, reference)
            row[case_name(solver, order, "").strip()] = (pooled_rmse(errors), float(errors.median()))
        for teacher_nfe in args.teacher_nfes:
            states, info = teacher_states(Denoiser(bench.spec.model, chunk_size=bench.spec.chunk_size), x, sigmas,
                                          teacher_nfe)
            errors = sample_rmse(states[-1], reference)
            row[f"teacher {teacher_nfe}"] = (pooled_rmse(errors), float(errors.median()), info["nfe"])
        rows.append(row)
        log(f"  NFE {nfe}: {row}")
    return rows


# ---------------------------------------------------------------- what a training run costs, counted

def run_calls(session):
    """The baseline setting trained end to end (train_pas runs its own teacher) at every --nfe and solver:
    report["model_calls"] (teacher included), checked against a counting wrapper, next to the formula bound
    N x (teacher NFE + NFE) + n_val x (NFE + NFE (NFE - 1) / 2)."""
    args, log = session.args, session.log
    spec = make_spec(args.model)
    bench = Bench(spec, 0, 0, evaluate=False)
    setting = baseline(args)
    count, teacher_asked = setting.pop("n_train"), setting.pop("teacher_nfe")
    settings, teaching = replace(BASELINE, **setting), TeacherSettings(nfe=teacher_asked)
    rows = []
    for rep in range(args.first_rep, args.first_rep + args.reps):
        x = bench.train_x(rep, count)
        for nfe in args.nfe:
            for solver, order in session.solvers:
                counter = CountingModel(spec.model)
                coords, report = train_pas(Denoiser(counter, chunk_size=spec.chunk_size), x, spec.sigmas(nfe),
                                           solver=solver, max_order=order, settings=settings, teacher=teaching)
                if counter.calls != report["model_calls"]:
                    raise AssertionError(f"train_pas reports {report['model_calls']} model calls, the model saw "
                                         f"{counter.calls}")
                n_val, teacher = report["settings"]["n_validation"], report["settings"]["teacher"]["nfe"]
                teacher_calls = report["teacher_model_calls"]
                guard_calls = report["model_calls"] - teacher_calls - count * nfe
                guard_bound = guard_model_calls(n_val, nfe)
                row = dict(solver=solver, order=order, nfe=nfe, rep=rep, n_train=count, n_validation=n_val,
                           teacher_asked=teacher_asked, teacher_nfe=teacher, teacher_calls=teacher_calls,
                           search_calls=report["model_calls"] - teacher_calls, guard_calls=guard_calls,
                           guard_bound=guard_bound, model_calls=report["model_calls"],
                           bound=count * (teacher + nfe) + guard_bound, accepted=coords.steps)
                rows.append(row)
                log(f"  rep {rep} {case_name(solver, order, nfe):11s} model calls {row['model_calls']} "
                    f"(teacher {teacher_calls}, bound {row['bound']})")
    return rows


# ---------------------------------------------------------------- resolution transfer

def run_transfer(session):
    """Train at each of --transfer-train sizes, score at each of --transfer-eval sizes (both parameterizations)."""
    args, log = session.args, session.log
    base = baseline(args)
    eval_benches = {size: Bench(make_spec(args.model, size), args.eval, args.reference_nfe)
                    for size in args.transfer_eval}
    train_benches = {size: eval_benches.get(size) or Bench(make_spec(args.model, size), 0, 0, evaluate=False)
                     for size in args.transfer_train}
    rows = []
    for rep in range(args.first_rep, args.first_rep + args.reps):
        for nfe in args.nfe:
            for bench in train_benches.values():
                bench.forget_teachers()
            for solver, order in session.solvers:
                for parameterization in args.parameterizations:
                    setting = dict(base, parameterization=parameterization)
                    for train_size, train_bench in train_benches.items():
                        coords, _, cost = train_bench.train(setting, solver, order, nfe, rep)
                        for eval_size, eval_bench in eval_benches.items():
                            row = dict(setting=f"{parameterization}, trained at {train_size}, used at {eval_size}",
                                       parameterization=parameterization, train_size=train_size, eval_size=eval_size,
                                       solver=solver, order=order, nfe=nfe, rep=rep, accepted=coords.steps,
                                       parameters=coords.n_parameters, **cost,
                                       **eval_bench.score(coords, solver, order, nfe))
                            rows.append(row)
                            log(f"  rep {rep} {case_name(solver, order, nfe):9s} {row['setting']:45s} "
                                f"gain {100 * row['gain']:+6.1f}% median {100 * row['median_change']:+6.1f}%")
    return rows
