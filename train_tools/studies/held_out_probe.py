"""What could the trainer's held-out trajectories have seen of a correction the quality bench called level?

    python -m train_tools.studies.held_out_probe out/reproduce/full_cond_cfg1 [more runs] [--all]

For every PAS row of finished `reproduce` runs that corrects exactly one step (--all: every corrected row),
this loads the row's saved coordinates and samples the solver plain and corrected on the trainer's own
held-out trajectories (training seeds 36-47 of 0-47) and on 128 unused training-range seeds (48-175; never the
evaluation seeds), each against the Heun reference of the run on the same seeds. Per row and seed set it
reports the relative gain (plain -> corrected, positive = closer to the teacher's finals) of:
* rmse: the per-sample error the fit minimises;
* patch_fd: the Frechet distance of the 4x4-patch distribution to the teacher's (the `patches` guard's);
* contrast / detail: the mean gap to the teacher in per-sample spread and high-pass spread (the texture terms);
* move: how far the correction moves the finals, as a share of the plain finals' RMSE (no gain: a size);
* bias: the RMS of the mean residual image; moments: the per-pixel mean and spread against the teacher's.
beside the row's measured verdict (FD to the teacher on the evaluation seeds, paired 95% interval).
A statistic fit for a guard would shrink for the better rows and grow for the level and worse ones.
Writes out/held_out_probe/probe.json and probe.md.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from comfyui_pas import PASCoordinates, edm_sigmas, sample_pas
from comfyui_pas.acceptance import HeldOutErrors
from train_tools.bench_setup import load_model
from train_tools.data.guided import GuidedModel
from train_tools.evaluation.quality import interval_verdict
from train_tools.reproduction.reproduce import noise, teacher_run
from train_tools.reproduction.reproduce_report import LEARNED, coords_path, coords_tag
from train_tools.tables import markdown_table

HELD_OUT = list(range(36, 48))  # the last quarter of the Trainer's 48 trajectories
MORE = list(range(48, 176))
BATCH = 64
STATISTICS = ("rmse", "patch_fd", "contrast", "detail", "bias", "moments", "move")


def rms(x: torch.Tensor) -> float:
    return float(x.double().square().mean().sqrt())


def gain(before: float, after: float) -> float:
    """1 - after / before; 0 when both are rounding noise (no gap to close)."""
    return 0.0 if max(before, after) < 1e-12 else 1.0 - after / before


def moments(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x.double().mean(0).flatten(), x.double().std(0).flatten()])


def statistics(plain: torch.Tensor, corrected: torch.Tensor, teacher: torch.Tensor) -> dict:
    """Relative gains plain -> corrected against the teacher's finals (move: a size, not a gain); the
    texture and patch terms are the held-out guards' own (HeldOutErrors)."""
    before, after = (HeldOutErrors.of(x, teacher, patches=True) for x in (plain, corrected))
    return {"rmse": gain(rms(plain - teacher), rms(corrected - teacher)),
            "patch_fd": gain(before.patch_gap, after.patch_gap),
            "contrast": gain(float(before.contrast_gap.mean()), float(after.contrast_gap.mean())),
            "detail": gain(float(before.detail_gap.mean()), float(after.detail_gap.mean())),
            "bias": gain(rms((plain - teacher).mean(0)), rms((corrected - teacher).mean(0))),
            "moments": gain(rms(moments(plain) - moments(teacher)), rms(moments(corrected) - moments(teacher))),
            "move": rms(corrected - plain) / rms(plain - teacher)}


def verdict(row) -> str:
    return interval_verdict(row["vs_base"]["fd_teacher"])


class RunProbe:
    """One finished reproduce run: its model and Heun reference, and the coordinates of its rows."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.results = json.loads((folder / "results.json").read_text())
        args = self.results["args"]
        self.model = GuidedModel(load_model(args["model"]), args["cfg"])
        steps = (args["reference_nfe"] + 1) // 2
        self.reference = edm_sigmas(steps, self.model.sigma_min, self.model.sigma_max).float()
        self.teachers = {}
        self.label = f"{args['model']}" + ("" if args["model"] == "uncond" else f", CFG {args['cfg']:g}")

    def in_batches(self, run, seeds) -> torch.Tensor:
        return torch.cat([run(seeds[i:i + BATCH]) for i in range(0, len(seeds), BATCH)])

    def teacher(self, seeds) -> torch.Tensor:
        key = (seeds[0], len(seeds))
        if key not in self.teachers:
            self.teachers[key] = self.in_batches(teacher_run(self.model, self.reference, 0, True), seeds)
        return self.teachers[key]

    def finals(self, seeds, sigmas, solver, coords) -> torch.Tensor:
        return self.in_batches(lambda s: sample_pas(self.model.bind(s), noise(s) * sigmas[0], sigmas,
                                                    solver=solver, coords=coords), seeds)

    def row(self, row) -> dict:
        solver, kind = row["method"].split("+PAS", 1)
        coords = PASCoordinates.load(str(coords_path(self.folder, solver, coords_tag(row["nfe"], kind))))
        sigmas = (coords.sigmas.float() if kind == LEARNED
                  else edm_sigmas(row["nfe"], self.model.sigma_min, self.model.sigma_max).float())
        diff = row["vs_base"]["fd_teacher"]
        base_fd = row["bench"]["fd_teacher"]["value"] - diff["value"]
        entry = {"run": self.label, "nfe": row["nfe"], "method": row["method"], "steps": row["steps"],
                 "verdict": verdict(row), "fd_teacher_change": diff["value"] / base_fd,
                 "fd_teacher_diff": [diff["value"], diff["low"], diff["high"]]}
        for name, seeds in (("held_out", HELD_OUT), ("more", MORE)):
            teacher = self.teacher(seeds)
            entry[name] = statistics(self.finals(seeds, sigmas, solver, None), self.finals(seeds, sigmas, solver, coords),
                                     teacher)
        return entry

    def rows(self, every: bool) -> list[dict]:
        chosen = [r for r in self.results["rows"] if "+PAS" in r["method"] and r.get("steps")
                  and (every or len(r["steps"]) == 1)]
        return [self.row(r) for r in chosen]


def markdown(entries) -> str:
    header = ["run", "NFE", "row", "steps", "verdict", "FD teacher change",
              *[f"held-out {s}" for s in STATISTICS], *[f"128 seeds {s}" for s in STATISTICS]]
    order = {"better": 0, "level": 1, "worse": 2}
    rows = [[e["run"], e["nfe"], e["method"], str(e["steps"]), e["verdict"], f"{100 * e['fd_teacher_change']:+.2f}%",
             *[f"{100 * e['held_out'][s]:+.1f}" for s in STATISTICS], *[f"{100 * e['more'][s]:+.1f}" for s in STATISTICS]]
            for e in sorted(entries, key=lambda e: (e["run"], order[e["verdict"]], e["nfe"]))]
    return markdown_table(header, rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="folders of finished reproduce runs (with coords/)")
    parser.add_argument("--all", action="store_true", help="every corrected row, not only one-step ones")
    parser.add_argument("--out", default="out/held_out_probe")
    args = parser.parse_args(argv)
    entries = []
    for folder in args.runs:
        probe = RunProbe(Path(folder))
        for entry in probe.rows(args.all):
            print(json.dumps(entry), flush=True)
            entries.append(entry)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.json").write_text(json.dumps(entries, indent=1))
    table = markdown(entries)
    (out / "probe.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
