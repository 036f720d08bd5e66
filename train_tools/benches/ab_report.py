"""The A/B study's results as numbers and Markdown: per-setting summaries over cases and repetitions,
the 90%-of-the-best decision rule, and one table renderer per kind of study. Every renderer takes
(rows, header) and returns (markdown, summary or None), so a table can be rebuilt from its JSON alone."""
from __future__ import annotations

import statistics

from comfyui_pas.solvers import ORDER, SOLVER_CLASSES
from train_tools.tables import markdown_table

# A grid may cost at most this many model calls per training run (docs/ab-study.md, "Budget per grid"), counted at the largest NFE.
CALL_CAP = 1000


def solver_label(solver, order):
    """'euler', 'ipndm3', 'deis3', 'dpmpp_2m': the solver, with its order where it has one."""
    cls = SOLVER_CLASSES.get(solver)
    has_order = cls is None or any(option.name == ORDER for option in cls.options)
    return f"{solver}{order}" if has_order and order is not None else solver


def case_name(solver, order, nfe):
    """'euler 5', 'ipndm3 5', 'dpmpp_2m 5': one solver at one NFE."""
    return f"{solver_label(solver, order)} {nfe}"


def _mean(values):
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


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
                    "calls": statistics.mean(r["calls"] for r in sub),
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


def calls_at(s, nfe):
    """Mean model calls per training run of a summarised setting at one NFE (over solvers and repetitions)."""
    values = [c["calls"] for name, c in s["cases"].items() if name.rsplit(" ", 1)[-1] == str(nfe) and "calls" in c]
    return statistics.mean(values) if values else None


def largest_nfe(summary):
    return max(int(name.rsplit(" ", 1)[-1]) for s in summary for name in s["cases"])


def capped_choice(summary, cap=CALL_CAP, fraction=0.9, score=lambda s: s["mean_gain"]):
    """(choice, nfe): the cheapest setting within `fraction` of the best score among those whose training run
    costs at most `cap` model calls at the study's largest NFE (the most expensive grid); None if none."""
    nfe = largest_nfe(summary)
    best = max(score(s) for s in summary)
    keep = [s for s in summary if best > 0 and score(s) >= fraction * best
            and (calls_at(s, nfe) or float("inf")) <= cap]
    return (min(keep, key=lambda s: (s["mean_calls"], -score(s))) if keep else None), nfe


def calls_table(summary):
    """Model calls per training run at each NFE (teacher + search + guard, mean over solvers and repetitions)."""
    nfes = sorted({int(name.rsplit(" ", 1)[-1]) for s in summary for name in s["cases"]})
    lines = ["| setting | " + " | ".join(f"NFE {n}" for n in nfes) + " | mean |", "|---" * (len(nfes) + 2) + "|"]
    for s in summary:
        cells = [f"{calls_at(s, n):,.0f}" if calls_at(s, n) is not None else "" for n in nfes]
        lines.append(f"| {s['setting']} | " + " | ".join(cells) + f" | {s['mean_calls']:,.0f} |")
    return "\n".join(lines)


def median_gain(s):
    return -s["mean_median_change"]


def pct(value):
    return "n/a" if value is None else f"{100 * value:+.1f}%"


def flips_text(s):
    if s.get("flips_pas") is None:
        return "n/a"
    return f"{1000 * s['flips_plain']:.1f} -> {1000 * s['flips_pas']:.1f}"


def summary_table(summary):
    columns = ["setting", "mean gain", "spread over reps", "worst case", "mean median change", "max worse",
               "mode flips per 1000 (plain -> PAS)", "steps", "params", "model calls / run", ">= 90% of best"]
    return markdown_table(columns, [
        [s["setting"], pct(s["mean_gain"]), f"{100 * s['rep_spread']:.1f} pt", pct(s["min_gain"]),
         pct(s["mean_median_change"]), f"{100 * s['max_worse']:.0f}%", flips_text(s), f"{s['mean_steps']:.1f}",
         f"{s['mean_parameters']:.1f}", f"{s['mean_calls']:,.0f}", "yes" if s["within_90pct"] else "no"]
        for s in summary])


def case_table(summary, field):
    names = list(dict.fromkeys(n for s in summary for n in s["cases"]))
    return markdown_table(["setting", *names], [
        [s["setting"]] + [f"{100 * s['cases'][n][field]:+.0f}" if n in s["cases"] else "" for n in names]
        for s in summary])


def solver_table(rows):
    """Per setting and solver family: mean RMSE gain and median change over NFEs, and the 90% choices."""
    families = list(dict.fromkeys(solver_label(r["solver"], r["order"]) for r in rows))
    parts = {f: summarise([r for r in rows if solver_label(r["solver"], r["order"]) == f]) for f in families}
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


SHARE_FLOOR = 0.02  # a best score below 2 points gives no meaningful share: show the raw score instead


def _share(value, best):
    return f"{100 * value / best:.0f}%" if best >= SHARE_FLOOR else f"({pct(value)})"


def share_table(rows, summary):
    """Per setting: its calls at the largest NFE and each score as a share of the best setting's (the 90% rule),
    overall (RMSE gain, median) and per solver (RMSE gain, median)."""
    nfe = largest_nfe(summary)
    families = list(dict.fromkeys(solver_label(r["solver"], r["order"]) for r in rows))
    parts = {f: summarise([r for r in rows if solver_label(r["solver"], r["order"]) == f]) for f in families}
    best_gain, best_median = max(s["mean_gain"] for s in summary), max(median_gain(s) for s in summary)
    head = " | ".join(f"{f} gain / median" for f in families)
    lines = [f"| setting | calls at NFE {nfe} | RMSE gain | median | {head} |", "|---" * (len(families) + 4) + "|"]
    for i, s in enumerate(summary):
        cells = []
        for f in families:
            mine = parts[f]
            g, m = max(x["mean_gain"] for x in mine), max(median_gain(x) for x in mine)
            cells.append(f"{_share(mine[i]['mean_gain'], g)} / {_share(median_gain(mine[i]), m)}")
        lines.append(f"| {s['setting']} | {calls_at(s, nfe):,.0f} | {_share(s['mean_gain'], best_gain)} | "
                     f"{_share(median_gain(s), best_median)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def study_markdown(study, rows, header):
    """A study that varies knobs of the baseline: summary, per-solver and per-case tables, the choices."""
    summary = summarise(rows)
    choice = cheapest_within(summary)
    parts = [f"### {study}", "", header, "", summary_table(summary), "",
             "Per solver (means over NFEs and repetitions):", "", solver_table(rows), "",
             "RMSE gain per case (%, mean over repetitions; positive = PAS closer to the reference):", "",
             case_table(summary, "gain"), "", "Median per-sample change per case (%, negative = better):", "",
             case_table(summary, "median_change"), "",
             "Model calls per training run (counted: teacher + search + guard roll-outs; mean over solvers and "
             "repetitions):", "", calls_table(summary), ""]
    if study == "budget":
        parts += ["Share of the best setting's score (mean RMSE gain; mean median improvement), overall and per "
                  "solver (each against that solver's best; in brackets: the raw score where the best is under "
                  f"{100 * SHARE_FLOOR:.0f} points):", "", share_table(rows, summary), ""]
    if choice is not None:
        parts.append(f"Cheapest setting with >= 90% of the best mean RMSE gain: **{choice['setting']}** "
                     f"({pct(choice['mean_gain'])}, {choice['mean_calls']:,.0f} model calls per training run).")
    by_median = cheapest_within(summary, score=median_gain)
    if by_median is not None:
        parts.append(f"Cheapest setting with >= 90% of the best mean median improvement: **{by_median['setting']}** "
                     f"({pct(by_median['mean_median_change'])}, {by_median['mean_calls']:,.0f} model calls per run).")
    capped, nfe = capped_choice(summary)
    if capped is not None:
        parts.append(f"Cheapest setting with >= 90% of the best mean RMSE gain and at most {CALL_CAP:,} model calls "
                     f"per run at NFE {nfe}: **{capped['setting']}** ({pct(capped['mean_gain'])}, "
                     f"{calls_at(capped, nfe):,.0f} calls at NFE {nfe}).")
    else:
        parts.append(f"No setting keeps >= 90% of the best mean RMSE gain within {CALL_CAP:,} model calls per run "
                     f"at NFE {nfe}.")
    return "\n".join(parts) + "\n", summary


def calls_markdown(rows, header):
    """End-to-end training runs (teacher included): the model calls train_pas reports, against the formula."""
    columns = ["solver", "NFE", "N (held out)", "teacher NFE: asked / actual", "teacher calls", "search calls",
               "guard roll-outs (bound)", "report['model_calls']",
               "bound N (T + NFE) + n_val (NFE + NFE (NFE - 1) / 2)", "accepted steps"]
    cells = [[solver_label(r["solver"], r["order"]), r["nfe"], f"{r['n_train']} ({r['n_validation']})",
              f"{r['teacher_asked']} / {r['teacher_nfe']}", f"{r['teacher_calls']:,}", f"{r['search_calls']:,}",
              f"{r['guard_calls']:,} ({r['guard_bound']:,})", f"{r['model_calls']:,}", f"{r['bound']:,}",
              r["accepted"]] for r in rows]
    return "\n".join(["### calls", "", header, "", markdown_table(columns, cells)]) + "\n", None


def subsets_markdown(rows, header):
    """One row per subset of the accepted steps: which step helps or hurts."""
    columns = ["parameterization", "case", "rep", "accepted", "steps kept", "RMSE gain", "median change",
               "mode flips (plain -> PAS, of all)", "coordinates of the kept steps"]
    cells = [[r["parameterization"], case_name(r["solver"], r["order"], r["nfe"]), r["rep"], r["accepted"], r["kept"],
              pct(r["gain"]), pct(r["median_change"]),
              "n/a" if r["flips_pas"] is None else f"{r['flips_plain'] * 1000:.1f} -> {r['flips_pas'] * 1000:.1f} per 1000",
              r["coordinates"]] for r in rows]
    return "\n".join(["### subsets", "", header, "", markdown_table(columns, cells)]) + "\n", None


def teacher_error_markdown(rows, header):
    """The teacher's error against the reference per requested NFE, next to the plain solvers'."""
    names = [k for k in rows[0] if k not in ("nfe", "seeds")]
    lines = ["### teacher-error", "", header, "", f"RMSE / median per-sample RMSE against the reference, first "
             f"{rows[0]['seeds']} held-out seeds (teacher columns: requested NFE, actual NFE in brackets):", ""]
    cells = [[r["nfe"]] + [f"{r[n][0]:.4f} / {r[n][1]:.4f}" + (f" ({r[n][2]})" if len(r[n]) > 2 else "") for n in names]
             for r in rows]
    return "\n".join(lines + [markdown_table(["NFE", *names], cells)]) + "\n", None


def transfer_markdown(rows, header):
    """Coordinates trained at one size and used at another: gains and the share of the native gain kept."""
    summary = summarise(rows)
    by_label = {s["setting"]: s for s in summary}
    cells = []
    for s in summary:
        r = next(r for r in rows if r["setting"] == s["setting"])
        native = by_label.get(f"{r['parameterization']}, trained at {r['eval_size']}, used at {r['eval_size']}")
        kept = (f"{100 * s['mean_gain'] / native['mean_gain']:.0f}%" if native and native["mean_gain"] > 0
                else "n/a")
        cells.append([r["parameterization"], r["train_size"], r["eval_size"], pct(s["mean_gain"]), pct(s["min_gain"]),
                      pct(s["mean_median_change"]), flips_text(s), kept])
    columns = ["parameterization", "trained at", "used at", "mean gain", "worst case", "mean median change",
               "mode flips per 1000 (plain -> PAS)", "share of the native gain kept"]
    lines = ["### transfer", "", header, "", markdown_table(columns, cells),
             "", "RMSE gain per case (%):", "", case_table(summary, "gain"), ""]
    return "\n".join(lines) + "\n", summary
