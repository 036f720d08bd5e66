"""The reproduction's report: row labels, which rows get FID, the Markdown table, the summary of the best
PAS row against the best built-in, and the issues' targets judged from the rows (met / MISSED)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from comfyui_pas.search import DEFAULT_N_BASIS, GUARDS


def pas_label(solver: str) -> str:
    return f"{solver}+PAS"


def plain_label(solver: str, comfy: bool) -> str:
    return f"comfy {solver}" if comfy else solver


def base_of(method: str) -> str:
    """'deis+PAS' -> 'deis'."""
    return method[:-len("+PAS")] if method.endswith("+PAS") else method


def fid_keys(rows, policy):
    """The (method, nfe) keys that get FID: every row, or the teacher, every built-in and the two PAS rows of
    lowest RMSE at each NFE."""
    keys = [("teacher", 0) if r["nfe"] == 0 else (r["method"], r["nfe"]) for r in rows]
    if policy == "all":
        return keys
    chosen = [("teacher", 0)] + [(r["method"], r["nfe"]) for r in rows if r["method"].startswith("comfy ")]
    for nfe in sorted({r["nfe"] for r in rows if r["nfe"] > 0}):
        pas = sorted((r for r in rows if r["nfe"] == nfe and r["method"].endswith("+PAS")), key=lambda r: r["rmse"])
        chosen += [(r["method"], nfe) for r in pas[:2]]
    return [key for key in keys if key in chosen]


def full_report(rows, args):
    return "\n\n".join([format_table(rows, args), "Best PAS row against the best built-in:", summary_table(rows),
                        format_targets(target_checks(rows, "fid"), "FID"),
                        format_targets(target_checks(rows, "rmse"), "RMSE vs the reference")])


def rewrite_report(results_json):
    """Re-judge a finished run: rebuild results.md (table and targets) beside its results.json and print it."""
    path = Path(results_json)
    saved = json.loads(path.read_text())
    report = full_report(saved["rows"], argparse.Namespace(**saved["args"]))
    (path.parent / "results.md").write_text(report + "\n")
    print(report)


def format_table(rows, args):
    fid_note = "no FID" if args.no_fid else (f"FID of {args.eval} samples vs {args.fid_ref} Fashion-MNIST test images "
                                             f"({getattr(args, 'fid_rows', 'all')} rows)")
    lines = [f"Fashion-MNIST demo model; {fid_note}; RMSE vs a Heun {args.reference_nfe}-NFE reference on the same "
             f"seeds (training teacher: Heun ~{args.teacher_nfe} NFE on the refined student grid); PAS ({getattr(args, 'n_basis', DEFAULT_N_BASIS)} basis vectors, {getattr(args, 'loss', 'l1')} fit, guard "
             f"{getattr(args, 'guard', GUARDS[0])}) trained on {args.train} trajectories (seeds {args.train_seed_start}+), evaluated on seeds "
             f"{args.eval_seed_start}+. NFE 0 = the reference solution.", "",
             "| NFE | method | solver | FID | RMSE | corrected steps | params | teacher s | search s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in sorted(rows, key=lambda r: r["nfe"]):
        fid_text = f"{row['fid']:.2f}" if "fid" in row else "-"
        timing = [f"{row[k]:.1f}" if row.get(k) is not None else "" for k in ("teacher_s", "search_s")]
        lines.append(f"| {row['nfe']} | {row['method']} | {row.get('solver', '')} | {fid_text} | {row['rmse']:.4f} | "
                     f"{row.get('steps', '')} | "
                     f"{row.get('params', '')} | {timing[0]} | {timing[1]} |")
    return "\n".join(lines)



def _change(new, old):
    return (new - old) / old


def target_checks(rows, metric="fid"):
    """The issue's targets, judged from the rows: [(target, met, evidence)]. Rows without the metric (no
    FID run, or a row not scored) are left out."""
    value = {(r["method"], r["nfe"]): r[metric] for r in rows if metric in r}
    digits = 2 if metric == "fid" else 4
    nfes = sorted({nfe for _, nfe in value if nfe > 0})
    checks = []
    pairs = []  # (nfe, base method, base value, PAS value)
    for (method, nfe), corrected in sorted(value.items(), key=lambda item: (item[0][1], item[0][0])):
        if not method.endswith("+PAS"):
            continue
        solver = base_of(method)
        for base in (plain_label(solver, True), plain_label(solver, False)):
            if (base, nfe) in value:
                pairs.append((nfe, method, value[(base, nfe)], corrected))
                break
    if pairs:
        worse = [f"{m} NFE {n}: {b:.{digits}f} -> {p:.{digits}f}" for n, m, b, p in pairs if p > b]
        checks.append(("every solver+PAS is never worse than the same solver uncorrected", not worse,
                       "; ".join(worse) if worse else f"{len(pairs)} pairs, none worse"))
    for n in nfes:
        pas = {m: v for (m, k), v in value.items() if k == n and m.endswith("+PAS")}
        comfy = {m: v for (m, k), v in value.items() if k == n and m.startswith("comfy ")}
        if pas and comfy:
            best_pas, best_comfy = min(pas, key=pas.get), min(comfy, key=comfy.get)
            margin = 1 - pas[best_pas] / comfy[best_comfy]
            wanted = 0.10 if metric == "rmse" else 0.0
            target = f"at NFE {n} the best PAS row beats every ComfyUI built-in" + (
                " by at least 10%" if wanted else "")
            checks.append((target, margin > wanted,
                           f"{best_pas} {pas[best_pas]:.{digits}f} vs {best_comfy} {comfy[best_comfy]:.{digits}f} "
                           f"({-margin:+.1%})"))
    return checks


def summary_table(rows):
    """Best PAS row against the best built-in at each NFE, on FID (where scored) and on RMSE."""
    lines = ["| NFE | metric | best PAS row | value | best built-in | value | change |", "|---|---|---|---|---|---|---|"]
    for nfe in sorted({r["nfe"] for r in rows if r["nfe"] > 0}):
        for metric, digits in (("fid", 2), ("rmse", 4)):
            pas = [r for r in rows if r["nfe"] == nfe and r["method"].endswith("+PAS") and metric in r]
            comfy = [r for r in rows if r["nfe"] == nfe and r["method"].startswith("comfy ") and metric in r]
            if not pas or not comfy:
                continue
            best_pas, best_comfy = min(pas, key=lambda r: r[metric]), min(comfy, key=lambda r: r[metric])
            change = best_pas[metric] / best_comfy[metric] - 1
            lines.append(f"| {nfe} | {metric.upper()} | {best_pas['method']} | {best_pas[metric]:.{digits}f} | "
                         f"{best_comfy['method']} | {best_comfy[metric]:.{digits}f} | {change:+.1%} |")
    return "\n".join(lines) if len(lines) > 2 else "No built-in rows to compare."


def format_targets(checks, metric="FID"):
    if not checks:
        return f"Targets: no {metric} rows to judge."
    lines = [f"Targets, judged on {metric}:", ""]
    lines += [f"* {'met' if met else 'MISSED'}: {target} ({evidence})" for target, met, evidence in checks]
    return "\n".join(lines)
