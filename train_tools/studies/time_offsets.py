"""Do per-step time offsets, learned per grid, make better images, alone and under PAS?

    python -m train_tools.studies.time_offsets --model uncond --nfe 4 5
    python -m train_tools.studies.time_offsets --model cond --cfg 4 --nfe 4 5 --solvers euler deis dpmpp_2m

The issue's last lead: learn a little more per grid than three coordinates per corrected step. The cheapest
such addition: one number per step, a log-offset d_i, so that the step from sigma_i asks the model for its
denoised estimate at sigma_i * exp(d_i) while the solver's step stays on the grid (a time shift against
exposure bias). N numbers for N steps, no extra model call when sampling, and equal to the solver when every
offset is 0. The fit, the search on the shifted model and the choice between them are the library's, as
`train_pas(..., time_offsets=True)` runs them (comfyui_pas.offsets, search.search_with_offsets): a pattern search
on the finals' error against the teacher's finals (`--offset-loss`: l1 mean absolute, l2 mean squared) on three
quarters of the training trajectories, offsets dropped unless the held-out quarter confirms them, then PAS
trained on top (rule `auto`, 48 trajectories) on the shifted model and kept only if it beats PAS alone on the
held-out quarter. Rows per solver and NFE: the solver plain, with offsets, with PAS, and with both (the one
train_pas keeps is marked `chosen`), on the EDM grid (rho 7), all on the same evaluation seeds and judged by
the quality bench (FD to the teacher's samples and to the data, RMSE, paired 95% intervals).
Writes out/time_offsets/<setting>/time_offsets.json and .md.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import torch

from comfyui_pas import PASCoordinates, SearchSettings, edm_sigmas, sample_pas
from comfyui_pas.acceptance import high_pass, spread
from comfyui_pas.search import search_with_offsets
from comfyui_pas.settings import AUTO_RULE, LOSSES, TRAINER_TRAJECTORIES
from comfyui_pas.solvers import ORDER, SOLVERS, solver_options
from train_tools.bench_setup import BenchSetup, bench_parser
from train_tools.evaluation.quality import VERDICTS, Interval, interval_verdict
from train_tools.studies.fit_variants import METRIC_LABELS, METRICS, TrainingSets, interval_text
from train_tools.tables import command_line, markdown_table, write_results

ROWS = ("plain", "offsets", "PAS", "PAS + offsets")


def as_coordinates(entry, solver: str, settings: SearchSettings, x) -> PASCoordinates:
    options = solver_options(solver)
    return PASCoordinates(sigmas=entry.sigmas, solver=solver, max_order=options.get(ORDER), n_basis=settings.n_basis,
                          steps=entry.steps, coordinates=entry.coordinates, parameterization=settings.parameterization,
                          metadata={"latent_shape": list(x.shape[1:])}, log_offsets=entry.log_offsets)


def row_coordinates(searched, solver, settings, x) -> dict:
    """The four rows' coordinates (None: the plain solver) from one search_with_offsets."""
    plain = as_coordinates(searched.plain.entry, solver, settings, x)
    if searched.shifted is None:  # offsets not confirmed: the offset rows are the rows without
        return {"plain": None, "offsets": None, "PAS": plain, "PAS + offsets": plain}
    offsets = searched.shifted.entry.log_offsets
    alone = replace(searched.plain.entry, steps=[], coordinates=torch.zeros(0, settings.n_basis), log_offsets=offsets)
    return {"plain": None, "offsets": as_coordinates(alone, solver, settings, x), "PAS": plain,
            "PAS + offsets": as_coordinates(searched.shifted.entry, solver, settings, x)}


def sampler_of(solver, coords):
    return lambda model, x, s, extra: sample_pas(model, x, s, extra, solver=solver, coords=coords)


@torch.no_grad()
def run(setup: BenchSetup, nfes, solvers, rule: str = AUTO_RULE, offset_loss: str = SearchSettings.offset_loss) -> dict:
    judge = setup.judge()
    teacher_eval = setup.teacher_finals("eval")
    goal = {"contrast": float(spread(teacher_eval).mean()), "detail": float(spread(high_pass(teacher_eval)).mean())}
    cfg = setup.rule_cfg
    rows = []
    for nfe in nfes:
        sigmas = edm_sigmas(nfe, setup.guided.sigma_min, setup.guided.sigma_max).float()
        denoiser, x, targets = TrainingSets(setup).get(sigmas, TRAINER_TRAJECTORIES)
        first, of_nfe = len(rows), []
        for solver in solvers:
            settings = replace(SearchSettings.for_rule(rule, solver, cfg).for_steps(nfe), time_offsets=True, offset_loss=offset_loss)
            started = time.perf_counter()
            searched = search_with_offsets(denoiser, x, sigmas, targets, solver, solver_options(solver), settings)
            fit = dict(searched.fit, seconds=time.perf_counter() - started)
            chosen = "PAS + offsets" if fit["kept"] else "PAS"  # what train_pas(time_offsets=True) keeps
            by_error = "PAS + offsets" if fit.get("kept_by_error") else "PAS"  # the choice without the contrast check
            coordinates = row_coordinates(searched, solver, settings, x)
            scored = {}
            for name, coords in coordinates.items():
                images, finals = setup.sample(sampler_of(solver, coords), sigmas)
                scored[name] = judge.score(images, finals)
                offsets = None if coords is None or coords.log_offsets is None else coords.log_offsets
                rows.append({"nfe": nfe, "solver": solver, "rule": settings.rule, "row": name,
                             "offsets": None if "offsets" not in name else
                             [round(float(v), 4) for v in (offsets if offsets is not None else torch.zeros(nfe))],
                             "steps": coords.steps if coords is not None else [], "chosen": name == chosen,
                             "chosen_by_error": name == by_error,
                             "contrast": float(spread(finals).mean()), "detail": float(spread(high_pass(finals)).mean()),
                             "offset_fit": fit if name == "offsets" else None,
                             **{m: scored[name].values[m] for m in METRICS}})
            of_nfe += [scored[name] for name in coordinates]
            for row in rows[-len(coordinates):]:
                for metric in METRICS:
                    row[f"{metric}_vs_plain"] = judge.difference(scored[row["row"]], scored["plain"], metric).as_dict()
                    if row["row"] == "PAS + offsets":
                        for other in ("PAS", "offsets"):
                            row[f"{metric}_vs_{other}"] = judge.difference(
                                scored[row["row"]], scored[other], metric).as_dict()
            print(f"NFE {nfe} {solver}: offsets {fit['fitted']} (held-out error {fit['held_out_error_plain']:.4g} -> "
                  f"{fit['held_out_error']:.4g}), train_pas keeps {chosen}", flush=True)
        # every row against the solver that is best plain at this NFE (lowest FD to the teacher)
        best = min((i for i in range(first, len(rows)) if rows[i]["row"] == "plain"), key=lambda i: rows[i]["fd_teacher"])
        for i in range(first, len(rows)):
            rows[i]["best_plain"] = rows[best]["solver"]
            for metric in METRICS:
                rows[i][f"{metric}_vs_best_plain"] = judge.difference(
                    of_nfe[i - first], of_nfe[best - first], metric).as_dict()
    return {"setting": setup.label(), "n": setup.n, "rule": rule, "offset_loss": offset_loss, "teacher": goal,
            "rows": rows}


def _identical(interval: dict) -> bool:
    return interval["low"] == interval["high"] == 0


def tally(rows: list[dict], key: str) -> dict:
    """Per metric, the rows better / level / worse in `key` (an interval column); rows without it are skipped."""
    counts = {m: [0, 0, 0] for m in METRICS}
    for row in rows:
        for metric in METRICS:
            interval = row.get(f"{metric}_{key}")
            if interval is not None and not _identical(interval):
                counts[metric][VERDICTS.index(interval_verdict(interval))] += 1
    return counts


def report(results: dict, command: str) -> str:
    def cell(row, key):
        value = row.get(key)
        return "" if value is None else interval_text(Interval(**value))

    table = [[r["nfe"], r["solver"], r["rule"], r["row"] + (" (chosen)" if r.get("chosen") else ""),
              "" if r["offsets"] is None else str(r["offsets"]),
              str(r["steps"]), f"{r['fd_teacher']:.3g}", cell(r, "fd_teacher_vs_plain"), cell(r, "fd_teacher_vs_PAS"),
              cell(r, "fd_teacher_vs_best_plain"),
              f"{r['fd_data']:.3g}", cell(r, "fd_data_vs_plain"), cell(r, "fd_data_vs_PAS"), f"{r['rmse']:.4f}",
              cell(r, "rmse_vs_plain"), f"{r['contrast']:.3f}", f"{r['detail']:.3f}"] for r in results["rows"]]
    header = ["NFE", "solver", "rule", "row", "log-offsets", "corrected steps", "FD teacher", "vs plain", "vs PAS",
              "vs best plain", "FD data", "vs plain", "vs PAS", "RMSE", "vs plain", "contrast", "detail"]
    fits = [r["offset_fit"] for r in results["rows"] if r["offset_fit"]]
    summary = []
    for label, rows, key in (("offsets vs plain", [r for r in results["rows"] if r["row"] == "offsets"], "vs_plain"),
                             ("PAS + offsets vs PAS", results["rows"], "vs_PAS"),
                             ("PAS + offsets vs offsets", results["rows"], "vs_offsets"),
                             ("PAS vs plain", [r for r in results["rows"] if r["row"] == "PAS"], "vs_plain"),
                             ("chosen vs PAS", [r for r in results["rows"] if r.get("chosen")], "vs_PAS"),
                             ("chosen vs plain", [r for r in results["rows"] if r.get("chosen")], "vs_plain"),
                             ("chosen by the error alone vs PAS", [r for r in results["rows"] if r.get("chosen_by_error")],
                              "vs_PAS")):
        counts = tally(rows, key)
        summary.append([label, *(" / ".join(map(str, counts[m])) for m in METRICS)])
    best_rows = []
    for nfe in sorted({r["nfe"] for r in results["rows"]}):
        mine = [r for r in results["rows"] if r["nfe"] == nfe and "best_plain" in r]
        if not mine:
            continue
        changed = [r for r in mine if r["row"] != "plain" and not _identical(r["fd_teacher_vs_plain"])]
        if not changed:
            continue
        top = min(changed, key=lambda r: r["fd_teacher"])
        best_rows.append([nfe, f"{top['best_plain']}", f"{top['solver']} {top['row']}", f"{top['fd_teacher']:.3g}",
                          *(cell(top, f"{m}_vs_best_plain") for m in METRICS)])
    teacher = results["teacher"]
    return "\n\n".join([
        f"# Time offsets ({results['setting']}, rule {results['rule']}, offset loss "
        f"{results.get('offset_loss', 'l2').upper()}, {results['n']} evaluation seeds)",
        f"`{command}`",
        "Rows on the EDM grid (rho 7): the solver plain, with learned per-step log-offsets of the model's sigma, "
        "with PAS (the Trainer's defaults), and with PAS trained on top of the offsets. Paired differences with "
        "95% intervals over resampled seeds. FD: Frechet distance in the bundled classifier's features to the "
        "teacher's samples and to the data. contrast / detail: the teacher's finals on the same seeds: "
        f"{teacher['contrast']:.3f} / {teacher['detail']:.3f}. Offsets confirmed (held-out error lower): "
        f"{sum(f.get('confirmed', f['kept']) for f in fits)} of {len(fits)}; train_pas(time_offsets=True) keeps "
        f"PAS + offsets (held-out error below PAS's, contrast no further from the teacher's) in "
        f"{sum(f['kept'] for f in fits)}, by the error alone in {sum(bool(f.get('kept_by_error')) for f in fits)}; "
        f"roll-outs per fit: {max(f['rollouts'] for f in fits)} at most. `chosen`: the row train_pas keeps.",
        markdown_table(header, table),
        "Rows better / level / worse (95% intervals; identical rows left out):",
        markdown_table(["comparison", *METRIC_LABELS], summary),
        "The row closest to the teacher at each NFE (offsets, PAS or both, rows equal to their solver left out) "
        "against the best plain solver (lowest FD to the teacher), paired differences:",
        markdown_table(["NFE", "best plain", "best row", "FD teacher", *(f"{m} vs best plain" for m in METRIC_LABELS)],
                       best_rows)])


def main(argv: list[str] | None = None) -> None:
    parsed = bench_parser(__doc__)
    parsed.set_defaults(n=400)
    parsed.add_argument("--nfe", type=int, nargs="+", default=[4, 5])
    parsed.add_argument("--solvers", nargs="+", choices=SOLVERS, default=list(SOLVERS))
    parsed.add_argument("--offset-loss", choices=LOSSES, default=SearchSettings.offset_loss,
                        help="the offset fit's error of the finals against the teacher's (l2: squared, l1: absolute)")
    parsed.add_argument("--out", type=Path, default=None)
    args = parsed.parse_args(argv)
    setup = BenchSetup.create(args.model, args.cfg, n=args.n)
    tag = args.model if not setup.guided.conditional else f"{args.model}_cfg{args.cfg:g}"
    results = run(setup, args.nfe, args.solvers, offset_loss=args.offset_loss)
    if args.offset_loss != SearchSettings.offset_loss:
        tag += f"_{args.offset_loss}"
    write_results(args.out or Path("out") / "time_offsets" / tag, "time_offsets", results,
                  report(results, command_line("train_tools.studies.time_offsets", argv)))


if __name__ == "__main__":
    main()
