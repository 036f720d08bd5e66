"""Which fit makes the best images: the fit loss, the basis size, the number of training trajectories and the
spread weight, each against the Trainer's default fit on the same evaluation seeds.

    python -m train_tools.studies.fit_variants --model uncond --nfe 4 5 --variants loss:l2 basis:2 basis:4 trajectories:96
    python -m train_tools.studies.fit_variants --model cond --cfg 4 --nfe 4 5 --solvers euler deis dpmpp_2m

Variants (KIND:VALUE): loss:l1|l2 (the fit loss), basis:N (basis vectors per corrected step),
trajectories:N (training trajectories, the first N training seeds, a quarter held out as always), and
spread:W (the spread-matched fit of train_tools/studies/spread_fit.py with weight W). Everything else is the
Trainer's default (acceptance rule `auto` unless --rule, 48 trajectories, 3 basis vectors, the l1 fit, a Heun
teacher of ~48 model calls) on the EDM grid (rho 7) that make reproduce uses. Every variant is sampled on the
same evaluation seeds and judged by the quality bench: FD to the teacher's samples and to the data, RMSE, with
paired 95% intervals against the solver plain and against the default fit.
Writes out/fit_variants/<setting>_<rule>/fit_variants.json and .md.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from comfyui_pas import Denoiser, PASCoordinates, SearchSettings, edm_sigmas
from comfyui_pas.acceptance import high_pass, spread
from comfyui_pas.search import GridSearch, teacher_targets
from comfyui_pas.settings import AUTO_RULE, LOSSES, RULE_CHOICES, TRAINER_TEACHER_NFE, TRAINER_TRAJECTORIES
from comfyui_pas.solvers import ORDER, SOLVERS, solver_options
from train_tools.bench_setup import BenchSetup, bench_parser
from train_tools.evaluation.quality import VERDICTS, Interval, interval_verdict
from train_tools.tables import command_line, markdown_table, write_results

DEFAULT_FIT = "fit"
KINDS = ("loss", "basis", "trajectories", "spread")
METRICS = ("fd_teacher", "fd_data", "rmse")
METRIC_LABELS = ("FD teacher", "FD data", "RMSE")


@dataclass(frozen=True)
class Variant:
    """One change to the Trainer's default fit (kind None: the default itself)."""

    kind: str | None = None
    value: str = ""

    @classmethod
    def parse(cls, text: str) -> Variant:
        kind, _, value = text.partition(":")
        if kind not in KINDS or not value:
            raise ValueError(f"a variant is KIND:VALUE with KIND one of {', '.join(KINDS)}, got {text!r}")
        if kind == "loss" and value not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {value!r}")
        if kind in ("basis", "trajectories") and not value.isdigit():
            raise ValueError(f"{kind} takes a whole number, got {value!r}")
        if kind == "spread":
            value = f"{float(value):g}"
        return cls(kind, value)

    @property
    def name(self) -> str:
        return DEFAULT_FIT if self.kind is None else f"{self.kind} {self.value}"

    @property
    def trajectories(self) -> int:
        return int(self.value) if self.kind == "trajectories" else TRAINER_TRAJECTORIES

    def settings(self, settings: SearchSettings) -> SearchSettings:
        if self.kind == "loss":
            return replace(settings, loss=self.value)
        if self.kind == "basis":
            return replace(settings, n_basis=int(self.value))
        return settings


def train(denoiser, x, sigmas, targets, solver, settings, search_class=GridSearch, **attributes) -> PASCoordinates:
    """Coordinates from one grid's search, run by `search_class` (a GridSearch) with these attributes set."""
    options = solver_options(solver)
    search = search_class(denoiser, x, sigmas, targets, solver, options, settings)
    for name, value in attributes.items():
        setattr(search, name, value)
    entry = search.run().entry
    return PASCoordinates(sigmas=entry.sigmas, solver=solver, max_order=options.get(ORDER), n_basis=settings.n_basis,
                          steps=entry.steps, coordinates=entry.coordinates, parameterization=settings.parameterization,
                          metadata={"latent_shape": list(x.shape[1:])})


def train_variant(variant: Variant, denoiser, x, sigmas, targets, solver, settings) -> PASCoordinates:
    if variant.kind == "spread":
        from train_tools.studies.spread_fit import SpreadMatchedSearch

        return train(denoiser, x, sigmas, targets, solver, settings, SpreadMatchedSearch, weight=float(variant.value))
    return train(denoiser, x, sigmas, targets, solver, variant.settings(settings))


def interval_text(interval: Interval) -> str:
    return f"{interval.value:+.3g} [{interval.low:+.3g}, {interval.high:+.3g}]"


class TrainingSets:
    """The training start points and teacher states per (NFE, trajectory count), made once each."""

    def __init__(self, setup: BenchSetup):
        self.setup, self.cache = setup, {}

    def get(self, sigmas: torch.Tensor, count: int):
        key = (len(sigmas), count)
        if key not in self.cache:
            seeds = self.setup.seeds("train", count)
            denoiser = Denoiser(self.setup.guided, per_sample_args=self.setup.per_sample_args(seeds))
            x = self.setup.noise(seeds) * sigmas[0]
            (targets,), _ = teacher_targets(denoiser, x, [sigmas], TRAINER_TEACHER_NFE, None)
            self.cache[key] = denoiser, x, targets
        return self.cache[key]


@torch.no_grad()
def run(setup: BenchSetup, nfes, solvers, variants, rule: str = AUTO_RULE) -> dict:
    """Every solver at every NFE with the default fit and each variant, scored on the evaluation seeds."""
    judge = setup.judge()
    teacher_eval = setup.teacher_finals("eval")
    goal = {"contrast": float(spread(teacher_eval).mean()), "detail": float(spread(high_pass(teacher_eval)).mean())}
    cfg = setup.rule_cfg
    rows = []
    for nfe in nfes:
        sigmas = edm_sigmas(nfe, setup.guided.sigma_min, setup.guided.sigma_max).float()
        training = TrainingSets(setup)
        for solver in solvers:
            settings = SearchSettings.for_rule(rule, solver, cfg).for_steps(nfe)
            scored = {}
            for variant in (Variant(), *variants):
                denoiser, x, targets = training.get(sigmas, variant.trajectories)
                started = time.perf_counter()
                coords = train_variant(variant, denoiser, x, sigmas, targets, solver, settings)
                seconds = time.perf_counter() - started
                images, finals = setup.sample(setup.pas(solver, coords), sigmas)
                scored[variant.name] = judge.score(images, finals)
                rows.append({"nfe": nfe, "solver": solver, "rule": settings.rule, "fit": variant.name,
                             "steps": coords.steps, "params": coords.n_parameters, "search_seconds": seconds,
                             "contrast": float(spread(finals).mean()), "detail": float(spread(high_pass(finals)).mean()),
                             **{m: scored[variant.name].values[m] for m in METRICS}})
            images, finals = setup.sample(setup.pas(solver), sigmas)
            plain = judge.score(images, finals)
            for row in rows[-len(scored):]:
                mine = scored[row["fit"]]
                for metric in METRICS:
                    row[f"{metric}_vs_plain"] = judge.difference(mine, plain, metric).as_dict()
                    if row["fit"] != DEFAULT_FIT:
                        row[f"{metric}_vs_fit"] = judge.difference(mine, scored[DEFAULT_FIT], metric).as_dict()
            print(f"NFE {nfe} {solver}: done", flush=True)
    return {"setting": setup.label(), "n": setup.n, "rule": rule, "teacher": goal, "rows": rows}


def tally(rows: list[dict]) -> dict:
    """Per variant and metric: how many rows are better / level / worse than the default fit.

    Paired 95% intervals decide (better: the interval lies below zero). Rows where neither fit corrects a
    step are left out."""
    defaults = {(r["nfe"], r["solver"]): r for r in rows if r["fit"] == DEFAULT_FIT}
    counts = {}
    for row in rows:
        if row["fit"] == DEFAULT_FIT or not (row["steps"] or defaults[row["nfe"], row["solver"]]["steps"]):
            continue
        per_metric = counts.setdefault(row["fit"], {m: [0, 0, 0] for m in METRICS})
        for metric in METRICS:
            interval = row[f"{metric}_vs_fit"]
            per_metric[metric][VERDICTS.index(interval_verdict(interval))] += 1
    return counts


def report(results: dict, command: str, title: str = "Fit variants") -> str:
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
        f"# {title} ({results['setting']}, rule {results.get('rule', AUTO_RULE)}, {results['n']} evaluation seeds)",
        f"`{command}`",
        "Each fit's PAS row on the EDM grid (rho 7) against the solver plain (`vs plain`) and against the "
        "Trainer's default fit (`vs fit`): paired differences with 95% intervals over resampled seeds. FD: "
        "Frechet distance in the bundled classifier's features to the teacher's samples (other seeds) and to the "
        "data. contrast / detail: the mean per-sample spread of the finals and of their high-pass part; the "
        f"teacher's finals on the same seeds: {teacher['contrast']:.3f} / {teacher['detail']:.3f}.",
        markdown_table(header, table),
        "Against the default fit, rows better / level / worse (95% intervals; rows where neither fit corrects "
        "a step are left out):",
        markdown_table(["fit", "rows", *METRIC_LABELS],
                       [[name, sum(counts[METRICS[0]]), *(" / ".join(map(str, counts[m])) for m in METRICS)]
                        for name, counts in tally(results["rows"]).items()])])


def parser(doc: str, variants_default: list[str]):
    """The command line of a fit study: the bench's options, NFE, solvers, rule, variants and --out."""
    parsed = bench_parser(doc)
    parsed.set_defaults(n=400)
    parsed.add_argument("--nfe", type=int, nargs="+", default=[4, 5])
    parsed.add_argument("--solvers", nargs="+", choices=SOLVERS, default=list(SOLVERS))
    parsed.add_argument("--rule", choices=RULE_CHOICES, default=AUTO_RULE, help="acceptance rule of the search")
    parsed.add_argument("--variants", nargs="+", default=variants_default, metavar="KIND:VALUE",
                        help=f"changes to the default fit, KIND one of {', '.join(KINDS)}")
    parsed.add_argument("--out", type=Path, default=None)
    return parsed


def study_main(module: str, doc: str, variants_default: list[str], title: str, argv: list[str] | None) -> None:
    args = parser(doc, variants_default).parse_args(argv)
    variants = [Variant.parse(text) for text in args.variants]
    setup = BenchSetup.create(args.model, args.cfg, n=args.n)
    tag = (args.model if not setup.guided.conditional else f"{args.model}_cfg{args.cfg:g}") + f"_{args.rule}"
    results = run(setup, args.nfe, args.solvers, variants, args.rule)
    name = module.rsplit(".", 1)[-1]
    write_results(args.out or Path("out") / name / tag, name, results,
                  report(results, command_line(module, argv), title))


def main(argv: list[str] | None = None) -> None:
    study_main("train_tools.studies.fit_variants", __doc__, ["loss:l2", "basis:2", "basis:4", "trajectories:96"],
               "Fit variants", argv)


if __name__ == "__main__":
    main()
