"""A reproduction's level PAS rows again, on more and fresh seeds: is "level" a small gain, no gain, or a loss?

    python -m train_tools.studies.level_confirm --run out/reproduce/full_cond_cfg4 --n 2000

"Never worse" (a target of the reproduction) asks each PAS row that corrects a step to lower the FD to the
teacher against its uncorrected row with the 95% interval below zero. On the reproduction's 400 seeds some rows are level: the
interval spans zero. Each such row of the run (results.json, the row's vs_base) and its uncorrected row sample N
seeds from CONFIRM_SEED_START, apart from the run's training and evaluation seeds, on the run's grids and with
its saved coordinates. Both are scored on the quality bench against the teacher's samples on N reference seeds
and against the data; the difference is paired (the same seeds and resamples). Writes
<run>/level_confirm_n<N>.md and .json.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from train_tools.data.seeds import CONFIRM_SEED_START
from train_tools.evaluation.quality import VERDICTS, Judge, interval_verdict
from train_tools.reproduction.reproduce_report import base_rows
from train_tools.studies import fresh_seeds
from train_tools.studies.inception_check import row_sampler
from train_tools.studies.rule_study import pct
from train_tools.tables import markdown_table

METRICS = ("fd_teacher", "fd_data", "rmse", "agree")


def level_rows(rows: list[dict], nfes: list[int] | None = None) -> list[dict]:
    """The run's PAS rows that correct a step and are level with their uncorrected row in FD to the teacher,
    each as {nfe, pas, base, steps, run}, base being the row the run compared it with (ComfyUI's function
    first, as the run's bench does)."""
    present = {(r["method"], r["nfe"]) for r in rows}
    found = []
    for row in rows:
        diff = row.get("vs_base", {}).get("fd_teacher")
        if not row.get("steps") or diff is None or (nfes and row["nfe"] not in nfes):
            continue
        if interval_verdict(diff) != "level":
            continue
        base = next((b for b in base_rows(row["method"]) if (b, row["nfe"]) in present), None)
        if base is None:
            raise SystemExit(f"{row['method']} at NFE {row['nfe']} has a vs_base but no uncorrected row in the run")
        found.append({"nfe": row["nfe"], "pas": row["method"], "base": base, "steps": row["steps"], "run": diff})
    return found


def paired(a, b) -> dict:
    """Row a against row b (Scored on the same seeds): {metric: {"abs": a - b, "rel": a / b - 1}} as interval dicts."""
    return {metric: {"abs": Judge.difference(a, b, metric).as_dict(), "rel": Judge.relative(a, b, metric).as_dict()}
            for metric in METRICS if metric in a.values}


def confirm(run: Path, nfes: list[int] | None, n: int) -> dict:
    """Samples and scores every level row of the run and its uncorrected row on n fresh seeds."""
    saved = json.loads((run / "results.json").read_text())
    options, rows = saved["args"], saved["rows"]
    fresh_seeds.refuse_overlap(run, options, n)
    cases = level_rows(rows, nfes)
    started = time.perf_counter()
    setup, judge, floor = fresh_seeds.references(options, n)
    print(f"{setup.label()}: {len(cases)} level rows; references on {n} seeds ({time.perf_counter() - started:.0f} s)",
          flush=True)
    scored = {}
    for case in cases:
        for method in (case["base"], case["pas"]):
            key = (method, case["nfe"])
            if key not in scored:
                sampler, sigmas = row_sampler(setup, run, rows, method, case["nfe"])
                scored[key] = judge.score(*setup.sample(sampler, sigmas))
        pas, base = scored[(case["pas"], case["nfe"])], scored[(case["base"], case["nfe"])]
        case["fresh"] = paired(pas, base)
        case["values"] = {"pas": pas.values, "base": base.values}
        case["verdict"] = interval_verdict(case["fresh"]["fd_teacher"]["abs"])
        print(f"NFE {case['nfe']} {case['pas']}: {case['verdict']} ({time.perf_counter() - started:.0f} s)", flush=True)
    return {"run": str(run), "label": setup.label(), "n": n, "seed_start": CONFIRM_SEED_START,
            "run_n": options["eval"], "floor": floor.values, "cases": cases,
            "seconds": time.perf_counter() - started}


def absolute(item: dict) -> str:
    return f"{item['value']:+.3g} [{item['low']:+.3g}, {item['high']:+.3g}]"


def report(result: dict, command: str) -> str:
    """The markdown report of confirm()'s result."""
    n, run_n = result["n"], result["run_n"]
    table = []
    for case in result["cases"]:
        fresh, values = case["fresh"], case["values"]
        table.append([case["nfe"], case["pas"], case["base"], ", ".join(map(str, case["steps"])),
                      absolute(case["run"]), f"{values['base']['fd_teacher']:.3g} -> {values['pas']['fd_teacher']:.3g}",
                      absolute(fresh["fd_teacher"]["abs"]), pct(fresh["fd_teacher"]["rel"]), case["verdict"],
                      pct(fresh["fd_data"]["rel"]), pct(fresh["rmse"]["rel"])])
    counts = {v: sum(case["verdict"] == v for case in result["cases"]) for v in VERDICTS}
    header = ["NFE", "PAS row", "uncorrected row", "corrected steps", f"FD teacher difference ({run_n} run seeds)",
              f"FD teacher, uncorrected -> PAS ({n} fresh seeds)", "FD teacher difference (fresh)",
              "FD teacher % (fresh)", "verdict (fresh)", "FD data % (fresh)", "RMSE % (fresh)"]
    floor = result["floor"]
    summary = (f"Rows level on the run's {run_n} seeds: {len(result['cases'])}. Against their uncorrected row on {n} "
               f"fresh seeds (FD to the teacher, paired 95% interval): {counts['better']} better, {counts['level']} "
               f"level, {counts['worse']} worse.")
    return (f"# {result['label']}: the level PAS rows on {n} fresh seeds\n\n`{command}` "
            f"({result['seconds'] / 60:.0f} min). Seeds {result['seed_start']}+; the run: {result['run']} "
            f"({run_n} evaluation seeds). The teacher's own samples on these seeds: FD teacher {floor['fd_teacher']:.3g}, "
            f"FD data {floor['fd_data']:.3g}.\n\n{summary}\n\n" + markdown_table(header, table) + "\n")


def main(argv=None):
    args = fresh_seeds.parse(fresh_seeds.parser(__doc__.split("\n")[0]), argv, report)
    if args is None:
        return
    run = Path(args.run)
    result = confirm(run, args.nfe, args.n)
    fresh_seeds.write(result, fresh_seeds.stem(run, "level_confirm", args.n, args.nfe),
                      "train_tools.studies.level_confirm", argv, report)


if __name__ == "__main__":
    main()
