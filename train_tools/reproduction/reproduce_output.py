"""The reproduction's outputs: the quality bench on every row, the pictures, results.md and results.json."""
from __future__ import annotations

import json
import time

from comfyui_pas.plot import save_error_curve
from train_tools.data.guided import labels_for
from train_tools.reproduction.distributed import broadcast, gather_interleaved
from train_tools.reproduction.reproduce_report import base_rows, full_report, is_builtin, split_method


def score_rows(rows, samples, teacher_reference, model, eval_seeds, rank=0, world=1):
    """The quality bench on every row: classifier-feature FD and KID against the teacher's samples on other
    seeds and against the test images, class accuracy (conditional), RMSE against the reference, each with its
    95% interval; PAS rows get the paired difference to their uncorrected row, and each NFE the best PAS row
    (least FD to the teacher, at least one corrected step) against the best built-in, and the teacher's own
    samples against it (what a sampler without error would show on these seeds). Under torchrun every
    rank calls it and scores its share of the rows (the same resamples on every rank)."""
    from train_tools.bench_setup import data_features
    from train_tools.data.fashion_mnist import to_uint8
    from train_tools.evaluation.classifier import features
    from train_tools.evaluation.quality import Judge

    labels = labels_for(eval_seeds).numpy() if model.conditional else None
    judge = Judge(len(eval_seeds), {"teacher": features(to_uint8(teacher_reference)), "data": data_features()},
                  samples[("teacher", 0)], labels)
    first = {}  # a PAS row that corrects nothing holds its base row's samples: score them once
    for key, finals in samples.items():
        first.setdefault(id(finals), key)
    keys = list(dict.fromkeys(first.values()))
    mine = [judge.score(to_uint8(samples[key]), samples[key]) for key in keys[rank::world]]
    unique = dict(zip(keys, gather_interleaved(mine, len(keys), rank, world), strict=True))
    scored = {key: unique[first[id(finals)]] for key, finals in samples.items()}
    for row in rows:
        row["bench"] = {m: Judge.interval(scored[row_key(row)], m).as_dict() for m in scored[row_key(row)].boots}
        base = next((b for b in base_rows(row["method"]) if (b, row["nfe"]) in scored), None)
        if split_method(row["method"])[1] and base:
            row["vs_base"] = {m: Judge.difference(scored[row_key(row)], scored[(base, row["nfe"])], m).as_dict()
                              for m in ("fd_teacher", "fd_data", "rmse", "agree") if m in scored[row_key(row)].boots}
    best = {}
    for nfe in sorted({r["nfe"] for r in rows if r["nfe"] > 0}):
        pas = [r for r in rows if r["nfe"] == nfe and split_method(r["method"])[1] and r.get("steps")]
        comfy = [r for r in rows if r["nfe"] == nfe and is_builtin(r["method"])]
        if pas and comfy:
            a = min(pas, key=lambda r: r["bench"]["fd_teacher"]["value"])
            b = min(comfy, key=lambda r: r["bench"]["fd_teacher"]["value"])
            each = {c["method"]: {m: Judge.relative(scored[row_key(a)], scored[row_key(c)], m).as_dict()
                                  for m in ("fd_teacher", "fd_data", "rmse")} for c in comfy}
            # The teacher's own samples against the best built-in: the most any sampler can show at this n.
            teacher = {m: Judge.relative(scored[("teacher", 0)], scored[row_key(b)], m).as_dict()
                       for m in ("fd_teacher", "fd_data")}
            best[nfe] = {"pas": a["method"], "builtin": b["method"], **each[b["method"]], "each": each,
                         "teacher": teacher}
    return {"n": len(eval_seeds), "best_vs_builtin": best}


def comparison_picture(panels, title, count=16):
    """Grids of the same seeds side by side, one per (label, finals), each under its label."""
    from PIL import Image, ImageDraw

    from train_tools.data.fashion_mnist import image_grid, to_uint8

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
    from train_tools.data.fashion_mnist import image_grid, to_uint8

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

        save_file({f"{method}@{nfe}": images.clone() for (method, nfe), images in samples.items()},  # rows may share
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


def score_fid(samples, fid_ref, rank, world):
    """{sample key: FID}, each rank scoring its share of the keys; the Fashion-MNIST reference statistics
    are computed once (Inception pass split across ranks) and cached."""
    import numpy as np

    from train_tools.data.fashion_mnist import to_uint8
    from train_tools.evaluation import fid

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
