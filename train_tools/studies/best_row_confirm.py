"""A reproduction's best-row comparisons again, on more and fresh seeds: is a level verdict only too few seeds?

    python -m train_tools.studies.best_row_confirm --run out/reproduce/full_cond_cfg1 --n 2000
    python -m train_tools.studies.best_row_confirm --run out/reproduce/full_cond_cfg4 --nfe 8 10 --n 2000

Per NFE, the run's best PAS row (results.json, extra.bench.best_vs_builtin) and every built-in it did not beat
there in FD to the teacher (95% interval not below zero) sample N seeds from CONFIRM_SEED_START, apart from the
run's training and evaluation seeds, on the run's grids and with its saved coordinates. The teacher's own
samples on those seeds (Heun 35) are scored too: the least FD any sampler can show at this N. All are scored on
the quality bench against the teacher's samples on N reference seeds and against the data, with paired 95%
intervals, and judged by the reproduction's test (`quality.beats`: FD interval below zero and RMSE 10% lower).
Built-ins the row beat in FD but not by the RMSE margin are named, not sampled again: RMSE is a per-sample
mean, and its point value is what the margin reads. --also-closest K adds the K built-ins closest to the
teacher in the run, beaten there or not (where a best row was met: does it hold on fresh seeds?). Writes <run>/best_row_confirm_n<N>.md and .json.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from train_tools.data.seeds import CONFIRM_SEED_START
from train_tools.evaluation.quality import Judge, beats, interval_verdict
from train_tools.studies import fresh_seeds
from train_tools.studies.inception_check import row_sampler
from train_tools.studies.rule_study import pct
from train_tools.tables import markdown_table

METRICS = ("fd_teacher", "fd_data", "rmse", "agree")


def contenders(best: dict) -> tuple[list[str], list[str]]:
    """From a run's best_vs_builtin entry: (built-ins not beaten in FD to the teacher, built-ins beaten in FD
    but not by the RMSE margin)."""
    fd_better = {name: interval_verdict(diff["fd_teacher"]) == "better" for name, diff in best["each"].items()}
    level = [name for name, better in fd_better.items() if not better]
    short = [name for name, better in fd_better.items() if better and not beats(best["each"][name])]
    return level, short


def compare(a, b) -> dict:
    """Row a against row b (both Scored on the same seeds): paired relative differences per metric."""
    return {metric: Judge.relative(a, b, metric).as_dict() for metric in METRICS if metric in a.values}


def closest(rows: list[dict], nfe: int, names, count: int, skip) -> list[str]:
    """The `count` built-ins among `names` with the least FD to the teacher in the run at this NFE, not in `skip`."""
    fd = {r["method"]: r["bench"]["fd_teacher"]["value"] for r in rows if r["nfe"] == nfe and r["method"] in names}
    return [name for name in sorted(fd, key=fd.get) if name not in skip][:count]


def confirm(run: Path, nfes: list[int] | None, n: int, also_closest: int = 0) -> dict:
    """Samples and scores each NFE's comparisons (the module's docstring; also_closest: the K built-ins closest
    to the teacher in the run, beaten there or not); returns the report's data."""
    saved = json.loads((run / "results.json").read_text())
    options, rows = saved["args"], saved["rows"]
    bench = saved["extra"]["bench"]["best_vs_builtin"]
    nfes = nfes or sorted(int(k) for k in bench)
    missing = [nfe for nfe in nfes if str(nfe) not in bench]
    if missing:
        raise SystemExit(f"{run}: no best-row comparison at NFE {missing} (it has {sorted(int(k) for k in bench)})")
    fresh_seeds.refuse_overlap(run, options, n)
    started = time.perf_counter()
    setup, judge, floor = fresh_seeds.references(options, n)
    print(f"{setup.label()}: references and the teacher's samples on {n} seeds ({time.perf_counter() - started:.0f} s)",
          flush=True)
    result = {"run": str(run), "label": setup.label(), "n": n, "seed_start": CONFIRM_SEED_START,
              "run_n": options["eval"], "floor": floor.values, "nfe": {}}
    for nfe in nfes:
        best = bench[str(nfe)]
        level, short = contenders(best)
        level += closest(rows, nfe, best["each"], also_closest, level)
        short = [name for name in short if name not in level]
        scored = {}
        for method in [best["pas"], *level]:
            sampler, sigmas = row_sampler(setup, run, rows, method, nfe)
            scored[method] = judge.score(*setup.sample(sampler, sigmas))
        pas = scored[best["pas"]]
        against = {}
        for name in level:
            diff = compare(pas, scored[name])
            against[name] = {"run": best["each"][name], "confirm": diff, "beaten": beats(diff),
                             "teacher": compare(floor, scored[name])}
        result["nfe"][str(nfe)] = {"pas": best["pas"], "values": {m: s.values for m, s in scored.items()},
                                   "against": against,
                                   "rmse_short": {name: best["each"][name]["rmse"]["value"] for name in short}}
        print(f"NFE {nfe}: {len(level) + 1} rows ({time.perf_counter() - started:.0f} s)", flush=True)
    result["seconds"] = time.perf_counter() - started
    return result


def why_not(item: dict) -> str:
    """Why a compared built-in is not beaten: its FD verdict, or the RMSE margin ('' when it is beaten)."""
    if item["beaten"]:
        return ""
    fd = interval_verdict(item["confirm"]["fd_teacher"])
    return f"FD {fd}" if fd != "better" else f"FD better, RMSE {100 * item['confirm']['rmse']['value']:+.1f}%"


def report(result: dict, command: str) -> str:
    """The markdown report of confirm()'s result."""
    n, run_n = result["n"], result["run_n"]
    table, lines = [], []
    for nfe, entry in result["nfe"].items():
        values = entry["values"][entry["pas"]]
        for name, item in entry["against"].items():
            table.append([nfe, name, entry["pas"],
                          f"{entry['values'][name]['fd_teacher']:.3g} -> {values['fd_teacher']:.3g}",
                          pct(item["run"]["fd_teacher"]), pct(item["confirm"]["fd_teacher"]),
                          pct(item["confirm"]["fd_data"]), pct(item["confirm"]["rmse"]),
                          pct(item["teacher"]["fd_teacher"]), "yes" if item["beaten"] else f"no: {why_not(item)}"])
        if not entry["against"]:
            table.append([nfe, "-", entry["pas"], "-", "-", "-", "-", "-", "-", "-"])
        level = [f"{name} ({why_not(item)})" for name, item in entry["against"].items() if not item["beaten"]]
        short = ", ".join(f"{name} ({100 * value:+.1f}%)" for name, value in entry["rmse_short"].items())
        verdict = "beats every built-in sampled again" if not level else f"does not beat {', '.join(level)}"
        lines.append(f"* NFE {nfe}: {entry['pas']} {verdict} on these seeds"
                     + (f"; RMSE short of the 10% margin in the run against {short}" if short else "") + ".")
    header = ["NFE", "built-in", "best PAS row", "FD teacher, built-in -> PAS", f"FD teacher % ({run_n} run seeds)",
              f"FD teacher % ({n} fresh seeds)", "FD data %", "RMSE %", "the teacher's own samples: FD teacher %",
              "beaten (FD and RMSE)"]
    floor = result["floor"]
    return (f"# {result['label']}: the best-row comparisons on {n} fresh seeds\n\n`{command}` "
            f"({result['seconds'] / 60:.0f} min). Seeds {result['seed_start']}+; the run: {result['run']} "
            f"({run_n} evaluation seeds). The teacher's own samples on these seeds: FD teacher {floor['fd_teacher']:.3g}, "
            f"FD data {floor['fd_data']:.3g}.\n\n" + markdown_table(header, table) + "\n\n" + "\n".join(lines) + "\n")


def main(argv=None):
    parser = fresh_seeds.parser(__doc__.split("\n")[0])
    parser.add_argument("--also-closest", type=int, default=0, metavar="K",
                        help="also sample the K built-ins closest to the teacher in the run, even where beaten there")
    args = fresh_seeds.parse(parser, argv, report)
    if args is None:
        return
    run = Path(args.run)
    result = confirm(run, args.nfe, args.n, args.also_closest)
    stem = fresh_seeds.stem(run, "best_row_confirm", args.n, args.nfe)
    if args.also_closest:
        stem = stem.with_name(f"{stem.name}_closest{args.also_closest}")
    fresh_seeds.write(result, stem, "train_tools.studies.best_row_confirm", argv, report)


if __name__ == "__main__":
    main()
