"""A/B study of PAS design choices (issue 6), on the Gaussian mixture or on the bundled demo model.

    python -m train_tools.ab_study --model gmm --study all --out out/ab/gmm
    python -m train_tools.ab_study --model fashion --study parameterization --nfe 5 8 --out out/ab/fashion

Studies: parameterization (absolute / relative, with and without the validation guard, and the paper's
settings), trajectories (training trajectories N), teacher (teacher NFE), basis (n_basis), loss (l1 / l2),
tolerance (acceptance rule), guard (share of the trajectories the validation guard holds out), budget
(N x teacher NFE), transfer (coordinates used at another latent size), subsets (the baseline's accepted
steps at one NFE, scored one subset at a time: which step helps or hurts), teacher-error (the teacher's
own error against the reference, next to the plain solvers').
Every study varies one knob of BASELINE (the library's defaults when the study was run) with
N = --baseline-train and teacher --baseline-teacher, and trains on euler and ipndm (order 3) at every --nfe.

Training seeds of repetition r are [r * 10000, r * 10000 + N); held-out seeds are [100000, 100000 + E),
so they never overlap. Each held-out sample is scored against one high-accuracy Heun reference (its final
state does not depend on the student grid). "gain" = 1 - RMSE_pas / RMSE_plain over all held-out samples;
"median change" = median_pas / median_plain - 1 of the per-sample RMSEs (a rare mode flip dominates the
RMSE of a mixture with separated modes, not the median); "worse" = share of samples PAS made worse;
"mode flips" (mixtures only) = share of samples nearest to another component than their reference.
Model calls per training run = N x teacher NFE (teacher) + the search's own calls (N x student NFE plus
the guard's roll-outs), counted. Prints Markdown tables; writes <out>/<study>.json and <out>/<study>.md.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import statistics
import time
from dataclasses import dataclass

import torch

from comfyui_pas import edm_sigmas, sample_pas, train_pas
from comfyui_pas.coords import PASCoordinates
from comfyui_pas.search import sample_errors
from comfyui_pas.teacher import heun_states, teacher_states
from train_tools.bench_gmm import EVAL_SEED_OFFSET, GMM_SETTINGS
from train_tools.gmm import GaussianMixtureDenoiser, seeded_noise

TRAIN_SEED_STRIDE = 10_000
CACHE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".cache", "ab_study")
SOLVERS = (("euler", 1), ("ipndm", 3))
STUDIES = ("parameterization", "trajectories", "teacher", "basis", "loss", "tolerance", "guard", "budget", "transfer",
           "subsets", "teacher-error")
# Block mixture of the transfer study: every block of BLOCK_SETTINGS["dim"] values is an independent draw
# of one small mixture, so the same "model" exists at any dimension that is a multiple of the block size.
BLOCK_SETTINGS = dict(dim=16, components=8, spread=1.0, std=0.5, seed=1)


# ---------------------------------------------------------------- models

class CountingModel:
    """Wraps a k-diffusion denoiser and counts model calls per sample (rows of every call)."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def __call__(self, x, sigma, **kwargs):
        self.calls += x.shape[0]
        return self.model(x, sigma, **kwargs)


class BlockMixtureDenoiser(torch.nn.Module):
    """Exact denoiser of data made of independent blocks, each drawn from the same small mixture."""

    sigma_min, sigma_max = 0.002, 80.0

    def __init__(self, block: GaussianMixtureDenoiser):
        super().__init__()
        self.block = block

    def forward(self, x, sigma, **_):
        count, size = x.shape[0], x[0].numel()
        width = self.block.dim
        if size % width:
            raise ValueError(f"size {size} is not a multiple of the block size {width}")
        blocks = x.reshape(count * (size // width), width)
        sigma = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1).expand(count)
        return self.block(blocks, sigma.repeat_interleave(size // width)).reshape(x.shape)


@dataclass
class Spec:
    """A model at one latent shape: how to make its start points and its sigma grids."""

    name: str
    model: object
    shape: tuple
    dtype: torch.dtype
    ends_at_zero: bool
    chunk_size: int | None = None
    identity: str = ""  # names the model's weights in reference cache keys (empty: do not cache)

    def sigmas(self, steps):
        """The student grid with `steps` model calls (EDM, rho 7; ComfyUI's karras form for images)."""
        return edm_sigmas(steps, 0.002, 80.0, append_zero=self.ends_at_zero).to(self.dtype)

    def noise(self, seeds):
        return (seeded_noise(list(seeds), self.shape) * 80.0).to(self.dtype)

    def modes(self, x):
        """Mixture component nearest to each sample (per block for block mixtures), or None."""
        mixture = getattr(self.model, "block", self.model)
        means = getattr(mixture, "means", None)
        if means is None:
            return None
        blocks = x.reshape(-1, means.shape[1]).double()
        labels = torch.cdist(blocks, means).argmin(dim=1)
        return labels.reshape(x.shape[0], -1)


def make_spec(model_name, size=None):
    if model_name == "gmm" and size is None:
        return Spec("gmm", GaussianMixtureDenoiser.random(**GMM_SETTINGS), (GMM_SETTINGS["dim"],), torch.float64,
                    False)
    if model_name == "gmm":
        return Spec(f"block-gmm-{size}", BlockMixtureDenoiser(GaussianMixtureDenoiser.random(**BLOCK_SETTINGS)),
                    (int(size),), torch.float64, False)
    if model_name == "fashion":
        from train_tools.demo_model import DEFAULT_WEIGHTS, load_demo_model

        side = 32 if size is None else int(size)
        model = load_demo_model()
        identity = hashlib.sha1(DEFAULT_WEIGHTS.read_bytes()).hexdigest()[:12]
        return Spec(f"fashion-{side}", model, (1, side, side), torch.float32, True, chunk_size=256,
                    identity=identity)
    raise ValueError(f"unknown model {model_name!r}")


# ---------------------------------------------------------------- one bench: reference, teacher cache, runs

def reference_finals(spec, x, reference_nfe, seeds=None):
    """Final states of Heun on one fine EDM grid with about `reference_nfe` model calls (cached in
    .cache/ab_study/ for models with an identity, keyed by weights, shape, seeds and NFE)."""
    path = None
    if spec.identity and seeds is not None:
        key = f"{spec.name}-{spec.identity}-{'x'.join(map(str, spec.shape))}-{seeds.start}-{len(seeds)}-{reference_nfe}"
        path = os.path.join(CACHE_DIR, f"reference-{key}.pt")
        if os.path.isfile(path):
            return torch.load(path)
    intervals = max(1, math.ceil((reference_nfe + (1 if spec.ends_at_zero else 0)) / 2))
    grid = spec.sigmas(intervals)
    parts = []
    for start in range(0, x.shape[0], spec.chunk_size or x.shape[0]):
        part = x[start:start + (spec.chunk_size or x.shape[0])]
        parts.append(heun_states(spec.model, part, grid, len(grid) - 1)[-1])
    finals = torch.cat(parts)
    if path:
        os.makedirs(CACHE_DIR, exist_ok=True)
        torch.save(finals, path + ".tmp")
        os.replace(path + ".tmp", path)
    return finals


class Bench:
    """Held-out start points, their reference, plain-solver errors, and a teacher cache for training."""

    def __init__(self, spec, n_eval, reference_nfe, evaluate=True, check_count=0):
        self.spec = spec
        self.model = CountingModel(spec.model)
        self.eval_seeds = range(EVAL_SEED_OFFSET, EVAL_SEED_OFFSET + n_eval)
        self.teachers, self.plain = {}, {}
        self.keep_teachers = bool(spec.identity)
        self.reference_nfe = reference_nfe
        self.reference_error = None
        if evaluate:
            self.eval_x = spec.noise(self.eval_seeds)
            self.reference = reference_finals(spec, self.eval_x, reference_nfe, self.eval_seeds)
            self.reference_modes = spec.modes(self.reference)
            if check_count:
                finer = reference_finals(spec, self.eval_x[:check_count], 2 * reference_nfe,
                                         self.eval_seeds[:check_count])
                self.reference_error = float(sample_errors(finer, self.reference[:check_count]).square().mean().sqrt())

    def train_x(self, rep, count):
        first = rep * TRAIN_SEED_STRIDE
        seeds = range(first, first + count)
        assert count <= TRAIN_SEED_STRIDE and not set(seeds) & set(self.eval_seeds)
        return self.spec.noise(seeds)

    def targets(self, rep, nfe, teacher_nfe, count):
        """Teacher states for the first `count` training seeds of rep (computed once, then sliced)."""
        key = (rep, nfe, teacher_nfe)
        cached = self.teachers.get(key)
        if cached is None or cached[0].shape[1] < count:
            states, info = teacher_states(self.spec.model, self.train_x(rep, count), self.spec.sigmas(nfe),
                                          teacher_nfe=teacher_nfe, chunk_size=self.spec.chunk_size)
            cached = self.teachers[key] = (states, info)
        return cached[0][:, :count], cached[1]

    def forget_teachers(self):
        """Free the teacher cache (the mixture's large runs); image models keep it across studies."""
        if not self.keep_teachers:
            self.teachers.clear()

    def train(self, setting, solver, order, nfe, rep):
        """Coordinates for one setting; returns (coords, report, cost dict)."""
        s = dict(setting)
        count, teacher_nfe = s.pop("n_train"), s.pop("teacher_nfe")
        targets, info = self.targets(rep, nfe, teacher_nfe, count)
        self.model.calls = 0
        coords, report = train_pas(self.model, self.train_x(rep, count), self.spec.sigmas(nfe), solver=solver,
                                   max_order=order, targets=targets, chunk_size=self.spec.chunk_size, **s)
        cost = {"n_train": count, "teacher_nfe": info["nfe"], "teacher_calls": count * info["nfe"],
                "search_calls": self.model.calls, "calls": count * info["nfe"] + self.model.calls,
                "search_seconds": report["search_seconds"]}
        return coords, report, cost

    def plain_errors(self, solver, order, nfe):
        key = (solver, order, nfe)
        if key not in self.plain:
            final = sample_pas(self.spec.model, self.eval_x, self.spec.sigmas(nfe), solver=solver, max_order=order)
            self.plain[key] = (sample_errors(final, self.reference), self.flips(final))
        return self.plain[key]

    def flips(self, final):
        """Share of samples that end in another mixture component than the reference (None: not a mixture)."""
        modes = self.spec.modes(final)
        return None if modes is None else float((modes != self.reference_modes).any(dim=1).double().mean())

    def score(self, coords, solver, order, nfe):
        """Held-out metrics of coordinates against the plain solver."""
        plain, flips_plain = self.plain_errors(solver, order, nfe)
        final = sample_pas(self.spec.model, self.eval_x, self.spec.sigmas(nfe), solver=solver, max_order=order,
                           coords=coords)
        corrected = sample_errors(final, self.reference)
        return dict(metrics(plain, corrected), flips_plain=flips_plain, flips_pas=self.flips(final))


def metrics(plain, corrected):
    """RMSE gain, median change and share of samples made worse, from per-sample RMSEs."""
    rmse_plain, rmse_pas = float(plain.square().mean().sqrt()), float(corrected.square().mean().sqrt())
    return {"rmse_plain": rmse_plain, "rmse_pas": rmse_pas, "gain": 1 - rmse_pas / rmse_plain,
            "median_plain": float(plain.median()), "median_pas": float(corrected.median()),
            "median_change": float(corrected.median()) / float(plain.median()) - 1,
            "worse": float((corrected > plain).double().mean())}


def _mean(values):
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


# ---------------------------------------------------------------- studies

# The baseline each study varies one knob of: the library's defaults when the study was run (docs/ab-study.md),
# fixed here so that the published tables reproduce whatever the library's defaults become.
BASELINE = {"parameterization": "relative", "n_basis": 4, "loss": "l1", "tolerance": 0.01,
            "tolerance_mode": "relative", "guard": "validation"}


def baseline(args):
    return dict(BASELINE, n_train=args.baseline_train, teacher_nfe=args.baseline_teacher)


def study_settings(study, args):
    """[(label, overrides of the baseline)] for one study."""
    params = args.parameterizations
    if study == "parameterization":
        return [("paper: absolute, no guard, abs. tol 1e-4",
                 dict(parameterization="absolute", guard="none", tolerance_mode="absolute", tolerance=1e-4)),
                ("absolute, no guard", dict(parameterization="absolute", guard="none")),
                ("absolute, guard", dict(parameterization="absolute")),
                ("relative, no guard", dict(parameterization="relative", guard="none")),
                ("relative, guard", dict(parameterization="relative"))]
    if study == "trajectories":
        return [(f"{p}, N={n}", dict(parameterization=p, n_train=n)) for p in params for n in args.train_counts]
    if study == "teacher":
        return [(f"{p}, teacher {t}", dict(parameterization=p, teacher_nfe=t)) for p in params
                for t in args.teacher_nfes]
    if study == "basis":
        return [(f"{p}, n_basis={k}", dict(parameterization=p, n_basis=k)) for p in params for k in args.basis]
    if study == "loss":
        return [(f"{p}, {loss}", dict(parameterization=p, loss=loss)) for p in params for loss in ("l1", "l2")]
    if study == "tolerance":
        rules = [("relative", t) for t in (0.001, 0.01, 0.05, 0.1)] + [("absolute", t) for t in (1e-4, 1e-3)]
        return [(f"{mode} {t:g}", dict(tolerance_mode=mode, tolerance=t)) for mode, t in rules]
    if study == "guard":
        return [(f"{p}, validation {int(100 * f)}%", dict(parameterization=p, validation_fraction=f)) for p in params
                for f in (0.125, 0.25, 0.5)]
    if study == "budget":
        return [(f"relative, N={n}, teacher {t}", dict(parameterization="relative", n_train=n, teacher_nfe=t))
                for n in args.budget_counts for t in args.budget_teachers]
    raise ValueError(f"unknown study {study!r}")


def case_name(solver, order, nfe):
    return f"{solver if solver == 'euler' else f'ipndm{order}'} {nfe}"


def run_study(bench, study, args, log):
    base = baseline(args)
    settings = [(label, dict(base, **overrides)) for label, overrides in study_settings(study, args)
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
            for solver, order in SOLVERS:
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


def summarise(rows, key="setting"):
    """Per setting: per-case rep means, and means over cases (the numbers the decision uses)."""
    labels = list(dict.fromkeys(r[key] for r in rows))
    cases = list(dict.fromkeys((r["solver"], r["order"], r["nfe"]) for r in rows))
    summary = []
    for label in labels:
        mine = [r for r in rows if r[key] == label]
        per_case = {}
        for case in cases:
            sub = [r for r in mine if (r["solver"], r["order"], r["nfe"]) == case]
            if sub:
                per_case[case_name(*case)] = {
                    "gain": statistics.mean(r["gain"] for r in sub),
                    "median_change": statistics.mean(r["median_change"] for r in sub),
                    "worse": statistics.mean(r["worse"] for r in sub),
                    "flips_plain": _mean(r.get("flips_plain") for r in sub),
                    "flips_pas": _mean(r.get("flips_pas") for r in sub)}
        reps = sorted({r["rep"] for r in mine})
        rep_means = [statistics.mean(r["gain"] for r in mine if r["rep"] == rep) for rep in reps]
        gains = [c["gain"] for c in per_case.values()]
        summary.append({
            "setting": label, "cases": per_case,
            "mean_gain": statistics.mean(gains), "min_gain": min(gains),
            "rep_spread": statistics.pstdev(rep_means) if len(rep_means) > 1 else 0.0,
            "mean_median_change": statistics.mean(c["median_change"] for c in per_case.values()),
            "max_worse": max(c["worse"] for c in per_case.values()),
            "flips_plain": _mean(c["flips_plain"] for c in per_case.values()),
            "flips_pas": _mean(c["flips_pas"] for c in per_case.values()),
            "mean_steps": statistics.mean(len(r["accepted"]) for r in mine),
            "mean_parameters": statistics.mean(r["parameters"] for r in mine),
            "mean_calls": statistics.mean(r["calls"] for r in mine),
            "config": mine[0].get("config")})
    best = max(s["mean_gain"] for s in summary)
    for s in summary:
        s["within_90pct"] = best > 0 and s["mean_gain"] >= 0.9 * best
    return summary


def cheapest_within(summary, fraction=0.9, score=lambda s: s["mean_gain"]):
    """The setting with the fewest model calls per run whose score (default: the mean RMSE gain) is
    >= fraction x the best score; None when no setting helps."""
    best = max(score(s) for s in summary)
    if best <= 0:
        return None
    keep = [s for s in summary if score(s) >= fraction * best]
    return min(keep, key=lambda s: (s["mean_calls"], -score(s)))


def median_gain(s):
    return -s["mean_median_change"]


def pct(value):
    return "n/a" if value is None else f"{100 * value:+.1f}%"


def flips_text(s):
    if s.get("flips_pas") is None:
        return "n/a"
    return f"{1000 * s['flips_plain']:.1f} -> {1000 * s['flips_pas']:.1f}"


def summary_table(summary):
    lines = ["| setting | mean gain | spread over reps | worst case | mean median change | max worse "
             "| mode flips per 1000 (plain -> PAS) | steps | params | model calls / run | >= 90% of best |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['setting']} | {pct(s['mean_gain'])} | {100 * s['rep_spread']:.1f} pt | {pct(s['min_gain'])} | "
                     f"{pct(s['mean_median_change'])} | {100 * s['max_worse']:.0f}% | {flips_text(s)} | "
                     f"{s['mean_steps']:.1f} | {s['mean_parameters']:.1f} | {s['mean_calls']:,.0f} | "
                     f"{'yes' if s['within_90pct'] else 'no'} |")
    return "\n".join(lines)


def case_table(summary, field):
    names = list(dict.fromkeys(n for s in summary for n in s["cases"]))
    lines = ["| setting | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for s in summary:
        cells = [f"{100 * s['cases'][n][field]:+.0f}" if n in s["cases"] else "" for n in names]
        lines.append(f"| {s['setting']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def solver_table(rows):
    """Per setting and solver family: mean RMSE gain and median change over NFEs, and the 90% choices."""
    families = list(dict.fromkeys(case_name(r["solver"], r["order"], "").strip() for r in rows))
    parts = {f: summarise([r for r in rows if case_name(r["solver"], r["order"], "").strip() == f]) for f in families}
    head = " | ".join(f"{f} mean gain | {f} median change" for f in families)
    lines = [f"| setting | {head} | model calls / run |", "|---" * (2 * len(families) + 2) + "|"]
    for i, s in enumerate(parts[families[0]]):
        cells = " | ".join(f"{pct(parts[f][i]['mean_gain'])} | {pct(parts[f][i]['mean_median_change'])}"
                           for f in families)
        lines.append(f"| {s['setting']} | {cells} | {s['mean_calls']:,.0f} |")
    lines.append("")
    for f in families:
        by_gain, by_median = cheapest_within(parts[f]), cheapest_within(parts[f], score=median_gain)
        lines.append(f"* {f}: cheapest with >= 90% of the best mean RMSE gain: "
                     f"{by_gain['setting'] if by_gain else 'none (no setting helps)'}; by the median: "
                     f"{by_median['setting'] if by_median else 'none'}.")
    return "\n".join(lines)


def study_markdown(study, summary, header, rows=None):
    choice = cheapest_within(summary)
    parts = [f"### {study}", "", header, "", summary_table(summary), ""]
    if rows:
        parts += ["Per solver (means over NFEs and repetitions):", "", solver_table(rows), ""]
    parts += [
             "RMSE gain per case (%, mean over repetitions; positive = PAS closer to the reference):", "",
             case_table(summary, "gain"), "", "Median per-sample change per case (%, negative = better):", "",
             case_table(summary, "median_change"), ""]
    if choice is not None:
        parts.append(f"Cheapest setting with >= 90% of the best mean RMSE gain: **{choice['setting']}** "
                     f"({pct(choice['mean_gain'])}, {choice['mean_calls']:,.0f} model calls per training run).")
    by_median = cheapest_within(summary, score=median_gain)
    if by_median is not None:
        parts.append(f"Cheapest setting with >= 90% of the best mean median improvement: **{by_median['setting']}** "
                     f"({pct(by_median['mean_median_change'])}, {by_median['mean_calls']:,.0f} model calls per run).")
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------- which accepted step does what

def run_subsets(bench, args, log):
    """Baseline coordinates at --subset-nfe, scored with every subset of the accepted steps."""
    rows = []
    for rep in range(args.first_rep, args.first_rep + args.reps):
        for solver, order in SOLVERS:
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


def subsets_markdown(rows, header):
    lines = ["### subsets", "", header, "",
             "| parameterization | case | rep | accepted | steps kept | RMSE gain | median change | mode flips "
             "(plain -> PAS, of all) | coordinates of the kept steps |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        flips = ("n/a" if r["flips_pas"] is None else
                 f"{r['flips_plain'] * 1000:.1f} -> {r['flips_pas'] * 1000:.1f} per 1000")
        lines.append(f"| {r['parameterization']} | {case_name(r['solver'], r['order'], r['nfe'])} | {r['rep']} | "
                     f"{r['accepted']} | {r['kept']} | {pct(r['gain'])} | {pct(r['median_change'])} | {flips} | "
                     f"{r['coordinates']} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- how accurate is the teacher

def run_teacher_error(bench, args, log):
    """Error of the Heun teacher (student grid refined to each --teacher-nfes) against the reference, on the
    first --check-reference held-out seeds, next to the plain solvers' error on the same seeds."""
    count = max(1, min(args.check_reference or len(bench.eval_seeds), len(bench.eval_seeds)))
    x, reference = bench.eval_x[:count], bench.reference[:count]
    rows = []
    for nfe in args.nfe:
        sigmas = bench.spec.sigmas(nfe)
        row = {"nfe": nfe, "seeds": count}
        for solver, order in SOLVERS:
            final = sample_pas(bench.spec.model, x, sigmas, solver=solver, max_order=order)
            errors = sample_errors(final, reference)
            row[case_name(solver, order, "").strip()] = (float(errors.square().mean().sqrt()), float(errors.median()))
        for teacher_nfe in args.teacher_nfes:
            states, info = teacher_states(bench.spec.model, x, sigmas, teacher_nfe=teacher_nfe,
                                          chunk_size=bench.spec.chunk_size)
            errors = sample_errors(states[-1], reference)
            row[f"teacher {teacher_nfe}"] = (float(errors.square().mean().sqrt()), float(errors.median()),
                                             info["nfe"])
        rows.append(row)
        log(f"  NFE {nfe}: {row}")
    return rows


def teacher_error_markdown(rows, header):
    names = [k for k in rows[0] if k not in ("nfe", "seeds")]
    lines = ["### teacher-error", "", header, "", f"RMSE / median per-sample RMSE against the reference, first "
             f"{rows[0]['seeds']} held-out seeds (teacher columns: requested NFE, actual NFE in brackets):", "",
             "| NFE | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for r in rows:
        cells = [f"{r[n][0]:.4f} / {r[n][1]:.4f}" + (f" ({r[n][2]})" if len(r[n]) > 2 else "") for n in names]
        lines.append(f"| {r['nfe']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- resolution transfer

def run_transfer(args, log):
    """Train at each of --transfer-train sizes, score at each of --transfer-eval sizes (both parameterizations)."""
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
            for solver, order in SOLVERS:
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


def transfer_markdown(rows, header):
    summary = summarise(rows)
    by_label = {s["setting"]: s for s in summary}
    lines = ["### transfer", "", header, "",
             "| parameterization | trained at | used at | mean gain | worst case | mean median change | "
             "mode flips per 1000 (plain -> PAS) | share of the native gain kept |", "|---|---|---|---|---|---|---|---|"]
    for s in summary:
        r = next(r for r in rows if r["setting"] == s["setting"])
        native = by_label.get(f"{r['parameterization']}, trained at {r['eval_size']}, used at {r['eval_size']}")
        kept = (f"{100 * s['mean_gain'] / native['mean_gain']:.0f}%" if native and native["mean_gain"] > 0
                else "n/a")
        lines.append(f"| {r['parameterization']} | {r['train_size']} | {r['eval_size']} | {pct(s['mean_gain'])} | "
                     f"{pct(s['min_gain'])} | {pct(s['mean_median_change'])} | {flips_text(s)} | {kept} |")
    lines += ["", "RMSE gain per case (%):", "", case_table(summary, "gain"), ""]
    return "\n".join(lines) + "\n", summary


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
    parser.add_argument("--study", nargs="+", choices=STUDIES + ("all",), default=["parameterization"])
    parser.add_argument("--out", default=None, help="folder for <study>.json and <study>.md (default out/ab/<model>)")
    parser.add_argument("--nfe", type=int, nargs="+")
    parser.add_argument("--eval", type=int, help="held-out seeds (from 100000)")
    parser.add_argument("--reps", type=int, help="repetitions with disjoint training seeds")
    parser.add_argument("--first-rep", type=int, default=0, help="index of the first repetition (its seed block)")
    parser.add_argument("--reference-nfe", type=int, help="Heun calls of the reference that scores held-out samples")
    parser.add_argument("--baseline-train", type=int, help="training trajectories of the baseline (incl. the guard's 25%%)")
    parser.add_argument("--baseline-teacher", type=int, help="teacher NFE of the baseline")
    parser.add_argument("--train-counts", type=int, nargs="+")
    parser.add_argument("--teacher-nfes", type=int, nargs="+")
    parser.add_argument("--basis", type=int, nargs="+")
    parser.add_argument("--budget-counts", type=int, nargs="+")
    parser.add_argument("--budget-teachers", type=int, nargs="+")
    parser.add_argument("--transfer-train", type=int, nargs="+", help="sizes trained at (gmm: dimension, fashion: side)")
    parser.add_argument("--transfer-eval", type=int, nargs="+", help="sizes scored at")
    parser.add_argument("--subset-nfe", type=int, default=10, help="NFE of the subsets study")
    parser.add_argument("--parameterizations", nargs="+", choices=("absolute", "relative"),
                        default=["absolute", "relative"])
    parser.add_argument("--check-reference", type=int, default=32,
                        help="held-out seeds on which the reference is compared with one of twice its NFE (0: skip)")
    parser.add_argument("--only", nargs="+", help="keep only the settings whose label contains one of these")
    parser.add_argument("--from-json", action="store_true", help="only rebuild the Markdown from <out>/<study>.json")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    for name, value in MODEL_DEFAULTS[args.model].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.out is None:
        args.out = os.path.join("out", "ab", args.model)
    if "all" in args.study:
        args.study = list(STUDIES)
    return args


def make_header(args, command, reference_error=None):
    """One paragraph naming the model, seeds, repetitions, NFEs, reference, baseline and the command."""
    text = (f"{args.model}: held-out seeds {EVAL_SEED_OFFSET}..{EVAL_SEED_OFFSET + args.eval - 1}, "
            f"{args.reps} repetition(s) with disjoint training seeds"
            + (f" (from repetition {args.first_rep})" if getattr(args, "first_rep", 0) else "")
            + f", NFE {args.nfe}, reference Heun "
            f"~{args.reference_nfe} NFE; baseline {baseline(args)}. Command: `{command}`")
    if reference_error is not None:
        text += (f" Reference error (RMSE vs {2 * args.reference_nfe}-NFE Heun, first {args.check_reference} "
                 f"seeds): {reference_error:.2e}.")
    return text


def rewrite_markdown(folder, study):
    """Rebuild <study>.md from <study>.json (tables only; nothing is re-run)."""
    path = os.path.join(folder, f"{study}.json")
    if not os.path.isfile(path):
        return None
    with open(path) as handle:
        data = json.load(handle)
    rows = data["rows"]
    header = data.get("header") or make_header(argparse.Namespace(**data["args"]), data["command"])
    if study == "transfer":
        markdown, summary = transfer_markdown(rows, header)
    elif study == "subsets":
        markdown, summary = subsets_markdown(rows, header), None
    elif study == "teacher-error":
        markdown, summary = teacher_error_markdown(rows, header), None
    else:
        summary = summarise(rows)
        markdown = study_markdown(study, summary, header, rows)
    markdown += f"\n({len(rows)} result rows, {data['seconds']:.0f} s)\n"
    print(markdown)
    with open(os.path.join(folder, f"{study}.md"), "w") as handle:
        handle.write(markdown)
    return summary


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    log = (lambda _: None) if args.quiet else (lambda text: print(text, flush=True))
    os.makedirs(args.out, exist_ok=True)
    command = "python -m train_tools.ab_study " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
    bench = None
    results = {}
    for study in args.study:
        if args.from_json:
            results[study] = rewrite_markdown(args.out, study)
            continue
        t0 = time.perf_counter()
        header = make_header(args, command)
        if study == "transfer":
            rows = run_transfer(args, log)
            markdown, summary = transfer_markdown(rows, header)
        elif study in ("subsets", "teacher-error"):
            if bench is None:
                bench = Bench(make_spec(args.model), args.eval, args.reference_nfe)
            if study == "subsets":
                rows, summary = run_subsets(bench, args, log), None
                markdown = subsets_markdown(rows, header)
            else:
                rows, summary = run_teacher_error(bench, args, log), None
                markdown = teacher_error_markdown(rows, header)
        else:
            if bench is None:
                bench = Bench(make_spec(args.model), args.eval, args.reference_nfe, check_count=args.check_reference)
                if bench.reference_error is not None:
                    log(f"reference RMSE vs a {2 * args.reference_nfe}-NFE Heun on the first "
                        f"{args.check_reference} held-out seeds: {bench.reference_error:.3g}")
            header = make_header(args, command, bench.reference_error)
            rows = run_study(bench, study, args, log)
            summary = summarise(rows)
            markdown = study_markdown(study, summary, header, rows)
        seconds = time.perf_counter() - t0
        markdown += f"\n({len(rows)} result rows, {seconds:.0f} s)\n"
        print(markdown, flush=True)
        with open(os.path.join(args.out, f"{study}.md"), "w") as handle:
            handle.write(markdown)
        with open(os.path.join(args.out, f"{study}.json"), "w") as handle:
            json.dump({"model": args.model, "study": study, "args": vars(args), "command": command, "header": header,
                       "baseline": baseline(args), "summary": summary, "rows": rows, "seconds": seconds},
                      handle, indent=1, default=str)
        results[study] = summary
    log(f"done in {time.perf_counter() - started:.0f} s; tables and JSON in {args.out}")
    return results


if __name__ == "__main__":
    main()
