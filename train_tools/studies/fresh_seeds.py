"""What the studies that sample a finished reproduction's comparisons again on fresh seeds share: their
command line, the seed check, and where the result and its report are written."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from train_tools.data.seeds import CONFIRM_SEED_START


def parser(description: str) -> argparse.ArgumentParser:
    """--run, --nfe, --n and --report, as every fresh-seed study takes them."""
    out = argparse.ArgumentParser(description=description)
    out.add_argument("--run", help="a finished reproduction's folder (results.json, coords/)")
    out.add_argument("--nfe", type=int, nargs="+", default=None, help="default: every NFE of the run")
    out.add_argument("--n", type=int, default=2000, help="fresh seeds (and teacher-reference seeds)")
    out.add_argument("--report", metavar="JSON", help="rebuild the .md beside this saved result; samples nothing")
    return out


def parse(parser: argparse.ArgumentParser, argv, report):
    """The parsed arguments for a run to sample; None when --report only rebuilt a saved result's .md."""
    args = parser.parse_args(argv)
    if not (args.run or args.report):
        parser.error("give --run (sample and score) or --report (rebuild a saved result's table)")
    if args.report:
        rebuild(Path(args.report), report)
        return None
    import torch

    torch.set_num_threads(1)
    return args


def stem(run: Path, name: str, n: int, nfes) -> Path:
    """<run>/<name>_n<N>[_nfe<a-b>]: where a study's result on this run is written."""
    out = run / f"{name}_n{n}"
    return out.with_name(f"{out.name}_nfe{'-'.join(map(str, nfes))}") if nfes else out


def refuse_overlap(run: Path, options: dict, n: int) -> None:
    """Stop when the run's evaluation seeds overlap the n fresh seeds from CONFIRM_SEED_START."""
    start = options["eval_seed_start"]
    if start < CONFIRM_SEED_START + n and CONFIRM_SEED_START < start + options["eval"]:
        raise SystemExit(f"{run} was evaluated on seeds {start}+, which overlap the fresh seeds {CONFIRM_SEED_START}+")


def rebuild(saved: Path, report) -> None:
    """Write the .md of a saved result again (report(result, command)) and print it."""
    result = json.loads(saved.read_text())
    text = report(result, result["command"])
    saved.with_suffix(".md").write_text(text)
    print(text)


def write(result: dict, stem: Path, module: str, argv, report) -> None:
    """Record the command in the result, then write <stem>.json and <stem>.md and print the report."""
    result["command"] = f"python -m {module} " + " ".join(argv if argv is not None else sys.argv[1:])
    text = report(result, result["command"])
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    stem.with_suffix(".md").write_text(text)
    print(text)


def references(options: dict, n: int):
    """(setup, judge, floor) for a run's setting on n fresh seeds: the bench setup, its Judge, and the
    teacher's own samples on those seeds scored (the least FD any sampler can show there)."""
    from train_tools.bench_setup import BenchSetup
    from train_tools.data.fashion_mnist import to_uint8

    setup = BenchSetup.create(options["model"], options["cfg"], n, eval_start=CONFIRM_SEED_START)
    judge = setup.judge()
    teacher = setup.teacher_finals("eval")
    return setup, judge, judge.score(to_uint8(teacher), teacher)
