"""Reproduce PAS offline on the bundled Fashion-MNIST model: FID (pytorch-fid) and RMSE vs the teacher.

Per-seed noise, teacher trajectories, PAS search per solver and NFE, then sampling with and without PAS
on held-out seeds (never overlapping the training seeds), ComfyUI's built-in samplers on the same model,
sigmas and seeds when the host is installed. Writes results.json, results.md, sample grids and the
per-step error figure; prints the table. Shards seeds across processes under torchrun (gloo).

    python -m train_tools.reproduction.reproduce --preset quick
    torchrun --nproc-per-node 2 -m train_tools.reproduction.reproduce --preset full
"""
from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist

from comfyui_pas import Denoiser, SearchSettings, edm_sigmas, learn_schedule, sample_pas, train_pas
from comfyui_pas.grids import teacher_substeps as substeps_for
from comfyui_pas.pipeline import LEARNED_OBJECTIVE
from comfyui_pas.schedule import CandidateTeacher, schedule_grids
from comfyui_pas.search import DEFAULT_N_BASIS, GUARDS, union_grid
from comfyui_pas.settings import (
    ACCEPTANCE_RULES,
    AUTO_RULE,
    LOSSES,
    RULE_CHOICES,
    TRAINER_TEACHER_NFE,
    TRAINER_TRAJECTORIES,
    ScheduleSettings,
)
from comfyui_pas.solvers import SOLVERS, describe_solver, solver_options
from comfyui_pas.teacher import teacher_nfe_for, teacher_states
from train_tools.bench_setup import load_model
from train_tools.data.call_cache import CallCache, reuse_summary
from train_tools.data.guided import GuidedModel, labels_for
from train_tools.data.seeds import CONFIRM_SEED_START, EVAL_SEED_START, REFERENCE_SEED_START
from train_tools.evaluation.metrics import rmse
from train_tools.reproduction.distributed import init_distributed, map_seeds
from train_tools.reproduction.reproduce_output import finish, score_fid, score_rows
from train_tools.reproduction.reproduce_report import (
    FID_POLICIES,
    LEARNED,
    MULTI_GRID,
    base_rows,
    best_grid_label,
    coords_path,
    coords_tag,
    fid_keys,
    pas_label,
    plain_label,
    rewrite_report,
    runs_summary,
)

# Sized for 2 CPU cores: Inception runs at ~3 images/s and each FID value spends 25-60 s in the
# 2048x2048 matrix square root, so the number of FID rows times the evaluation size sets the time. The full
# preset trains with the PAS Trainer's defaults and scores every row on the quality bench (FD with intervals,
# which ranks samplers as Inception FID does: docs/quality-bench.md); --fid adds Inception FID of the
# contenders at NFE 4-6 against the 10,000 test images (tens of minutes more on 2 cores).
# Every solver's uncorrected row is ComfyUI's own function (tests/host prove ours equal to it); uni_pc has no
# PAS counterpart (see docs/solvers.md). Every row gets RMSE; which get FID: see reproduce_report.fid_keys.
PRESETS = {
    "quick": dict(nfe=[5], train=32, eval=200, teacher_nfe=48, reference_nfe=35, fid_ref=500, fid=False,
                  model="cond", cfg=4.0, solvers=["euler", "deis", "dpmpp_2m"], builtins=[], fid_rows="best",
                  learned=True, multigrid=False),
    "full": dict(nfe=[4, 5, 6, 8, 10], train=TRAINER_TRAJECTORIES, eval=400, teacher_nfe=TRAINER_TEACHER_NFE,
                 reference_nfe=35, fid_ref=10000, fid=False,
                 model="cond", cfg=4.0, solvers=list(SOLVERS), builtins=["uni_pc"], fid_rows="contenders",
                 fid_nfe=[4, 5, 6], learned=True, multigrid=True),
}



def broadcast_from(value, source, rank, world):
    """The value of rank `source` on every rank."""
    if world == 1:
        return value
    holder = [value if rank == source else None]
    dist.broadcast_object_list(holder, src=source)
    return holder[0]


# ---- the run ------------------------------------------------------------------------------------
def noise(seeds):
    from demo_model import LATENT_SHAPE
    from train_tools.data.seeds import seeded_noise

    return seeded_noise(list(seeds), LATENT_SHAPE, torch.float32)


def teacher_run(model, sigmas, teacher_nfe, final_only):
    """seeds -> teacher states (seeds, steps+1, ...) or only the final states. `model` is a GuidedModel:
    every run binds it to its seeds' prompts."""
    def run(seeds):
        states = teacher_states(model.bind(seeds), noise(seeds) * sigmas[0], sigmas, teacher_nfe)[0]
        return states[-1] if final_only else states.transpose(0, 1)
    return run


def pas_run(model, sigmas, solver, coords):
    def run(seeds):
        return sample_pas(model.bind(seeds), noise(seeds) * sigmas[0], sigmas, solver=solver, coords=coords)
    return run


def builtin_run(sampler, model, sigmas):
    @torch.no_grad()
    def run(seeds):  # uni_pc writes into the sigmas it is given: hand it a copy
        return sampler(model.bind(seeds), noise(seeds) * sigmas[0], sigmas.clone(), extra_args={}, disable=True)
    return run


def training_denoiser(model, seeds, batch):
    """The guided model on the training seeds, each with its prompt's class label."""
    return Denoiser(model, per_sample_args={"class_labels": labels_for(seeds)}, chunk_size=batch)


def gathered_cache_summary(cache: CallCache, rank, world) -> dict:
    """The call cache's counts summed over the processes."""
    counts = torch.tensor([cache.rows_called, cache.rows_reused], dtype=torch.long)
    if world > 1:
        dist.all_reduce(counts)
    return reuse_summary(*counts.tolist())


def rule_overrides(args) -> dict:
    """The SearchSettings fields that --guard, --min-held-out-gain, --time-offsets and --offset-loss replace."""
    fields = {"guard": args.guard, "min_held_out_gain": getattr(args, "min_held_out_gain", None),
              "time_offsets": getattr(args, "time_offsets", None) or None, "offset_loss": getattr(args, "offset_loss", None)}
    return {name: value for name, value in fields.items() if value is not None}


def train_all(model, sigmas, targets, solvers, args, rank, world, out, log, tag):
    """PAS for every solver on one grid (or a list of grids; or per solver: dicts solver -> grid, targets),
    solver i trained on rank i % world; every rank gets all coords; rank 0 saves them as
    coords/<solver>_<tag>.safetensors."""
    trained = {}
    all_sigmas, all_targets = sigmas, targets
    for index, name in enumerate(solvers):
        result = None
        if index % world == rank:
            t1 = time.perf_counter()
            sigmas = all_sigmas[name] if isinstance(all_sigmas, dict) else all_sigmas
            targets = all_targets[name] if isinstance(all_targets, dict) else all_targets
            start = sigmas[0] if isinstance(sigmas, torch.Tensor) else sigmas[0][0]
            seeds = range(args.train_seed_start, args.train_seed_start + args.train)
            denoiser = training_denoiser(model, seeds, args.batch)
            cfg = None if args.model == "uncond" else args.cfg
            settings = SearchSettings.for_rule(args.rule, name, cfg, otherwise=getattr(args, "auto_default", None),
                                               n_basis=args.n_basis, loss=args.loss, **rule_overrides(args))
            coords, report = train_pas(denoiser, noise(seeds) * start, sigmas, solver=name, settings=settings,
                                       teacher=targets)
            report["search_seconds"] = time.perf_counter() - t1
            result = (coords, report)
        trained[name] = result
    for index, name in enumerate(solvers):
        trained[name] = broadcast_from(trained[name], index % world, rank, world)
        if rank == 0:
            trained[name][0].save(coords_path(out, name, tag))
            log(f"    {name} ({tag}): corrected steps {[g.steps for g in trained[name][0].grids]}")
    return trained


def learned_schedules(model, seeds, nfe, solvers, batch, rank, world):
    """solver -> LearnedSchedule for `nfe` steps, as the PAS Trainer's `grid: learned` makes it
    (learn_and_train: the end-to-end choice, the grid ending in 0 as ComfyUI's): one Heun teacher over the
    candidates joined with the EDM baselines, sharded over the seeds; then each solver's choice (its roll-outs
    on rank i % world) from that teacher."""
    settings = ScheduleSettings(objective=LEARNED_OBJECTIVE, sigma_min=float(model.sigma_min),
                                sigma_max=float(model.sigma_max), append_zero=True)
    grid, _ = schedule_grids(settings, nfe, None)

    def run(batch_seeds):
        teacher = CandidateTeacher.run(model.bind(batch_seeds), noise(batch_seeds) * grid[0].float(), grid,
                                       settings.teacher_substeps)
        return torch.cat([teacher.states, teacher.denoised]).transpose(0, 1)

    both = map_seeds(run, seeds, batch, rank, world).transpose(0, 1)
    teacher = CandidateTeacher(grid, both[:len(grid)], both[len(grid):])
    denoiser = training_denoiser(model, seeds, batch)
    x = noise(seeds) * float(model.sigma_max)
    schedules = {}
    for index, name in enumerate(solvers):
        mine = learn_schedule(denoiser, x, nfe, solver=name, settings=settings, teacher=teacher) \
            if index % world == rank else None
        schedules[name] = broadcast_from(mine, index % world, rank, world)
    return schedules


def train_multigrid(model, seeds, args, rank, world, out, log):
    """One file per solver for every NFE's grid from one teacher run over their union; and the model calls of
    that training next to one training at the largest NFE (teacher + search, counted)."""
    grids = [edm_sigmas(n, model.sigma_min, model.sigma_max).float() for n in args.nfe]
    union = union_grid(grids)
    states = map_seeds(teacher_run(model, union.float(), args.teacher_nfe, False), seeds, args.batch, rank,
                       world).transpose(0, 1)
    position = {value: index for index, value in enumerate(union.float().double().tolist())}
    targets = [states[[position[v] for v in grid.double().tolist()]] for grid in grids]
    multi = train_all(model, grids, targets, args.solvers, args, rank, world, out, log, coords_tag(None))
    return multi, len(seeds) * teacher_nfe_for(union, substeps_for(union, args.teacher_nfe))


def best_row_grids(paths, args, comfy, log=print) -> dict[int, dict[str, float]]:
    """{nfe: {built-in: rho}} from best-row studies' best_row.json files (or docs/results/best_row_grids_*.json)
    of this run's model and CFG; an NFE the studies did not cover keeps the EDM-grid built-ins only."""
    chosen = {}
    for path in paths:
        try:
            saved = json.loads(Path(path).read_text())
            study, rows = saved["args"], saved["rows"]
        except (OSError, ValueError, KeyError) as error:
            raise SystemExit(f"--best-grid-builtins: {path} is not a best-row study's best_row.json ({error})") from None
        same_cfg = args.model == "uncond" or float(study.get("cfg") or 1.0) == float(args.cfg or 1.0)
        if study.get("model") != args.model or not same_cfg:
            raise SystemExit(f"--best-grid-builtins: {path} is the best-row study of model {study.get('model')} at "
                             f"CFG {study.get('cfg')}, this run is model {args.model} at CFG {args.cfg}")
        for row in rows:
            if row.get("kind") == "builtin" and row["nfe"] in args.nfe:
                if row["method"] not in comfy:
                    raise SystemExit(f"--best-grid-builtins: {row['method']} is not among ComfyUI's samplers here")
                chosen.setdefault(row["nfe"], {})[row["method"]] = float(row["rho"])
    missing = [nfe for nfe in args.nfe if nfe not in chosen]
    if missing:
        log(f"--best-grid-builtins: no best-row grids at NFE {missing}; the built-ins there are on the EDM grid only")
    return chosen


def multigrid_cost(multi, union_teacher_calls, reports, args):
    """Model calls of the multi-grid training against one training at the largest NFE, per solver."""
    largest = max(args.nfe)
    grid = edm_sigmas(largest)
    single_teacher = args.train * teacher_nfe_for(grid, substeps_for(grid, args.teacher_nfe))
    return {name: {"multi": union_teacher_calls + multi[name][1]["model_calls"],
                   "single_largest": single_teacher + reports[(name, largest)]["model_calls"], "largest_nfe": largest}
            for name in args.solvers}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=PRESETS, default="quick")
    parser.add_argument("--model", default=None,
                        help="demo model: 'cond' (class-conditional), 'uncond', or a weights file (default: the preset's)")
    parser.add_argument("--cfg", type=float, default=None, help="classifier-free guidance of the conditional model")
    parser.add_argument("--solvers", nargs="+", choices=SOLVERS, help="base solvers to correct (default: the preset's)")
    parser.add_argument("--nfe", type=int, nargs="+")
    parser.add_argument("--train", type=int, help="training trajectories (seeds 0..N-1)")
    parser.add_argument("--eval", type=int, help=f"evaluation samples (seeds from {EVAL_SEED_START})")
    parser.add_argument("--train-seed-start", type=int, default=0)
    parser.add_argument("--eval-seed-start", type=int, default=EVAL_SEED_START,
                        help=f"first evaluation seed ({CONFIRM_SEED_START}: the range that confirms a choice "
                             f"made on the default's results)")
    parser.add_argument("--teacher-nfe", type=int, help="Heun teacher used for training")
    parser.add_argument("--reference-nfe", type=int, help="Heun reference that scores RMSE (one grid for all NFE)")
    parser.add_argument("--fid-ref", type=int, help="Fashion-MNIST test images in the FID reference")
    parser.add_argument("--fid", action=argparse.BooleanOptionalAction, default=None,
                        help="Inception FID on the chosen rows (--no-fid: the bench's classifier metrics and RMSE only)")
    parser.add_argument("--builtins", nargs="*", help="extra ComfyUI samplers without a PAS row (needs the host)")
    parser.add_argument("--best-grid-builtins", nargs="+", metavar="BEST_ROW_JSON",
                        help="also every ComfyUI built-in on the EDM grid a best-row study picked for it at each NFE "
                             "(that study's best_row.json files, or make reproduce's docs/results/best_row_grids_*.json; "
                             "same model and CFG)")
    parser.add_argument("--no-comfy", action="store_true", help="plain rows from our solvers, not ComfyUI's functions")
    parser.add_argument("--fid-rows", choices=FID_POLICIES, help="which rows get FID (all get RMSE)")
    parser.add_argument("--fid-nfe", type=int, nargs="+", help="NFE whose rows get FID (default: every NFE)")
    parser.add_argument("--loss", default="l1", help="PAS fit loss")
    parser.add_argument("--learned", action=argparse.BooleanOptionalAction, help="rows on learned schedules")
    parser.add_argument("--multigrid", action=argparse.BooleanOptionalAction,
                        help="rows from one file trained on every NFE's grid")
    parser.add_argument("--n-basis", type=int, default=DEFAULT_N_BASIS, help="PAS basis vectors per corrected step")
    parser.add_argument("--rule", choices=RULE_CHOICES, default=AUTO_RULE,
                        help="acceptance rule of the PAS search (comfyui_pas.settings.ACCEPTANCE_RULES; auto: "
                             "each solver's)")
    parser.add_argument("--guard", choices=GUARDS, default=None,
                        help="replace the rule's held-out check (comfyui_pas.settings.GUARDS)")
    parser.add_argument("--min-held-out-gain", type=float, default=None,
                        help="replace the rule's minimum held-out RMSE gain (a fraction; 0.02 = 2%%)")
    parser.add_argument("--time-offsets", action="store_true",
                        help="train every PAS row with per-step time offsets (docs/method.md, section 11)")
    parser.add_argument("--offset-loss", choices=LOSSES, default=None,
                        help="with --time-offsets: the offsets' fit loss (default: SearchSettings.offset_loss)")
    parser.add_argument("--auto-default", choices=tuple(ACCEPTANCE_RULES), default=None,
                        help="with --rule auto: the rule for solvers without one of their own (rule studies)")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--no-call-cache", action="store_true",
                        help="make every model call again instead of reusing bit-identical ones (the same samples)")
    parser.add_argument("--save-samples", action="store_true", help="also write samples.safetensors")
    parser.add_argument("--out", default=None, help="output folder (default out/reproduce/<preset>)")
    parser.add_argument("--report", metavar="RESULTS_JSON",
                        help="only rebuild results.md (table and target checks) from a finished run's results.json")
    parser.add_argument("--summary", nargs="+", metavar="RESULTS_JSON",
                        help="only print one table over finished runs (make reproduce's settings)")
    args = parser.parse_args(argv)
    if args.report or args.summary:
        return args
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.no_fid = not args.fid
    if args.offset_loss is not None and not args.time_offsets:
        parser.error("--offset-loss needs --time-offsets")
    if args.min_held_out_gain is not None and not 0 <= args.min_held_out_gain < 1:
        parser.error(f"--min-held-out-gain must be in [0, 1), got {args.min_held_out_gain}")
    if args.best_grid_builtins and args.no_comfy:
        parser.error("--best-grid-builtins samples ComfyUI's functions: drop --no-comfy")
    if args.eval_seed_start < args.train_seed_start + args.train and args.train_seed_start < args.eval_seed_start + args.eval:
        parser.error("training and evaluation seeds overlap")
    return args


class Run:
    """One reproduction: the model, the seeds, the rows and their samples, shared by the steps below."""

    def __init__(self, args, rank, world):
        self.args, self.rank, self.world = args, rank, world
        self.log = print if rank == 0 else (lambda *a, **k: None)
        self.out = Path(args.out or f"out/reproduce/{args.preset}")
        # Rows share the start noise: each row's first call, and a PAS row's calls before its first corrected
        # step, repeat another row's bit for bit and are answered from the cache (exact, see CallCache).
        self.model = GuidedModel(load_model(args.model), args.cfg, cache=None if args.no_call_cache else CallCache())
        self.train_seeds = list(range(args.train_seed_start, args.train_seed_start + args.train))
        self.eval_seeds = list(range(args.eval_seed_start, args.eval_seed_start + args.eval))
        self.comfy = {}
        if not args.no_comfy:
            from train_tools.comfy_builtins import load_builtin_samplers
            self.comfy = load_builtin_samplers() or {}
            if not self.comfy:
                self.log("ComfyUI host not installed (make host): plain rows from our solvers, no extra built-ins")
        self.samples, self.rows, self.reports, self.extra = {}, [], {}, {}
        self.plain_finals, self.reused = {}, []  # (sampler, grid) -> samples; rows that took another's
        self.phase_seconds = defaultdict(float)

    @contextmanager
    def phase(self, name):
        """Adds the wall time of the block to phase `name` (logged at the end: where a run spends its time)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.phase_seconds[name] += time.perf_counter() - t0

    def seeds_map(self, run, seeds, phase="sampling"):
        with self.phase(phase):
            return map_seeds(run, seeds, self.args.batch, self.rank, self.world)

    def references(self):
        """The Heun reference on the evaluation seeds (RMSE) and on the reference seeds (the bench's teacher)."""
        steps = max(1, (self.args.reference_nfe + 1) // 2)
        grid = edm_sigmas(steps, self.model.sigma_min, self.model.sigma_max).float()
        self.samples[("teacher", 0)] = self.reference = self.seeds_map(teacher_run(self.model, grid, 0, True),
                                                                      self.eval_seeds, "references")
        seeds = list(range(REFERENCE_SEED_START, REFERENCE_SEED_START + self.args.eval))
        self.teacher_reference = self.seeds_map(teacher_run(self.model, grid, 0, True), seeds, "references")
        self.rows.append({"method": f"teacher (Heun {2 * steps} NFE)", "nfe": 0, "rmse": 0.0})

    def add_row(self, method, nfe, run, finals=None, **fields):
        """A row sampled by `run` on the evaluation seeds, or holding the given `finals`."""
        self.samples[(method, nfe)] = finals = self.seeds_map(run, self.eval_seeds) if finals is None else finals
        self.rows.append(dict(method=method, nfe=nfe, rmse=rmse(finals, self.reference), **fields))

    def add_plain_row(self, method, nfe, sampler, grid, **fields):
        """An uncorrected row: `sampler` (a name) on the sigmas `grid`, sampled once per run: a learned grid that is
        the karras grid a best-row study picked for that built-in shares that row's samples."""
        key = (sampler, tuple(grid.tolist()))
        if key in self.plain_finals:
            self.reused.append(f"{method}@{nfe}")
        else:
            run = builtin_run(self.comfy[sampler], self.model, grid) if sampler in self.comfy else pas_run(
                self.model, grid, sampler, None)
            self.plain_finals[key] = self.seeds_map(run, self.eval_seeds)
        self.add_row(method, nfe, None, finals=self.plain_finals[key], **fields)

    def add_pas_row(self, method, nfe, run, steps, **fields):
        """A PAS row; one that corrects no step is its base solver, whose samples it takes (no re-sampling)."""
        base = next((key for key in ((b, nfe) for b in base_rows(method)) if key in self.samples), None)
        shared = self.samples[base] if base is not None and not steps else None
        self.add_row(method, nfe, run, finals=shared, steps=steps, **fields)

    def train(self, sigmas, targets, tag):
        with self.phase("search"):
            return train_all(self.model, sigmas, targets, self.args.solvers, self.args, self.rank, self.world,
                             self.out, self.log, tag)

    def edm_rows(self, nfe, sigmas, extra_builtins):
        t0 = time.perf_counter()
        targets = self.seeds_map(teacher_run(self.model, sigmas, self.args.teacher_nfe, False),
                                 self.train_seeds, "training teacher").transpose(0, 1)
        teacher_seconds = time.perf_counter() - t0
        for name, (coords, report) in self.train(sigmas, targets, coords_tag(nfe)).items():
            self.reports[(name, nfe)] = report
            options = describe_solver(name, solver_options(name))
            self.add_plain_row(plain_label(name, name in self.comfy), nfe, name, sigmas, solver=options, steps=[],
                               params=0)
            self.add_pas_row(pas_label(name), nfe, pas_run(self.model, sigmas, name, coords), coords.steps,
                             solver=options, params=coords.n_parameters, teacher_s=teacher_seconds,
                             search_s=report["search_seconds"])
        for name in extra_builtins:
            self.add_plain_row(plain_label(name, True), nfe, name, sigmas)

    def best_grid_rows(self, nfe, choices):
        """ComfyUI's built-ins, each on the EDM grid (rho) a best-row study picked for it at this NFE."""
        for name, rho in sorted(choices.get(nfe, {}).items()):
            sigmas = edm_sigmas(nfe, self.model.sigma_min, self.model.sigma_max, rho=rho, append_zero=True).float()
            self.add_plain_row(best_grid_label(name, rho), nfe, name, sigmas, solver=f"best-row grid: rho {rho:g}",
                               sigmas=sigmas.tolist())

    def multigrid_rows(self, nfe, sigmas, multi):
        for name in self.args.solvers:
            coords = multi[name][0]
            self.add_pas_row(pas_label(name, MULTI_GRID), nfe, pas_run(self.model, sigmas, name, coords),
                             coords.entry_for(sigmas).steps, solver=coords.solver_label(),
                             params=coords.entry_for(sigmas).coordinates.numel())

    def learned_rows(self, nfe):
        """Each solver on its own learned schedule (the Trainer's `grid: learned`), plain and with PAS."""
        with self.phase("learned schedules"):
            schedules = learned_schedules(self.model, self.train_seeds, nfe, self.args.solvers, self.args.batch,
                                          self.rank, self.world)
        for name, schedule in schedules.items():
            self.log(f"    learned schedule, {name}, {nfe} steps ({schedule.report['chosen']}): "
                     f"{[round(v, 4) for v in schedule.sigmas.tolist()]}")
        grids = {name: schedule.sigmas.float() for name, schedule in schedules.items()}
        targets = {name: schedule.states for name, schedule in schedules.items()}
        for name, (coords, report) in self.train(grids, targets, coords_tag(nfe, LEARNED)).items():
            learned, label = grids[name], f"{coords.solver_label()}; grid {schedules[name].report['chosen']}"
            self.add_plain_row(plain_label(name, name in self.comfy, LEARNED), nfe, name, learned, solver=label,
                               steps=[], params=0, sigmas=learned.tolist())
            self.add_pas_row(pas_label(name, LEARNED), nfe, pas_run(self.model, learned, name, coords),
                             coords.steps, solver=label, params=coords.n_parameters,
                             search_s=report["search_seconds"])

    def fid(self):
        if self.args.no_fid:
            return {}, 0.0
        t0 = time.perf_counter()
        keys = [key for key in fid_keys(self.rows, self.args.fid_rows)
                if not self.args.fid_nfe or key[1] in (0, *self.args.fid_nfe)]
        scores = score_fid({key: self.samples[key] for key in keys}, self.args.fid_ref, self.rank, self.world)
        return scores, time.perf_counter() - t0


def main(argv=None):
    args = parse_args(argv)
    if args.summary:
        return print(runs_summary(args.summary))
    if args.report:
        return rewrite_report(args.report)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rank, world = init_distributed()
    started = time.perf_counter()
    run = Run(args, rank, world)
    extra = [name for name in (args.builtins or []) if name in run.comfy]
    best_grids = best_row_grids(args.best_grid_builtins, args, run.comfy, run.log) if args.best_grid_builtins else {}
    run.log(f"reproduce[{args.preset}]: NFE {args.nfe}, solvers {args.solvers}, {args.train} training trajectories, "
            f"{args.eval} evaluation seeds, teacher {args.teacher_nfe} NFE, {world} process(es)")
    run.references()
    with run.phase("multi-grid training"):
        multi = train_multigrid(run.model, run.train_seeds, args, rank, world, run.out, run.log) \
            if args.multigrid else None
    for nfe in args.nfe:
        sigmas = edm_sigmas(nfe, run.model.sigma_min, run.model.sigma_max).float()
        run.edm_rows(nfe, sigmas, extra)
        run.best_grid_rows(nfe, best_grids)
        if multi:
            run.multigrid_rows(nfe, sigmas, multi[0])
        if args.learned:
            run.learned_rows(nfe)
        run.log(f"  NFE {nfe} sampled ({time.perf_counter() - started:.0f} s)")
    run.extra["reused_samples"] = run.reused
    run.log(f"  {len(run.reused)} uncorrected rows repeat another row's sampler and grid, sampled once: {run.reused}")
    if multi:
        run.extra["multigrid_cost"] = multigrid_cost(multi[0], multi[1], run.reports, args)
        run.log(f"  multi-grid training cost: {run.extra['multigrid_cost']}")
    fid_scores, fid_seconds = run.fid()
    with run.phase("bench"):
        run.extra["bench"] = score_rows(run.rows, run.samples, run.teacher_reference, run.model, run.eval_seeds,
                                        rank, world)
    run.extra["phase_seconds"] = {name: round(seconds, 1) for name, seconds in run.phase_seconds.items()}
    if run.model.cache is not None:
        run.extra["repeated_calls"] = gathered_cache_summary(run.model.cache, rank, world)
        run.log(f"  sampling calls (rows, all processes) and those the call cache answered: "
                f"{run.extra['repeated_calls']}")
    run.log(f"  time by phase (s): {run.extra['phase_seconds']}")
    if rank == 0:
        finish(args, run.out, run.model, run.samples, run.rows, run.reports, started, fid_scores, fid_seconds,
               run.extra)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
