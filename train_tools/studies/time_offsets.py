"""Do per-step time offsets, learned per grid, make better images, alone and under PAS?

    python -m train_tools.studies.time_offsets --model uncond --nfe 4 5
    python -m train_tools.studies.time_offsets --model cond --cfg 4 --nfe 4 5 --solvers euler deis dpmpp_2m

The issue's last lead: learn a little more per grid than three coordinates per corrected step. The cheapest
such addition: one number per step, a log-offset d_i, so that the step from sigma_i asks the model for its
denoised estimate at sigma_i * exp(d_i) while the solver's step stays on the grid (a time shift against
exposure bias). N numbers for N steps, no extra model call when sampling, and equal to the solver when every
offset is 0. They are fitted without gradients, by a pattern search on the final states' mean squared error
(`--offset-loss l1`: mean absolute error) against the teacher's finals on the training trajectories (a quarter
held out: offsets that do not lower the held-out error are dropped). PAS is then trained on top with the Trainer's defaults (rule `auto`, 48
trajectories) on the shifted model. Rows per solver and NFE: the solver plain, with offsets, with PAS, and
with both, on the EDM grid (rho 7), all on the same evaluation seeds and judged by the quality bench (FD to the
teacher's samples and to the data, RMSE, paired 95% intervals).
Writes out/time_offsets/<setting>/time_offsets.json and .md.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from comfyui_pas import Denoiser, SearchSettings, edm_sigmas, sample_pas
from comfyui_pas.acceptance import high_pass, spread
from comfyui_pas.settings import AUTO_RULE, TRAINER_TRAJECTORIES
from comfyui_pas.solvers import SOLVERS
from train_tools.bench_setup import BenchSetup, bench_parser
from train_tools.evaluation.quality import VERDICTS, Interval, interval_verdict
from train_tools.studies.fit_variants import METRIC_LABELS, METRICS, TrainingSets, interval_text, train
from train_tools.tables import command_line, markdown_table, write_results

ROWS = ("plain", "offsets", "PAS", "PAS + offsets")
FIRST_STEP = 0.2  # the pattern search's first move in log-sigma
LAST_STEP = 0.025
MAX_ROLLOUTS = 48


class ShiftedModel:
    """model(x, sigma) asked at sigma * exp(offset_i) when called at sigma_i, the start of the grid's step i."""

    def __init__(self, model, sigmas: torch.Tensor, log_offsets: torch.Tensor):
        points = sigmas.double()[:-1]  # the points a step starts from
        if len(log_offsets) != len(points):
            raise ValueError(f"{len(log_offsets)} offsets for a grid of {len(points)} steps")
        self.model, self.log_points = model, points.log()
        self.log_offsets = log_offsets.double()
        self.sigma_min, self.sigma_max = model.sigma_min, model.sigma_max
        self.conditional = getattr(model, "conditional", False)

    def __call__(self, x, sigma, **extra):
        sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1).expand(x.shape[0])
        gaps = (sigma.log()[:, None] - self.log_points[None, :]).abs()
        gap, index = gaps.min(dim=1)
        if float(gap.max()) > 1e-4:
            raise ValueError(f"called at sigma {float(sigma[gap.argmax()]):.6g}, which is not a point of the grid")
        shifted = sigma * self.log_offsets[index].exp()
        return self.model(x, shifted.to(x.dtype), **extra)


OFFSET_LOSSES = ("l2", "l1")  # the finals' mean squared or mean absolute error against the teacher's


def final_error(model, x, sigmas, extra, solver, log_offsets, target, loss: str = "l2") -> float:
    if loss not in OFFSET_LOSSES:
        raise ValueError(f"unknown offset loss {loss!r}; choose one of {OFFSET_LOSSES}")
    finals = sample_pas(ShiftedModel(model, sigmas, log_offsets), x, sigmas.clone(), extra, solver=solver)
    gap = finals - target
    return float(gap.square().mean() if loss == "l2" else gap.abs().mean())


def fit_offsets(model, x, sigmas, extra_of, target, solver, holdout: int, loss: str = "l2") -> tuple[torch.Tensor, dict]:
    """Offsets by pattern search on the training rows' final error; zeros unless they also help the held-out rows."""
    fit_rows, held_rows = slice(0, len(x) - holdout), slice(len(x) - holdout, len(x))

    def error(offsets, rows):
        return final_error(model, x[rows], sigmas, extra_of(rows), solver, offsets, target[rows], loss)

    offsets = torch.zeros(len(sigmas) - 1, dtype=torch.float64)
    best, rollouts, step = error(offsets, fit_rows), 1, FIRST_STEP
    while step >= LAST_STEP and rollouts < MAX_ROLLOUTS:
        moved = False
        for i in range(len(offsets)):
            for sign in (1.0, -1.0):
                trial = offsets.clone()
                trial[i] += sign * step
                value = error(trial, fit_rows)
                rollouts += 1
                if value < best:
                    offsets, best, moved = trial, value, True
                    break
        if not moved:
            step /= 2
    zero, held = error(torch.zeros_like(offsets), held_rows), error(offsets, held_rows)
    kept = held < zero
    info = {"rollouts": rollouts + 2, "train_mse": best, "held_out_mse_zero": zero, "held_out_mse": held, "kept": kept}
    return (offsets if kept else torch.zeros_like(offsets)), info


def shifted_sampler(solver, sigmas, log_offsets, coords=None):
    return lambda model, x, s, extra: sample_pas(ShiftedModel(model, sigmas, log_offsets), x, s, extra,
                                                 solver=solver, coords=coords)


@torch.no_grad()
def run(setup: BenchSetup, nfes, solvers, rule: str = AUTO_RULE, offset_loss: str = "l2") -> dict:
    judge = setup.judge()
    teacher_eval = setup.teacher_finals("eval")
    goal = {"contrast": float(spread(teacher_eval).mean()), "detail": float(spread(high_pass(teacher_eval)).mean())}
    cfg = setup.cfg if setup.conditional else None
    seeds = setup.seeds("train", TRAINER_TRAJECTORIES)
    args = setup.per_sample_args(seeds)

    def extra_of(rows):
        return {key: value[rows] for key, value in args.items()}

    rows = []
    for nfe in nfes:
        sigmas = edm_sigmas(nfe, setup.guided.sigma_min, setup.guided.sigma_max).float()
        _, x, targets = TrainingSets(setup).get(sigmas, TRAINER_TRAJECTORIES)
        first, of_nfe = len(rows), []
        for solver in solvers:
            settings = SearchSettings.for_rule(rule, solver, cfg)
            started = time.perf_counter()
            offsets, info = fit_offsets(setup.guided, x, sigmas, extra_of, targets[-1], solver, len(x) // 4,
                                        offset_loss)
            info["seconds"] = time.perf_counter() - started
            plain_coords = train(Denoiser(setup.guided, per_sample_args=args), x, sigmas, targets, solver, settings)
            shifted = ShiftedModel(setup.guided, sigmas, offsets)
            shifted_coords = train(Denoiser(shifted, per_sample_args=args), x, sigmas, targets, solver, settings)
            zeros = torch.zeros_like(offsets)
            samplers = {"plain": (shifted_sampler(solver, sigmas, zeros), None),
                        "offsets": (shifted_sampler(solver, sigmas, offsets), None),
                        "PAS": (shifted_sampler(solver, sigmas, zeros, plain_coords), plain_coords),
                        "PAS + offsets": (shifted_sampler(solver, sigmas, offsets, shifted_coords), shifted_coords)}
            scored = {}
            for name, (sampler, coords) in samplers.items():
                images, finals = setup.sample(sampler, sigmas)
                scored[name] = judge.score(images, finals)
                rows.append({"nfe": nfe, "solver": solver, "rule": settings.rule, "row": name,
                             "offsets": [round(float(v), 4) for v in offsets] if "offsets" in name else None,
                             "steps": coords.steps if coords is not None else [],
                             "contrast": float(spread(finals).mean()), "detail": float(spread(high_pass(finals)).mean()),
                             "offset_fit": info if name == "offsets" else None,
                             **{m: scored[name].values[m] for m in METRICS}})
            of_nfe += [scored[name] for name in samplers]
            for row in rows[-len(samplers):]:
                for metric in METRICS:
                    row[f"{metric}_vs_plain"] = judge.difference(scored[row["row"]], scored["plain"], metric).as_dict()
                    if row["row"] == "PAS + offsets":
                        for other in ("PAS", "offsets"):
                            row[f"{metric}_vs_{other}"] = judge.difference(
                                scored[row["row"]], scored[other], metric).as_dict()
            print(f"NFE {nfe} {solver}: offsets {[round(float(v), 3) for v in offsets]} "
                  f"(held-out error {info['held_out_mse_zero']:.4g} -> {info['held_out_mse']:.4g}), done", flush=True)
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

    table = [[r["nfe"], r["solver"], r["rule"], r["row"], "" if r["offsets"] is None else str(r["offsets"]),
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
                             ("PAS vs plain", [r for r in results["rows"] if r["row"] == "PAS"], "vs_plain")):
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
        f"{teacher['contrast']:.3f} / {teacher['detail']:.3f}. Offsets kept (held-out error lower): "
        f"{sum(f['kept'] for f in fits)} of {len(fits)}; roll-outs per fit: {max(f['rollouts'] for f in fits)} at most.",
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
    parsed.add_argument("--offset-loss", choices=OFFSET_LOSSES, default="l2",
                        help="the offset fit's error of the finals against the teacher's (l2: squared, l1: absolute)")
    parsed.add_argument("--out", type=Path, default=None)
    args = parsed.parse_args(argv)
    setup = BenchSetup.create(args.model, args.cfg, n=args.n)
    tag = args.model if not setup.guided.conditional else f"{args.model}_cfg{args.cfg:g}"
    results = run(setup, args.nfe, args.solvers, offset_loss=args.offset_loss)
    if args.offset_loss != "l2":
        tag += f"_{args.offset_loss}"
    write_results(args.out or Path("out") / "time_offsets" / tag, "time_offsets", results,
                  report(results, command_line("train_tools.studies.time_offsets", argv)))


if __name__ == "__main__":
    main()
