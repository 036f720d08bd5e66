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
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from comfyui_pas import edm_sigmas, sample_pas, train_pas
from comfyui_pas.plot import save_error_curve
from comfyui_pas.search import DEFAULT_N_BASIS, GUARDS
from comfyui_pas.teacher import teacher_states

EVAL_SEED_START = 1_000_000  # training seeds start at 0 and stay far below
# Sized for 2 CPU cores: Inception runs at ~3 images/s and each FID value spends 25-60 s in the
# 2048x2048 matrix square root, so the number of FID rows times the evaluation size sets the time.
PRESETS = {
    "quick": dict(nfe=[5], train=32, eval=100, teacher_nfe=100, reference_nfe=100, fid_ref=500,
                  builtins=["dpmpp_2m"], builtin_nfe=[5]),
    # ComfyUI's euler is our uncorrected euler (tests/host prove it), so it is not repeated here; its ipndm
    # runs order 4 (ours: order 3, the paper's PAS default).
    "full": dict(nfe=[4, 5, 6, 8, 10], train=128, eval=400, teacher_nfe=100, reference_nfe=200, fid_ref=10000,
                 builtins=["ipndm", "ipndm_v", "deis", "dpmpp_2m", "uni_pc", "res_multistep"],
                 builtin_nfe=[5, 6]),
}
SOLVERS = {"euler": ("euler", 1), "ipndm": ("ipndm", 3)}


# ---- sharding -----------------------------------------------------------------------------------
def init_distributed():
    """(rank, world) under torchrun, (0, 1) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        # Ranks wait for each other around rank 0's PAS search and the uneven FID shares: allow hours.
        dist.init_process_group("gloo", timeout=timedelta(hours=6))
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def gather_interleaved(local, count, rank, world):
    """Rank r holds items r, r + world, ...; every rank gets the list of all `count` items in order."""
    if world == 1:
        return list(local)
    gathered = [None] * world
    dist.all_gather_object(gathered, list(local))
    out = [None] * count
    for r, part in enumerate(gathered):
        for j, index in enumerate(range(r, count, world)):
            out[index] = part[j]
    return out


def map_seeds(fn, seeds, batch, rank, world):
    """fn(seed_list) -> tensor (len, ...), run on this rank's share of the seeds in batches; every rank
    gets the full result in seed order."""
    mine = seeds[rank::world]
    parts = [fn(mine[i:i + batch]) for i in range(0, len(mine), batch)]
    local = torch.cat(parts) if parts else torch.empty(0)
    return local if world == 1 else torch.stack(gather_interleaved(local, len(seeds), rank, world))


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
    return dict(zip(keys, gather_interleaved(scores, len(keys), rank, world)))


def broadcast(value, rank, world):
    if world == 1:
        return value
    holder = [value if rank == 0 else None]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


# ---- the run ------------------------------------------------------------------------------------
def noise(seeds):
    from train_tools.demo_model import seeded_noise

    return seeded_noise(list(seeds))


def teacher_run(model, sigmas, teacher_nfe, final_only):
    """seeds -> teacher states (seeds, steps+1, ...) or only the final states."""
    def run(seeds):
        states = teacher_states(model, noise(seeds) * sigmas[0], sigmas, teacher_nfe)[0]
        return states[-1] if final_only else states.transpose(0, 1)
    return run


def pas_run(model, sigmas, solver, order, coords):
    def run(seeds):
        return sample_pas(model, noise(seeds) * sigmas[0], sigmas, solver=solver, max_order=order, coords=coords)
    return run


def builtin_run(sampler, model, sigmas):
    @torch.no_grad()
    def run(seeds):
        return sampler(model, noise(seeds) * sigmas[0], sigmas, extra_args={}, disable=True)
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=PRESETS, default="quick")
    parser.add_argument("--model", default=None, help="demo-model weights (default: the bundled file)")
    parser.add_argument("--solvers", nargs="+", choices=SOLVERS, default=["euler", "ipndm"])
    parser.add_argument("--nfe", type=int, nargs="+")
    parser.add_argument("--train", type=int, help="training trajectories (seeds 0..N-1)")
    parser.add_argument("--eval", type=int, help=f"evaluation samples (seeds from {EVAL_SEED_START})")
    parser.add_argument("--train-seed-start", type=int, default=0)
    parser.add_argument("--eval-seed-start", type=int, default=EVAL_SEED_START)
    parser.add_argument("--teacher-nfe", type=int, help="Heun teacher used for training")
    parser.add_argument("--reference-nfe", type=int, help="Heun reference that scores RMSE (one grid for all NFE)")
    parser.add_argument("--fid-ref", type=int, help="Fashion-MNIST test images in the FID reference")
    parser.add_argument("--no-fid", action="store_true", help="RMSE only")
    parser.add_argument("--builtins", nargs="*", help="ComfyUI built-in samplers to add (needs the host)")
    parser.add_argument("--builtin-nfe", type=int, nargs="*")
    parser.add_argument("--n-basis", type=int, default=DEFAULT_N_BASIS, help="PAS basis vectors per corrected step")
    parser.add_argument("--guard", choices=GUARDS, default=GUARDS[0],
                        help="validation: accept a step only if held-out trajectories improve; none: the paper's rule")
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
    if args.eval_seed_start < args.train_seed_start + args.train and args.train_seed_start < args.eval_seed_start + args.eval:
        parser.error("training and evaluation seeds overlap")
    out = Path(args.out or f"out/reproduce/{args.preset}")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rank, world = init_distributed()
    log = print if rank == 0 else (lambda *a, **k: None)
    started = time.perf_counter()

    from train_tools.demo_model import load_demo_model
    model = load_demo_model(args.model)
    train_seeds = list(range(args.train_seed_start, args.train_seed_start + args.train))
    eval_seeds = list(range(args.eval_seed_start, args.eval_seed_start + args.eval))
    builtins = {}
    if args.builtins:
        from train_tools.comfy_builtins import load_builtin_samplers
        available = load_builtin_samplers()
        if available is None:
            log("ComfyUI host not installed (make host): built-in sampler rows skipped")
        else:
            builtins = {name: available[name] for name in args.builtins}
    log(f"reproduce[{args.preset}]: NFE {args.nfe}, {args.train} training trajectories, {args.eval} evaluation "
        f"seeds, teacher {args.teacher_nfe} NFE, {world} process(es)")

    samples, rows, reports = {}, [], {}
    steps = max(1, (args.reference_nfe + 1) // 2)
    reference_grid = edm_sigmas(steps, model.sigma_min, model.sigma_max).float()
    reference = map_seeds(teacher_run(model, reference_grid, 0, True), eval_seeds, args.batch, rank, world)
    samples[("teacher", 0)] = reference
    rows.append({"method": f"teacher (Heun {2 * steps} NFE)", "nfe": 0, "rmse": 0.0})
    for nfe in args.nfe:
        sigmas = edm_sigmas(nfe, model.sigma_min, model.sigma_max).float()
        t0 = time.perf_counter()
        targets = map_seeds(teacher_run(model, sigmas, args.teacher_nfe, False), train_seeds, args.batch, rank,
                            world).transpose(0, 1)
        teacher_seconds = time.perf_counter() - t0
        for name in args.solvers:
            solver, order = SOLVERS[name]
            coords, report = (None, None)
            if rank == 0:
                t1 = time.perf_counter()
                coords, report = train_pas(model, noise(train_seeds) * sigmas[0], sigmas, solver=solver,
                                           max_order=order, targets=targets, chunk_size=args.batch,
                                           n_basis=args.n_basis, guard=args.guard)
                report["teacher_seconds"] = teacher_seconds
                report["search_seconds"] = time.perf_counter() - t1
                coords.save(out / "coords" / f"{name}_nfe{nfe}.safetensors")
            coords = broadcast(coords, rank, world)
            reports[(name, nfe)] = report
            label = name if name == "euler" else f"ipndm{order}"
            for use_pas in (False, True):
                run = pas_run(model, sigmas, solver, order, coords if use_pas else None)
                key = (label + ("+PAS" if use_pas else ""), nfe)
                samples[key] = map_seeds(run, eval_seeds, args.batch, rank, world)
                rows.append({"method": key[0], "nfe": nfe, "rmse": rmse(samples[key], reference),
                             "steps": coords.steps if use_pas else [],
                             "params": coords.n_parameters if use_pas else 0,
                             "teacher_s": report["teacher_seconds"] if (use_pas and report) else None,
                             "search_s": report["search_seconds"] if (use_pas and report) else None})
        if nfe in (args.builtin_nfe or []):
            for name, fn in builtins.items():
                key = (f"comfy {name}", nfe)
                samples[key] = map_seeds(builtin_run(fn, model, sigmas), eval_seeds, args.batch, rank, world)
                rows.append({"method": key[0], "nfe": nfe, "rmse": rmse(samples[key], reference)})
        log(f"  NFE {nfe} sampled ({time.perf_counter() - started:.0f} s)")

    fid_scores, fid_seconds = {}, 0.0
    if not args.no_fid:
        t0 = time.perf_counter()
        fid_scores = score_fid(samples, args.fid_ref, rank, world)
        fid_seconds = time.perf_counter() - t0
    if rank == 0:
        finish(args, out, model, samples, rows, reports, started, fid_scores, fid_seconds)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


def rmse(a, b):
    return float((a.double() - b.double()).square().mean().sqrt())


def finish(args, out, model, samples, rows, reports, started, fid_scores, fid_seconds):
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
    for (name, nfe), report in reports.items():
        if report and nfe == max(args.nfe):
            save_error_curve(report, out / f"error_curve_{name}_nfe{nfe}.png",
                             title=f"{name}, NFE {nfe}: per-step L1 error vs teacher")
    if args.save_samples:
        from safetensors.torch import save_file

        save_file({f"{method}@{nfe}": images.contiguous() for (method, nfe), images in samples.items()},
                  str(out / "samples.safetensors"))
    table = full_report(rows, args)
    (out / "results.md").write_text(table + "\n")
    with open(out / "results.json", "w") as handle:
        json.dump({"args": vars(args), "rows": rows, "fid_seconds": fid_seconds,
                   "total_seconds": time.perf_counter() - started,
                   "model": getattr(model, "metadata", {})}, handle, indent=1)
    print(table)
    print(f"wrote {out}/results.md, results.json, grids and error curves ({time.perf_counter() - started:.0f} s, "
          f"FID {fid_seconds:.0f} s)")


def full_report(rows, args):
    return "\n\n".join([format_table(rows, args), format_targets(target_checks(rows, "fid"), "FID"),
                        format_targets(target_checks(rows, "rmse"), "RMSE vs the reference")])


def rewrite_report(results_json):
    """Re-judge a finished run: rebuild results.md (table and targets) beside its results.json and print it."""
    path = Path(results_json)
    saved = json.loads(path.read_text())
    report = full_report(saved["rows"], argparse.Namespace(**saved["args"]))
    (path.parent / "results.md").write_text(report + "\n")
    print(report)


def format_table(rows, args):
    fid_note = "no FID" if args.no_fid else f"FID of {args.eval} samples vs {args.fid_ref} Fashion-MNIST test images"
    lines = [f"Fashion-MNIST demo model; {fid_note}; RMSE vs a Heun {args.reference_nfe}-NFE reference on the same "
             f"seeds (training teacher: Heun ~{args.teacher_nfe} NFE on the refined student grid); PAS ({getattr(args, 'n_basis', DEFAULT_N_BASIS)} basis vectors, guard "
             f"{getattr(args, 'guard', GUARDS[0])}) trained on {args.train} trajectories (seeds {args.train_seed_start}+), evaluated on seeds "
             f"{args.eval_seed_start}+. NFE 0 = the reference solution.", "",
             "| NFE | method | FID | RMSE | corrected steps | params | teacher s | search s |",
             "|---|---|---|---|---|---|---|---|"]
    for row in sorted(rows, key=lambda r: r["nfe"]):
        fid_text = f"{row['fid']:.2f}" if "fid" in row else "-"
        timing = [f"{row[k]:.1f}" if row.get(k) is not None else "" for k in ("teacher_s", "search_s")]
        lines.append(f"| {row['nfe']} | {row['method']} | {fid_text} | {row['rmse']:.4f} | {row.get('steps', '')} | "
                     f"{row.get('params', '')} | {timing[0]} | {timing[1]} |")
    return "\n".join(lines)



def _change(new, old):
    return (new - old) / old


def target_checks(rows, metric="fid"):
    """The issue's targets, judged from the rows: [(target, met, evidence)]. Rows without the metric (no
    FID run, or a solver/NFE not in the run) are left out."""
    value = {(r["method"], r["nfe"]): r[metric] for r in rows if metric in r}
    digits = 2 if metric == "fid" else 4
    nfes = sorted({nfe for _, nfe in value if nfe > 0})
    checks = []
    euler = [(n, value[("euler", n)], value[("euler+PAS", n)]) for n in nfes
             if ("euler", n) in value and ("euler+PAS", n) in value]
    if euler:
        checks.append(("euler+PAS improves on euler at every NFE", all(p < e for _, e, p in euler),
                       ", ".join(f"NFE {n}: {e:.{digits}f} -> {p:.{digits}f} ({_change(p, e):+.0%})" for n, e, p in euler)))
        late = [(n, e, p) for n, e, p in euler if n in (8, 10)]
        if late:
            checks.append(("euler+PAS at least halves euler at NFE 8-10", all(p <= e / 2 for _, e, p in late),
                           ", ".join(f"NFE {n}: {_change(p, e):+.0%}" for n, e, p in late)))
    ipndm = [(n, value[(m, n)], value[(m + "+PAS", n)]) for n in nfes for m in sorted({k for k, _ in value})
             if m.startswith("ipndm") and not m.endswith("+PAS") and (m + "+PAS", n) in value and (m, n) in value]
    if ipndm:
        checks.append(("ipndm+PAS is never worse than ipndm", all(p <= i for _, i, p in ipndm),
                       ", ".join(f"NFE {n}: {i:.{digits}f} -> {p:.{digits}f}" for n, i, p in ipndm)))
    for n in (5, 6):
        pas = {m: v for (m, k), v in value.items() if k == n and m.endswith("+PAS")}
        comfy = {m: v for (m, k), v in value.items() if k == n and m.startswith("comfy ")}
        if pas and comfy:
            best_pas = min(pas, key=pas.get)
            best_comfy = min(comfy, key=comfy.get)
            checks.append((f"at NFE {n} the best PAS row beats every ComfyUI built-in",
                           pas[best_pas] < comfy[best_comfy],
                           f"{best_pas} {pas[best_pas]:.{digits}f} vs {best_comfy} {comfy[best_comfy]:.{digits}f}"))
    return checks


def format_targets(checks, metric="FID"):
    if not checks:
        return f"Targets: no {metric} rows to judge."
    lines = [f"Targets, judged on {metric}:", ""]
    lines += [f"* {'met' if met else 'MISSED'}: {target} ({evidence})" for target, met, evidence in checks]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
