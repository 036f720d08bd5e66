"""Does a fit that also matches the spread of the teacher's step make better images than the plain fit?

    python -m train_tools.studies.spread_fit --model uncond --nfe 4 5
    python -m train_tools.studies.spread_fit --model cond --cfg 1 --nfe 4 5

A shared least-squares (or L1) fit toward the teacher shrinks what the few coordinates cannot predict: the
corrected states lose spread, which RMSE rewards and a distribution metric may punish (docs/objective-study.md).
This study refits every step the PAS search tries so that the corrected next states also keep the teacher's
spread: the fit minimises

    L(c) / L(c_fit) + weight * sum_s (mean_n s(x_next,n(c)) / mean_n s(x_teacher,n) - 1)^2

over the step's coordinates c, from the plain fit c_fit (L: the fit loss), with s the per-sample variance
(contrast) and, for images, the energy of the 3x3 high-pass part (fine detail). Everything else is the
Trainer's default (acceptance rule `auto` unless --rule, 48 trajectories, 3 basis vectors, a Heun teacher of ~48 model
calls) on the EDM grid (rho 7) that make reproduce uses. Every fit is then sampled on the same evaluation
seeds and judged by the quality bench: FD to the teacher's samples and to the data, RMSE, with paired 95%
intervals against the solver plain and against the plain fit. Writes out/spread_fit/<setting>/spread_fit.json/.md.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from comfyui_pas import Denoiser, PASCoordinates, SearchSettings, edm_sigmas
from comfyui_pas.acceptance import high_pass, spread
from comfyui_pas.fit import fit_coordinates
from comfyui_pas.search import GridSearch, teacher_targets
from comfyui_pas.settings import AUTO_RULE, RULE_CHOICES, TRAINER_TEACHER_NFE, TRAINER_TRAJECTORIES
from comfyui_pas.solvers import ORDER, SOLVERS, solver_options
from train_tools.bench_setup import BenchSetup, bench_parser
from train_tools.evaluation.quality import Interval
from train_tools.tables import command_line, markdown_table, write_results

DEFAULT_WEIGHTS = (1.0, 30.0)
PLAIN_FIT = "fit"


def spread_statistics(x: torch.Tensor) -> torch.Tensor:
    """Mean over samples of the per-sample variance and, for image-shaped x, of the high-pass energy."""
    flat = x.reshape(x.shape[0], -1)
    values = [flat.var(dim=1).mean()]
    fine = high_pass(x)
    if fine is not None:
        values.append(fine.reshape(x.shape[0], -1).square().mean(dim=1).mean())
    return torch.stack(values)


def spread_matched_coordinates(basis, wanted, scale, points, h, target, loss="l1", weight=1.0,
                               iterations: int = 200) -> torch.Tensor:
    """Coordinates (k,) that trade the fit loss against the teacher's spread (the module's objective).

    basis (n, k, D), wanted (n, D), scale (n,) or None: as comfyui_pas.fit.fit_coordinates; points (n, ...)
    the step's start, h its sigma step, target (n, ...) the teacher's next states. weight 0: the plain fit."""
    start = fit_coordinates(basis, wanted, scale, loss)
    if weight == 0:
        return start
    scaled = (basis if scale is None else basis * scale.to(basis.dtype)[:, None, None]).double()
    wanted, origin = wanted.double(), points.double().reshape(points.shape[0], -1)
    goal = spread_statistics(target.double())

    def fit_loss(c):
        residual = torch.einsum("nkd,k->nd", scaled, c) - wanted
        return residual.abs().mean() if loss == "l1" else residual.square().mean()

    reference = float(fit_loss(start.double())) or 1.0
    c = start.double().clone().requires_grad_(True)
    optimiser = torch.optim.LBFGS([c], lr=1, max_iter=iterations, line_search_fn="strong_wolfe")

    def objective():
        optimiser.zero_grad()
        moved = (origin + h * torch.einsum("nkd,k->nd", scaled, c)).reshape(points.shape)
        total = fit_loss(c) / reference + weight * (spread_statistics(moved) / goal - 1).square().sum()
        total.backward()
        return total

    with torch.enable_grad():
        optimiser.step(objective)
    return c.detach()


class SpreadMatchedSearch(GridSearch):
    """The PAS search with spread_matched_coordinates as each step's fit."""

    weight = 1.0

    def fit_step(self, basis, wanted, scale, points, h, target):
        return spread_matched_coordinates(basis, wanted, scale, points, h, target, self.settings.loss, self.weight)


def train(denoiser, x, sigmas, targets, solver, settings, weight: float | None) -> PASCoordinates:
    """Coordinates from the search on one grid: the plain fit (weight None) or the spread-matched one."""
    options = solver_options(solver)
    if weight is None:
        search = GridSearch(denoiser, x, sigmas, targets, solver, options, settings)
    else:
        search = SpreadMatchedSearch(denoiser, x, sigmas, targets, solver, options, settings)
        search.weight = weight
    entry = search.run().entry
    return PASCoordinates(sigmas=entry.sigmas, solver=solver, max_order=options.get(ORDER), n_basis=settings.n_basis,
                          steps=entry.steps, coordinates=entry.coordinates, parameterization=settings.parameterization,
                          metadata={"latent_shape": list(x.shape[1:])})


def fit_name(weight: float | None) -> str:
    return PLAIN_FIT if weight is None else f"spread {weight:g}"


def interval_text(interval) -> str:
    return f"{interval.value:+.3g} [{interval.low:+.3g}, {interval.high:+.3g}]"


@torch.no_grad()
def run(setup: BenchSetup, nfes, solvers, weights, rule: str = AUTO_RULE) -> dict:
    judge = setup.judge()
    teacher_eval = setup.teacher_finals("eval")
    goal = {"contrast": float(spread(teacher_eval).mean()), "detail": float(spread(high_pass(teacher_eval)).mean())}
    seeds = setup.seeds("train", TRAINER_TRAJECTORIES)
    denoiser = Denoiser(setup.guided, per_sample_args=setup.per_sample_args(seeds))
    cfg = setup.cfg if setup.conditional else None
    rows = []
    for nfe in nfes:
        sigmas = edm_sigmas(nfe, setup.guided.sigma_min, setup.guided.sigma_max).float()
        x = setup.noise(seeds) * sigmas[0]
        (targets,), _ = teacher_targets(denoiser, x, [sigmas], TRAINER_TEACHER_NFE, None)
        for solver in solvers:
            settings = SearchSettings.for_rule(rule, solver, cfg)
            scored = {}
            for weight in (None, *weights):
                started = time.perf_counter()
                coords = train(denoiser, x, sigmas, targets, solver, settings, weight)
                seconds = time.perf_counter() - started
                images, finals = setup.sample(setup.pas(solver, coords), sigmas)
                scored[fit_name(weight)] = judge.score(images, finals)
                rows.append({"nfe": nfe, "solver": solver, "rule": settings.rule, "fit": fit_name(weight),
                             "steps": coords.steps, "search_seconds": seconds,
                             "contrast": float(spread(finals).mean()), "detail": float(spread(high_pass(finals)).mean()),
                             **{m: scored[fit_name(weight)].values[m] for m in ("fd_teacher", "fd_data", "rmse")}})
            images, finals = setup.sample(setup.pas(solver), sigmas)
            plain = judge.score(images, finals)
            for row in rows[-len(scored):]:
                mine = scored[row["fit"]]
                for metric in ("fd_teacher", "fd_data", "rmse"):
                    row[f"{metric}_vs_plain"] = judge.difference(mine, plain, metric).as_dict()
                    if row["fit"] != PLAIN_FIT:
                        row[f"{metric}_vs_fit"] = judge.difference(mine, scored[PLAIN_FIT], metric).as_dict()
            print(f"NFE {nfe} {solver}: done", flush=True)
    return {"setting": setup.label(), "n": setup.n, "rule": rule, "teacher": goal, "rows": rows}


def report(results: dict, command: str) -> str:
    def cell(row, key):
        value = row.get(key)
        return "" if value is None else interval_text(Interval(**value))

    table = [[r["nfe"], r["solver"], r["rule"], r["fit"], str(r["steps"]), f"{r['fd_teacher']:.3g}",
              cell(r, "fd_teacher_vs_plain"), cell(r, "fd_teacher_vs_fit"), f"{r['fd_data']:.3g}",
              cell(r, "fd_data_vs_fit"), f"{r['rmse']:.4f}", cell(r, "rmse_vs_fit"),
              f"{r['contrast']:.3f}", f"{r['detail']:.3f}"] for r in results["rows"]]
    header = ["NFE", "solver", "rule", "fit", "corrected steps", "FD teacher", "vs plain", "vs fit", "FD data",
              "vs fit", "RMSE", "vs fit", "contrast", "detail"]
    teacher = results["teacher"]
    return "\n\n".join([
        f"# The spread-matched fit ({results['setting']}, rule {results.get('rule', AUTO_RULE)}, "
        f"{results['n']} evaluation seeds)",
        f"`{command}`",
        "Each fit's PAS row on the EDM grid (rho 7) against the solver plain (`vs plain`) and against the plain "
        "fit (`vs fit`): paired differences with 95% intervals over resampled seeds. FD: Frechet distance in the "
        "bundled classifier's features to the teacher's samples (other seeds) and to the data. contrast / detail: "
        "the mean per-sample spread of the finals and of their high-pass part; the teacher's finals on the same "
        f"seeds: {teacher['contrast']:.3f} / {teacher['detail']:.3f}.",
        markdown_table(header, table)])


def main(argv: list[str] | None = None) -> None:
    parser = bench_parser(__doc__)
    parser.set_defaults(n=400)
    parser.add_argument("--nfe", type=int, nargs="+", default=[4, 5])
    parser.add_argument("--solvers", nargs="+", choices=SOLVERS, default=list(SOLVERS))
    parser.add_argument("--weights", type=float, nargs="+", default=list(DEFAULT_WEIGHTS),
                        help="spread weights to compare with the plain fit")
    parser.add_argument("--rule", choices=RULE_CHOICES, default=AUTO_RULE, help="acceptance rule of the search")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    setup = BenchSetup.create(args.model, args.cfg, n=args.n)
    tag = (args.model if not setup.guided.conditional else f"{args.model}_cfg{args.cfg:g}") + f"_{args.rule}"
    results = run(setup, args.nfe, args.solvers, args.weights, args.rule)
    write_results(args.out or Path("out") / "spread_fit" / tag, "spread_fit", results,
                  report(results, command_line("train_tools.studies.spread_fit", argv)))


if __name__ == "__main__":
    main()
