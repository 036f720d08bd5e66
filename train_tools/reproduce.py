"""Reproduce PAS offline on the bundled Fashion-MNIST model: FID (pytorch-fid) and RMSE vs the teacher.

Per-seed noise, teacher trajectories, PAS search per solver and NFE, then sampling with and without PAS
on held-out seeds (never overlapping the training seeds), ComfyUI's built-in samplers on the same model,
sigmas and seeds when the host is installed. Writes results.json, results.md, sample grids and the
per-step error figure; prints the table. Shards seeds across processes under torchrun (gloo).

    python -m train_tools.reproduce --preset quick
    torchrun --nproc-per-node 2 -m train_tools.reproduce --preset full
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist

from comfyui_pas import edm_sigmas, learn_schedule, sample_pas, train_pas
from comfyui_pas.grids import teacher_substeps as substeps_for
from comfyui_pas.plot import save_error_curve
from comfyui_pas.schedule import (
    DEFAULT_CANDIDATES,
    DEFAULT_TEACHER_SUBSTEPS,
    CandidateTeacher,
    candidate_grid,
)
from comfyui_pas.search import DEFAULT_N_BASIS, GUARDS, union_grid
from comfyui_pas.solvers import SOLVERS, describe_solver, solver_options
from comfyui_pas.teacher import teacher_nfe_for, teacher_states
from train_tools.distributed import broadcast, gather_interleaved, init_distributed, map_seeds
from train_tools.guided import GuidedModel, labels_for
from train_tools.metrics import rmse
from train_tools.reproduce_report import (
    FID_POLICIES,
    LEARNED,
    MULTI_GRID,
    base_rows,
    fid_keys,
    full_report,
    is_builtin,
    pas_label,
    plain_label,
    rewrite_report,
    split_method,
)
from train_tools.seeds import EVAL_SEED_START, REFERENCE_SEED_START

# Sized for 2 CPU cores: Inception runs at ~3 images/s and each FID value spends 25-60 s in the
# 2048x2048 matrix square root, so the number of FID rows times the evaluation size sets the time.
# Every solver's uncorrected row is ComfyUI's own function (tests/host prove ours equal to it); uni_pc has no
# PAS counterpart (see docs/solvers.md). Every row gets RMSE; which get FID: see reproduce_report.fid_keys.
PRESETS = {
    "quick": dict(nfe=[5], train=32, eval=200, teacher_nfe=48, reference_nfe=35, fid_ref=500, fid=False,
                  model="cond", cfg=4.0, solvers=["euler", "deis", "dpmpp_2m"], builtins=[], fid_rows="best",
                  learned=True, multigrid=False),
    "full": dict(nfe=[4, 5, 6, 8, 10], train=128, eval=400, teacher_nfe=100, reference_nfe=200, fid_ref=10000, fid=True,
                 model="cond", cfg=4.0, solvers=list(SOLVERS), builtins=["uni_pc"], fid_rows="contenders",
                 fid_nfe=[4, 5, 6], learned=True, multigrid=True),
}



def load_model(name):
    """A bundled demo model by name ('cond', 'uncond') or a weights file."""
    from train_tools.bench_setup import MODELS
    from train_tools.demo_model import DEFAULT_WEIGHTS, load_demo_model

    return load_demo_model(DEFAULT_WEIGHTS.parent / MODELS[name] if name in MODELS else name)


def score_fid(samples, fid_ref, rank, world):
    """{sample key: FID}, each rank scoring its share of the keys; the Fashion-MNIST reference statistics
    are computed once (Inception pass split across ranks) and cached."""
    import numpy as np

    from train_tools import fid
    from train_tools.fashion_mnist import to_uint8

    keys = list(samples)
    # Features first: while they run, a reference being cached by another process can finish.
    mine = {key: fid.statistics(fid.features(to_uint8(samples[key]))) for key in keys[rank::world]}

    def extract(images):
        local = fid.features(images[rank::world]) if rank < len(images) else np.empty((0, 2048))
        return np.stack(gather_interleaved(local, len(images), rank, world))

    cached = broadcast(fid.reference_path(fid_ref).is_file(), rank, world)
    ref = fid.reference_stats(fid_ref) if cached else fid.reference_stats(fid_ref, extract=extract, save=rank == 0)
    scores = [fid.fid_from_stats(stats, ref) for stats in mine.values()]
    return dict(zip(keys, gather_interleaved(scores, len(keys), rank, world), strict=True))


def broadcast_from(value, source, rank, world):
    """The value of rank `source` on every rank."""
    if world == 1:
        return value
    holder = [value if rank == source else None]
    dist.broadcast_object_list(holder, src=source)
    return holder[0]


# ---- the run ------------------------------------------------------------------------------------
def noise(seeds):
    from train_tools.demo_model import LATENT_SHAPE
    from train_tools.seeds import seeded_noise

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


def train_all(model, sigmas, targets, solvers, args, rank, world, out, log, tag):
    """PAS for every solver on one grid (or a list of grids), solver i trained on rank i % world; every rank
    gets all coords; rank 0 saves them as coords/<solver>_<tag>.safetensors."""
    trained = {}
    for index, name in enumerate(solvers):
        result = None
        if index % world == rank:
            t1 = time.perf_counter()
            start = sigmas[0] if isinstance(sigmas, torch.Tensor) else sigmas[0][0]
            seeds = range(args.train_seed_start, args.train_seed_start + args.train)
            coords, report = train_pas(model, noise(seeds) * start, sigmas, solver=name, targets=targets,
                                       chunk_size=args.batch, n_basis=args.n_basis, guard=args.guard, loss=args.loss,
                                       per_sample_args={"class_labels": labels_for(seeds)})
            report["search_seconds"] = time.perf_counter() - t1
            result = (coords, report)
        trained[name] = result
    for index, name in enumerate(solvers):
        trained[name] = broadcast_from(trained[name], index % world, rank, world)
        if rank == 0:
            trained[name][0].save(out / "coords" / f"{name}_{tag}.safetensors")
            log(f"    {name} ({tag}): corrected steps {[g.steps for g in trained[name][0].grids]}")
    return trained


def candidate_teacher(model, seeds, args, rank, world):
    """One Heun teacher over the learned schedules' candidate grid, sharded over the seeds (every NFE and solver
    learns from it: learn_schedule's local objective needs no further model call)."""
    grid = candidate_grid(model.sigma_min, model.sigma_max, DEFAULT_CANDIDATES, False)

    def run(batch):
        teacher = CandidateTeacher.run(model.bind(batch), noise(batch) * grid[0].float(), grid,
                                       DEFAULT_TEACHER_SUBSTEPS)
        return torch.cat([teacher.states, teacher.denoised]).transpose(0, 1)

    both = map_seeds(run, seeds, args.batch, rank, world).transpose(0, 1)
    return CandidateTeacher(grid, both[:len(grid)], both[len(grid):])


def train_multigrid(model, seeds, args, rank, world, out, log):
    """One file per solver for every NFE's grid from one teacher run over their union; and the model calls of
    that training next to one training at the largest NFE (teacher + search, counted)."""
    grids = [edm_sigmas(n, model.sigma_min, model.sigma_max).float() for n in args.nfe]
    union = union_grid(grids)
    states = map_seeds(teacher_run(model, union.float(), args.teacher_nfe, False), seeds, args.batch, rank,
                       world).transpose(0, 1)
    position = {value: index for index, value in enumerate(union.float().double().tolist())}
    targets = [states[[position[v] for v in grid.double().tolist()]] for grid in grids]
    multi = train_all(model, grids, targets, args.solvers, args, rank, world, out, log, "multigrid")
    return multi, len(seeds) * teacher_nfe_for(union, substeps_for(union, args.teacher_nfe))


def multigrid_cost(multi, union_teacher_calls, reports, args):
    """Model calls of the multi-grid training against one training at the largest NFE, per solver."""
    largest = max(args.nfe)
    grid = edm_sigmas(largest)
    single_teacher = args.train * teacher_nfe_for(grid, substeps_for(grid, args.teacher_nfe))
    return {name: {"multi": union_teacher_calls + multi[name][1]["model_calls"],
                   "single_largest": single_teacher + reports[(name, largest)]["model_calls"], "largest_nfe": largest}
            for name in args.solvers}


def main(argv=None):
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
    parser.add_argument("--eval-seed-start", type=int, default=EVAL_SEED_START)
    parser.add_argument("--teacher-nfe", type=int, help="Heun teacher used for training")
    parser.add_argument("--reference-nfe", type=int, help="Heun reference that scores RMSE (one grid for all NFE)")
    parser.add_argument("--fid-ref", type=int, help="Fashion-MNIST test images in the FID reference")
    parser.add_argument("--fid", action=argparse.BooleanOptionalAction, default=None,
                        help="Inception FID on the chosen rows (--no-fid: the bench's classifier metrics and RMSE only)")
    parser.add_argument("--builtins", nargs="*", help="extra ComfyUI samplers without a PAS row (needs the host)")
    parser.add_argument("--no-comfy", action="store_true", help="plain rows from our solvers, not ComfyUI's functions")
    parser.add_argument("--fid-rows", choices=FID_POLICIES, help="which rows get FID (all get RMSE)")
    parser.add_argument("--fid-nfe", type=int, nargs="+", help="NFE whose rows get FID (default: every NFE)")
    parser.add_argument("--loss", default="l1", help="PAS fit loss")
    parser.add_argument("--learned", action=argparse.BooleanOptionalAction, help="rows on learned schedules")
    parser.add_argument("--multigrid", action=argparse.BooleanOptionalAction,
                        help="rows from one file trained on every NFE's grid")
    parser.add_argument("--n-basis", type=int, default=DEFAULT_N_BASIS, help="PAS basis vectors per corrected step")
    parser.add_argument("--guard", choices=GUARDS, default=GUARDS[0],
                        help="held-out check of each step (comfyui_pas.search.GUARDS); none: the paper's rule")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--save-samples", action="store_true", help="also write samples.safetensors")
    parser.add_argument("--out", default=None, help="output folder (default out/reproduce/<preset>)")
    parser.add_argument("--report", metavar="RESULTS_JSON",
                        help="only rebuild results.md (table and target checks) from a finished run's results.json")
    args = parser.parse_args(argv)
    if args.report:
        return rewrite_report(args.report)
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.no_fid = not args.fid
    if args.eval_seed_start < args.train_seed_start + args.train and args.train_seed_start < args.eval_seed_start + args.eval:
        parser.error("training and evaluation seeds overlap")
    out = Path(args.out or f"out/reproduce/{args.preset}")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rank, world = init_distributed()
    log = print if rank == 0 else (lambda *a, **k: None)
    started = time.perf_counter()

    model = GuidedModel(load_model(args.model), args.cfg)
    train_seeds = list(range(args.train_seed_start, args.train_seed_start + args.train))
    eval_seeds = list(range(args.eval_seed_start, args.eval_seed_start + args.eval))
    comfy = {}
    if not args.no_comfy:
        from train_tools.comfy_builtins import load_builtin_samplers
        comfy = load_builtin_samplers() or {}
        if not comfy:
            log("ComfyUI host not installed (make host): plain rows from our solvers, no extra built-ins")
    extra = {name: comfy[name] for name in (args.builtins or []) if name in comfy}
    log(f"reproduce[{args.preset}]: NFE {args.nfe}, solvers {args.solvers}, {args.train} training trajectories, "
        f"{args.eval} evaluation seeds, teacher {args.teacher_nfe} NFE, {world} process(es)")

    samples, rows, reports = {}, [], {}
    steps = max(1, (args.reference_nfe + 1) // 2)
    reference_grid = edm_sigmas(steps, model.sigma_min, model.sigma_max).float()
    reference = map_seeds(teacher_run(model, reference_grid, 0, True), eval_seeds, args.batch, rank, world)
    reference_seeds = list(range(REFERENCE_SEED_START, REFERENCE_SEED_START + args.eval))
    teacher_reference = map_seeds(teacher_run(model, reference_grid, 0, True), reference_seeds, args.batch, rank, world)
    samples[("teacher", 0)] = reference
    rows.append({"method": f"teacher (Heun {2 * steps} NFE)", "nfe": 0, "rmse": 0.0})

    def add_row(method, nfe, run, **fields):
        samples[(method, nfe)] = map_seeds(run, eval_seeds, args.batch, rank, world)
        rows.append(dict(method=method, nfe=nfe, rmse=rmse(samples[(method, nfe)], reference), **fields))

    train_x = noise(train_seeds) * model.sigma_max
    extra_info = {}
    candidates = candidate_teacher(model, train_seeds, args, rank, world) if args.learned else None
    multi = None
    if args.multigrid:
        multi, union_teacher_calls = train_multigrid(model, train_seeds, args, rank, world, out, log)

    for nfe in args.nfe:
        sigmas = edm_sigmas(nfe, model.sigma_min, model.sigma_max).float()
        t0 = time.perf_counter()
        targets = map_seeds(teacher_run(model, sigmas, args.teacher_nfe, False), train_seeds, args.batch, rank,
                            world).transpose(0, 1)
        teacher_seconds = time.perf_counter() - t0
        trained = train_all(model, sigmas, targets, args.solvers, args, rank, world, out, log, f"nfe{nfe}")
        for name in args.solvers:
            coords, report = trained[name]
            reports[(name, nfe)] = report
            options = describe_solver(name, solver_options(name))
            plain = builtin_run(comfy[name], model, sigmas) if name in comfy else pas_run(model, sigmas, name, None)
            add_row(plain_label(name, name in comfy), nfe, plain, solver=options, steps=[], params=0)
            add_row(pas_label(name), nfe, pas_run(model, sigmas, name, coords), solver=options, steps=coords.steps,
                    params=coords.n_parameters, teacher_s=teacher_seconds, search_s=report["search_seconds"])
        for name, fn in extra.items():
            add_row(plain_label(name, True), nfe, builtin_run(fn, model, sigmas))
        if multi:
            for name in args.solvers:
                coords = multi[name][0]
                add_row(pas_label(name, MULTI_GRID), nfe, pas_run(model, sigmas, name, coords),
                        solver=coords.solver_label(), steps=coords.entry_for(sigmas).steps,
                        params=coords.entry_for(sigmas).coordinates.numel())
        if candidates is not None:
            learned, schedule = learn_schedule(model, train_x, nfe, teacher=candidates)  # no model call
            learned = learned.float()
            log(f"    learned schedule, {nfe} steps: {[round(v, 4) for v in learned.tolist()]}")
            trained = train_all(model, learned, schedule["targets"], args.solvers, args, rank, world, out, log,
                                f"learned_nfe{nfe}")
            for name in args.solvers:
                coords, report = trained[name]
                plain = builtin_run(comfy[name], model, learned) if name in comfy else pas_run(model, learned, name, None)
                add_row(plain_label(name, name in comfy, LEARNED), nfe, plain, solver=coords.solver_label(),
                        steps=[], params=0, sigmas=learned.tolist())
                add_row(pas_label(name, LEARNED), nfe, pas_run(model, learned, name, coords),
                        solver=coords.solver_label(), steps=coords.steps, params=coords.n_parameters,
                        search_s=report["search_seconds"])
        log(f"  NFE {nfe} sampled ({time.perf_counter() - started:.0f} s)")

    if multi:
        extra_info["multigrid_cost"] = multigrid_cost(multi, union_teacher_calls, reports, args)
        log(f"  multi-grid training cost: {extra_info['multigrid_cost']}")
    fid_scores, fid_seconds = {}, 0.0
    if not args.no_fid:
        t0 = time.perf_counter()
        keys = [key for key in fid_keys(rows, args.fid_rows) if not args.fid_nfe or key[1] in (0, *args.fid_nfe)]
        fid_scores = score_fid({key: samples[key] for key in keys}, args.fid_ref, rank, world)
        fid_seconds = time.perf_counter() - t0
    if rank == 0:
        t0 = time.perf_counter()
        extra_info["bench"] = score_rows(rows, samples, teacher_reference, model, eval_seeds)
        extra_info["bench_seconds"] = time.perf_counter() - t0
        finish(args, out, model, samples, rows, reports, started, fid_scores, fid_seconds, extra_info)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


def score_rows(rows, samples, teacher_reference, model, eval_seeds):
    """The quality bench on every row: classifier-feature FD and KID against the teacher's samples on other
    seeds and against the test images, class accuracy (conditional), RMSE against the reference, each with its
    95% interval; PAS rows get the paired difference to their uncorrected row, and each NFE the best PAS row
    (least FD to the teacher, at least one corrected step) against the best built-in."""
    from train_tools.bench_setup import data_features
    from train_tools.classifier import features
    from train_tools.fashion_mnist import to_uint8
    from train_tools.quality import Judge

    labels = labels_for(eval_seeds).numpy() if model.conditional else None
    judge = Judge(len(eval_seeds), {"teacher": features(to_uint8(teacher_reference)), "data": data_features()},
                  samples[("teacher", 0)], labels)
    scored = {key: judge.score(to_uint8(finals), finals) for key, finals in samples.items()}
    for row in rows:
        row["bench"] = {m: Judge.interval(scored[row_key(row)], m).as_dict() for m in scored[row_key(row)].boots}
        base = next((b for b in base_rows(row["method"]) if (b, row["nfe"]) in scored), None)
        if split_method(row["method"])[1] and base:
            row["vs_base"] = {m: Judge.difference(scored[row_key(row)], scored[(base, row["nfe"])], m).as_dict()
                              for m in ("fd_teacher", "fd_data", "rmse")}
    best = {}
    for nfe in sorted({r["nfe"] for r in rows if r["nfe"] > 0}):
        pas = [r for r in rows if r["nfe"] == nfe and split_method(r["method"])[1] and r.get("steps")]
        comfy = [r for r in rows if r["nfe"] == nfe and is_builtin(r["method"])]
        if pas and comfy:
            a = min(pas, key=lambda r: r["bench"]["fd_teacher"]["value"])
            b = min(comfy, key=lambda r: r["bench"]["fd_teacher"]["value"])
            best[nfe] = {"pas": a["method"], "builtin": b["method"],
                         **{m: Judge.relative(scored[row_key(a)], scored[row_key(b)], m).as_dict()
                            for m in ("fd_teacher", "fd_data", "rmse")}}
    return {"n": len(eval_seeds), "best_vs_builtin": best}


def comparison_picture(panels, title, count=16):
    """Grids of the same seeds side by side, one per (label, finals), each under its label."""
    from PIL import Image, ImageDraw

    from train_tools.demo_model import image_grid
    from train_tools.fashion_mnist import to_uint8

    grids = [image_grid(to_uint8(finals[:count]), 4, 4) for _, finals in panels]
    width, height, top = grids[0].width, grids[0].height, 28
    canvas = Image.new("L", (len(grids) * (width + 8) + 8, height + top + 8), 255)
    draw = ImageDraw.Draw(canvas)
    for i, ((label, _), grid) in enumerate(zip(panels, grids, strict=True)):
        canvas.paste(grid, (8 + i * (width + 8), top))
        draw.text((8 + i * (width + 8), 6), f"{label} ({title})" if i else label, fill=0)
    return canvas


def row_key(row):
    return ("teacher", 0) if row["nfe"] == 0 else (row["method"], row["nfe"])


def finish(args, out, model, samples, rows, reports, started, fid_scores, fid_seconds, extra=None):
    from train_tools.demo_model import image_grid
    from train_tools.fashion_mnist import to_uint8

    out.mkdir(parents=True, exist_ok=True)
    for row in rows:
        key = ("teacher", 0) if row["method"].startswith("teacher") else (row["method"], row["nfe"])
        if key in fid_scores:
            row["fid"] = fid_scores[key]
    for (method, nfe), images in samples.items():
        if nfe in (0, 5, max(args.nfe)):
            name = method.replace(" ", "_").replace("+", "_").replace("(", "").replace(")", "")
            image_grid(to_uint8(images[:64]), 8, 8).save(out / f"grid_{name}_nfe{nfe}.png")
    for nfe, best in (extra or {}).get("bench", {}).get("best_vs_builtin", {}).items():
        panels = [("teacher", samples[("teacher", 0)]), (best["builtin"], samples[(best["builtin"], nfe)]),
                  (best["pas"], samples[(best["pas"], nfe)])]
        comparison_picture(panels, f"NFE {nfe}").save(out / f"compare_nfe{nfe}.png")
    for (name, nfe), report in reports.items():
        if report and nfe == max(args.nfe):
            save_error_curve(report, out / f"error_curve_{name}_nfe{nfe}.png",
                             title=f"{name}, NFE {nfe}: per-step L1 error vs teacher")
    if args.save_samples:
        from safetensors.torch import save_file

        save_file({f"{method}@{nfe}": images.contiguous() for (method, nfe), images in samples.items()},
                  str(out / "samples.safetensors"))
    table = full_report(rows, args, extra)
    (out / "results.md").write_text(table + "\n")
    with open(out / "results.json", "w") as handle:
        json.dump({"args": vars(args), "rows": rows, "fid_seconds": fid_seconds, "extra": extra or {},
                   "total_seconds": time.perf_counter() - started,
                   "model": getattr(model, "metadata", {})}, handle, indent=1)
    print(table)
    print(f"wrote {out}/results.md, results.json, grids and error curves ({time.perf_counter() - started:.0f} s, "
          f"FID {fid_seconds:.0f} s)")


if __name__ == "__main__":
    main()
