"""The reproduction's report: row labels, which rows get FID, the Markdown table, the summary of the best
PAS row against the best built-in, and the issues' targets judged from the rows (met / MISSED)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from comfyui_pas.search import DEFAULT_N_BASIS
from comfyui_pas.settings import describe_rule
from train_tools.evaluation.quality import beats, interval_verdict, verdict

# Row kinds: PAS on the preset's EDM grid, on a learned schedule, or from one file trained on every NFE's grid.
LEARNED, MULTI_GRID = " [learned]", " [multi-grid]"
BASE_SUFFIX = {"": "", LEARNED: LEARNED, MULTI_GRID: ""}  # where each kind's uncorrected row is


def coords_tag(nfe: int | None, kind: str = "") -> str:
    """The tag of a reproduction's coordinates file: nfe<N>, learned_nfe<N>, or multigrid (nfe None)."""
    return "multigrid" if nfe is None or kind == MULTI_GRID else f"{'learned_' if kind == LEARNED else ''}nfe{nfe}"


def coords_path(out, solver: str, tag: str) -> Path:
    """Where a reproduction saves a solver's coordinates."""
    return Path(out) / "coords" / f"{solver}_{tag}.safetensors"


def pas_label(solver: str, kind: str = "") -> str:
    return f"{solver}+PAS{kind}"


def plain_label(solver: str, comfy: bool, kind: str = "") -> str:
    """ComfyUI's own function on the EDM grid is a built-in ('comfy deis'); on a learned grid it is not."""
    return f"comfy {solver}" if comfy and not kind else f"{solver}{kind}"


def split_method(method: str) -> tuple[str, bool, str]:
    """'deis+PAS [learned]' -> ('deis', True, ' [learned]'); 'comfy deis' -> ('deis', False, '')."""
    kind = next((k for k in (LEARNED, MULTI_GRID) if method.endswith(k)), "")
    core = method[:len(method) - len(kind)]
    corrected = core.endswith("+PAS")
    core = core[:-len("+PAS")] if corrected else core
    return core.removeprefix("comfy "), corrected, kind


def best_grid_label(solver: str, rho: float) -> str:
    """A built-in on the EDM grid a best-row study picked for it: 'comfy lms (rho 5)'."""
    return f"{plain_label(solver, True)} (rho {rho:g})"


def builtin_name(solver: str) -> str:
    """The sampler's name in a row's solver part: 'lms (rho 5)' -> 'lms'."""
    return solver.split(" (rho ")[0]


def is_builtin(method: str) -> bool:
    return method.startswith("comfy ")


def base_rows(method: str) -> list[str]:
    """The uncorrected rows a PAS row is judged against (ComfyUI's function first)."""
    solver, _, kind = split_method(method)
    return [plain_label(solver, True, BASE_SUFFIX[kind]), plain_label(solver, False, BASE_SUFFIX[kind])]


FID_POLICIES = ("all", "contenders", "best")
EQUAL_RTOL = 1e-5  # our uncorrected solvers equal ComfyUI's functions to this tolerance (tests/host)


def fid_keys(rows, policy):
    """The (method, nfe) keys that get FID: every row ("all"); or the teacher, every built-in and at each NFE the
    PAS row of lowest RMSE of each kind ("best"), with the same solver's rows of the other kinds and their
    uncorrected rows ("contenders", for the learned-vs-EDM and never-worse checks)."""
    keys = [("teacher", 0) if r["nfe"] == 0 else (r["method"], r["nfe"]) for r in rows]
    if policy == "all":
        return keys
    chosen = {("teacher", 0)} | {(r["method"], r["nfe"]) for r in rows if is_builtin(r["method"])}
    for nfe in sorted({r["nfe"] for r in rows if r["nfe"] > 0}):
        pas = [r for r in rows if r["nfe"] == nfe and split_method(r["method"])[1]]
        for kind in (k for k in BASE_SUFFIX if any(split_method(r["method"])[2] == k for r in pas)):
            best = min((r for r in pas if split_method(r["method"])[2] == kind), key=lambda r: r["rmse"])
            solver = split_method(best["method"])[0]
            chosen.add((best["method"], nfe))
            if policy == "contenders":
                chosen |= {(pas_label(solver, other), nfe) for other in BASE_SUFFIX}
                chosen |= {(base, nfe) for base in base_rows(best["method"])}
    return [key for key in keys if key in chosen]


def full_report(rows, args, extra=None):
    parts = [format_table(rows, args)]
    if any("bench" in r for r in rows):
        parts += ["Best PAS row (least FD to the teacher, at least one corrected step) against the best built-in, "
                  "paired relative change with its 95% interval. The last column scores the teacher's own samples "
                  "on the evaluation seeds the same way: the most any sampler can show against that built-in "
                  "with this many seeds.", bench_summary(extra),
                  format_targets(interval_checks(rows, extra), "paired 95% intervals of the quality bench")]
        parts += [agree_summary(rows)] if any("agree" in r.get("vs_base", {}) for r in rows) else []
    else:
        parts += ["Best PAS row against the best built-in:", summary_table(rows)]
    if any("fid" in r for r in rows):
        parts.append(format_targets(target_checks(rows, "fid", extra), "FID (no interval)"))
    parts.append(format_targets(target_checks(rows, "rmse", extra), "RMSE vs the reference"))
    return "\n\n".join(parts)


def _iv(d, scale=1.0, digits=3):
    return f"{scale * d['value']:.{digits}g} [{scale * d['low']:.{digits}g}, {scale * d['high']:.{digits}g}]"


def bench_summary(extra):
    best = (extra or {}).get("bench", {}).get("best_vs_builtin", {})
    if not best:
        return "No NFE has both a corrected PAS row and a built-in."
    lines = ["| NFE | best PAS row | best built-in | FD teacher change % | FD data change % | RMSE change % | "
             "teacher itself: FD teacher change % |", "|---|---|---|---|---|---|---|"]
    for nfe, b in sorted(best.items(), key=lambda item: int(item[0])):
        teacher = _iv(b["teacher"]["fd_teacher"], 100) if "teacher" in b else "-"
        lines.append(f"| {nfe} | {b['pas']} | {b['builtin']} | {_iv(b['fd_teacher'], 100)} | {_iv(b['fd_data'], 100)} "
                     f"| {_iv(b['rmse'], 100)} | {teacher} |")
    return "\n".join(lines)


def agree_summary(rows) -> str:
    """PAS rows that correct a step against their uncorrected row in the teacher's class (the share of seeds
    showing the reference's class on the same seed), paired: does the correction bring the teacher's garment?"""
    pairs = [r for r in rows if r.get("steps") and "agree" in r.get("vs_base", {})]
    groups = {"up": [], "level": [], "down": []}
    direction = {"worse": "up", "level": "level", "better": "down"}  # interval_verdict reads lower as better
    for r in pairs:
        groups[direction[interval_verdict(r["vs_base"]["agree"])]].append(r)
    down = "; ".join(f"{r['method']} NFE {r['nfe']}: {_iv(r['vs_base']['agree'])}" for r in groups["down"])
    return (f"Teacher's class against the uncorrected row (paired 95% interval), {len(pairs)} PAS rows that "
            f"correct a step: {len(groups['up'])} up, {len(groups['level'])} level, {len(groups['down'])} down"
            + (f" ({down})." if down else "."))


def interval_checks(rows, extra=None):
    """Targets judged on the bench's paired intervals: a PAS row is never worse than its uncorrected row
    (upper end of the FD-to-teacher difference <= 0, or no corrected step); the best PAS row beats the best
    built-in (interval below zero) and by at least 10% in RMSE."""
    checks = []
    pairs = [r for r in rows if "vs_base" in r]
    if pairs:
        worse = [f"{r['method']} NFE {r['nfe']}: {_iv(r['vs_base']['fd_teacher'])}" for r in pairs
                 if r.get("steps") and r["vs_base"]["fd_teacher"]["high"] > 0]
        checks.append(("every solver+PAS is never worse than the same solver in FD to the teacher (upper end of "
                       "the paired interval <= 0, or nothing corrected)", not worse,
                       "; ".join(worse) if worse else f"{len(pairs)} pairs"))
    for nfe, b in sorted((extra or {}).get("bench", {}).get("best_vs_builtin", {}).items(), key=lambda i: int(i[0])):
        evidence = f"{b['pas']} vs {b['builtin']}: FD {_iv(b['fd_teacher'], 100)}%, RMSE {_iv(b['rmse'], 100)}%"
        unbeaten = [name for name, d in b.get("each", {}).items() if not beats(d)]
        if unbeaten:  # runs before the per-built-in comparison have only the best built-in
            evidence += "; not beaten: " + ", ".join(
                f"{name} (FD {_iv(b['each'][name]['fd_teacher'], 100)}%, RMSE {_iv(b['each'][name]['rmse'], 100)}%)"
                for name in unbeaten)
        if "teacher" in b:
            evidence += f"; the teacher itself vs {b['builtin']}: FD {_iv(b['teacher']['fd_teacher'], 100)}%"
            if b["teacher"]["fd_teacher"]["high"] >= 0:
                evidence += " (not measurable at this sample size: a sampler without error is level or worse)"
        checks.append((f"at NFE {nfe} the best PAS row beats every ComfyUI built-in in FD to the teacher (interval "
                       "below 0) and in RMSE by at least 10%", beats(b) and not unbeaten, evidence))
    return checks


def rewrite_report(results_json):
    """Re-judge a finished run: rebuild results.md (table and targets) beside its results.json and print it."""
    path = Path(results_json)
    saved = json.loads(path.read_text())
    report = full_report(saved["rows"], argparse.Namespace(**saved["args"]), saved.get("extra"))
    (path.parent / "results.md").write_text(report + "\n")
    print(report)


def setting_label(args: dict) -> str:
    if args.get("model") == "uncond":
        return "unconditional model"
    return f"conditional model, CFG {args.get('cfg', 1.0):g}"


def runs_summary(results_jsons) -> str:
    """One table over finished runs (make reproduce's three settings): per setting and NFE the best PAS row
    against the best built-in (paired %, 95% intervals), the teacher's own samples against it (the most a
    sampler can show there), and the verdicts of every PAS row against its base."""
    lines = ["| setting | NFE | best built-in: FD teacher | best PAS row: FD teacher | FD teacher % | FD data % | "
             "RMSE % | teacher itself: FD teacher % | PAS rows better / level / plain / worse |",
             "|---|---:|---|---|---:|---:|---:|---:|---|"]
    worse_rows = []
    for path in results_jsons:
        saved = json.loads(Path(path).read_text())
        label, rows = setting_label(saved["args"]), saved["rows"]
        fd = {(r["method"], r["nfe"]): r["bench"]["fd_teacher"]["value"] for r in rows if "bench" in r}
        for nfe, b in sorted(saved.get("extra", {}).get("bench", {}).get("best_vs_builtin", {}).items(),
                             key=lambda item: int(item[0])):
            verdicts = [verdict(r) for r in rows if r["nfe"] == int(nfe) and "vs_base" in r]
            worse_rows += [f"{label}, {r['method']} NFE {nfe}" for r in rows
                           if r["nfe"] == int(nfe) and "vs_base" in r and verdict(r) == "worse"]
            counts = " / ".join(str(verdicts.count(v)) for v in ("better", "level", "plain", "worse"))
            lines.append(f"| {label} | {nfe} | {b['builtin']}: {fd[(b['builtin'], int(nfe))]:.3g} | "
                         f"{b['pas']}: {fd[(b['pas'], int(nfe))]:.3g} | {_iv(b['fd_teacher'], 100)} | "
                         f"{_iv(b['fd_data'], 100)} | {_iv(b['rmse'], 100)} | "
                         f"{_iv(b['teacher']['fd_teacher'], 100) if 'teacher' in b else '-'} | {counts} |")
    lines += ["", "PAS rows worse than their uncorrected row: " + ("; ".join(worse_rows) if worse_rows else "none")]
    return "\n".join(lines)


def min_gain_note(args) -> str:
    gain, otherwise = getattr(args, "min_held_out_gain", None), getattr(args, "auto_default", None)
    return ("" if gain is None else f", minimum held-out gain {gain:.3g}") + (
        f", auto's default rule replaced by {otherwise}" if otherwise else "")


def format_table(rows, args):
    fid_note = "no FID" if args.no_fid else (f"FID of {args.eval} samples vs {args.fid_ref} Fashion-MNIST test images "
                                             f"({getattr(args, 'fid_rows', 'all')} rows"
                                             + (f" at NFE {args.fid_nfe}" if getattr(args, "fid_nfe", None) else "")
                                             + ")")
    guidance = f"CFG {args.cfg:g}" if getattr(args, "cfg", None) is not None and args.model != "uncond" else "unguided"
    lines = [f"Fashion-MNIST demo model ({getattr(args, 'model', 'uncond')}, {guidance}); {fid_note}; RMSE vs a Heun {args.reference_nfe}-NFE reference on the same "
             f"seeds (training teacher: Heun ~{args.teacher_nfe} NFE on the refined student grid); PAS ({getattr(args, 'n_basis', DEFAULT_N_BASIS)} basis vectors, {getattr(args, 'loss', 'l1')} fit, rule "
             f"{describe_rule(getattr(args, 'rule', None) or 'fid-safe')}{', guard ' + args.guard if getattr(args, 'guard', None) else ''}{min_gain_note(args)}) trained on {args.train} trajectories (seeds {args.train_seed_start}+), evaluated on seeds "
             f"{args.eval_seed_start}+. NFE 0 = the reference solution.", "",
             "FD: Frechet distance in the features of the bundled Fashion-MNIST classifier, against the teacher's "
             "samples on other seeds and against the 10,000 test images; [95% interval] over resampled seeds; "
             "teacher's class: the share of seeds whose sample the classifier puts in the class of the reference's "
             "sample from the same seed (NFE 0; 1 for the reference itself). "
             "vs base: the paired difference to the same solver uncorrected. [learned]: each solver on the grid "
             "the PAS Trainer's `grid: learned` picks for it (the GITS programme's grid or an EDM grid of rho 3, 5, "
             "7 or 9 ending in 0, whichever the plain solver rolls out best on the training trajectories; the "
             "solver column names it).", "",
             "| NFE | method | solver | FD teacher | FD data | class acc | teacher's class | FD teacher vs base | FID | "
             "RMSE | corrected steps | params | search s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in sorted(rows, key=lambda r: r["nfe"]):
        bench = row.get("bench", {})
        cells = [_iv(bench[m]) if m in bench else "-" for m in ("fd_teacher", "fd_data")]
        cells += [f"{bench[m]['value']:.3f}" if m in bench else "-" for m in ("acc", "agree")]
        cells.append(_iv(row["vs_base"]["fd_teacher"]) if "vs_base" in row else "")
        fid_text = f"{row['fid']:.2f}" if "fid" in row else "-"
        search = f"{row['search_s']:.1f}" if row.get("search_s") is not None else ""
        lines.append(f"| {row['nfe']} | {row['method']} | {row.get('solver', '')} | {' | '.join(cells)} | {fid_text} | "
                     f"{row['rmse']:.4f} | {row.get('steps', '')} | {row.get('params', '')} | {search} |")
    return "\n".join(lines)


def target_checks(rows, metric="fid", extra=None):
    """The issues' targets, judged from the rows: [(target, met, evidence)]. Rows without the metric (no FID run,
    or a row not scored) are left out; `extra` holds the run's model-call counts for the cost target."""
    value = {(r["method"], r["nfe"]): r[metric] for r in rows if metric in r}
    uncorrected = {(r["method"], r["nfe"]) for r in rows if split_method(r["method"])[1] and not r.get("steps", [0])}
    digits = 2 if metric == "fid" else 4
    nfes = sorted({nfe for _, nfe in value if nfe > 0})
    checks = []
    pairs = {}  # (PAS method, nfe) -> (uncorrected value, PAS value)
    for (method, nfe), corrected in sorted(value.items(), key=lambda item: (item[0][1], item[0][0])):
        if split_method(method)[1]:
            base = next((b for b in base_rows(method) if (b, nfe) in value), None)
            if base is not None:
                pairs[(method, nfe)] = (value[(base, nfe)], corrected)
    paired = {(r["method"], r["nfe"]): r["vs_base"][metric] for r in rows if metric in r.get("vs_base", {})}
    if pairs and paired:
        # the bench's paired interval: a row is worse only when its whole interval lies above zero; a row that
        # corrects nothing is its base solver (they differ by float noise only)
        worse = [f"{m} NFE {n}: {b:.{digits}f} -> {p:.{digits}f}, paired {_iv(paired[(m, n)])}"
                 for (m, n), (b, p) in pairs.items()
                 if (m, n) in paired and (m, n) not in uncorrected and paired[(m, n)]["low"] > 0]
        checks.append(("no solver+PAS is worse than the same solver uncorrected (paired 95% interval above 0)",
                       not worse, "; ".join(worse) if worse else f"{len(set(pairs) & set(paired))} pairs, none worse"))
    elif pairs:
        # ours equals ComfyUI's function to float tolerance (tests/host): a row without corrections is not worse
        worse = [f"{m} NFE {n}: {b:.{digits}f} -> {p:.{digits}f}" for (m, n), (b, p) in pairs.items()
                 if p > b * (1 + EQUAL_RTOL)]
        checks.append(("every solver+PAS is never worse than the same solver uncorrected", not worse,
                       "; ".join(worse) if worse else f"{len(pairs)} pairs, none worse"))
    for n in nfes:  # a PAS row whose search corrected no step is its base solver: it does not count here
        pas = {m: v for (m, k), v in value.items() if k == n and split_method(m)[1] and (m, k) not in uncorrected}
        comfy = {m: v for (m, k), v in value.items() if k == n and is_builtin(m)}
        if pas and comfy:
            best_pas, best_comfy = min(pas, key=pas.get), min(comfy, key=comfy.get)
            margin = 1 - pas[best_pas] / comfy[best_comfy]
            wanted = 0.10 if metric == "rmse" else 0.0
            target = f"at NFE {n} the best PAS row beats every ComfyUI built-in" + (
                " by at least 10%" if wanted else "")
            checks.append((target, margin > wanted,
                           f"{best_pas} {pas[best_pas]:.{digits}f} vs {best_comfy} {comfy[best_comfy]:.{digits}f} "
                           f"({-margin:+.1%})"))
    learned = [(m, n, v, value[(pas_label(split_method(m)[0]), n)]) for (m, n), v in value.items()
               if split_method(m)[2] == LEARNED and split_method(m)[1] and n in (4, 5, 6)
               and (pas_label(split_method(m)[0]), n) in value]
    if learned:
        wanted = 0.10 if metric == "rmse" else 0.0
        checks.append(("learned schedule + PAS beats the EDM (karras) grid + PAS at NFE 4-6"
                       + (" by at least 10%" if wanted else ""),
                       all(1 - v / k > wanted for _, _, v, k in learned),
                       ", ".join(f"{m} NFE {n}: {k:.{digits}f} -> {v:.{digits}f} ({v / k - 1:+.0%})"
                                 for m, n, v, k in sorted(learned, key=lambda t: (t[1], t[0])))))
    multi = []
    for (m, n), (b, v) in pairs.items():
        single = (pas_label(split_method(m)[0]), n)
        if split_method(m)[2] == MULTI_GRID and single in pairs and pairs[single][0] > pairs[single][1] * (1 + EQUAL_RTOL):
            multi.append((m, n, (b - v) / (pairs[single][0] - pairs[single][1])))
    if multi and metric == "rmse":
        checks.append(("the multi-grid file keeps at least 90% of each grid's single-run gain",
                       all(kept >= 0.9 for _, _, kept in multi),
                       ", ".join(f"{m} NFE {n}: {kept:.0%}" for m, n, kept in sorted(multi, key=lambda t: (t[0], t[1])))))
    cost = (extra or {}).get("multigrid_cost")
    if cost and metric == "rmse":
        ratios = {solver: c["multi"] / c["single_largest"] for solver, c in cost.items()}
        largest = next(iter(cost.values())).get("largest_nfe", "the largest")
        checks.append((f"one training for every NFE costs at most 1.5x the model calls of one training at NFE {largest}",
                       all(r <= 1.5 for r in ratios.values()),
                       ", ".join(f"{solver} {cost[solver]['multi']} vs {cost[solver]['single_largest']} calls ({r:.2f}x)"
                                 for solver, r in ratios.items())))
    return checks


def summary_table(rows):
    """Best PAS row (with at least one corrected step) against the best built-in at each NFE, on FID (where
    scored) and on RMSE."""
    lines = ["| NFE | metric | best PAS row | value | best built-in | value | change |", "|---|---|---|---|---|---|---|"]
    for nfe in sorted({r["nfe"] for r in rows if r["nfe"] > 0}):
        for metric, digits in (("fid", 2), ("rmse", 4)):
            pas = [r for r in rows if r["nfe"] == nfe and split_method(r["method"])[1] and metric in r
                   and r.get("steps", [0])]
            comfy = [r for r in rows if r["nfe"] == nfe and is_builtin(r["method"]) and metric in r]
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
