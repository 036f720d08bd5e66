"""train_tools/studies/time_offsets.py: the study's four rows come from one library search_with_offsets (the
offsets alone, PAS, PAS on the shifted model), and its tally counts only comparisons that differ. The library's
offsets themselves are tested in test_offsets.py."""
from dataclasses import replace

import torch

from comfyui_pas.search import search_with_offsets
from train_tools.studies.time_offsets import row_coordinates


def test_the_rows_come_from_one_library_search(gmm_training):
    denoiser, x, sigmas, targets, settings = gmm_training
    settings = replace(settings, time_offsets=True)
    searched = search_with_offsets(denoiser, x, sigmas, targets, "euler", {}, settings)
    rows = row_coordinates(searched, "euler", settings, x)
    assert rows["plain"] is None
    assert rows["PAS"].log_offsets is None and rows["PAS"].steps == searched.plain.entry.steps
    assert torch.equal(rows["PAS"].coordinates, searched.plain.entry.coordinates)
    if searched.shifted is None:
        assert rows["offsets"] is None and rows["PAS + offsets"] is rows["PAS"]
    else:
        offsets = torch.tensor(searched.fit["fitted"], dtype=torch.float64)
        assert rows["offsets"].steps == [] and torch.equal(rows["offsets"].log_offsets, offsets)
        assert torch.equal(rows["PAS + offsets"].log_offsets, offsets)
        assert rows["PAS + offsets"].steps == searched.shifted.entry.steps


def test_tally_skips_identical_rows_and_rows_without_the_comparison():
    from train_tools.studies.time_offsets import tally

    def interval(low, high):
        return {"value": (low + high) / 2, "low": low, "high": high}

    same = {m: interval(0.0, 0.0) for m in ("fd_teacher_vs_PAS", "fd_data_vs_PAS", "rmse_vs_PAS")}
    rows = [{"row": "plain"}, {"row": "PAS + offsets", **same},
            {"row": "PAS + offsets", "fd_teacher_vs_PAS": interval(-2.0, -1.0), "fd_data_vs_PAS": interval(-1.0, 0.5),
             "rmse_vs_PAS": interval(0.1, 0.3)}]
    assert tally(rows, "vs_PAS") == {"fd_teacher": [1, 0, 0], "fd_data": [0, 1, 0], "rmse": [0, 0, 1]}


def test_the_report_marks_the_chosen_rows_and_counts_them():
    from train_tools.studies.time_offsets import report

    def interval(value):
        return {"value": value, "low": value - 0.5, "high": value + 0.5}

    def row(name, fd, chosen=False, by_error=False, vs_pas=None):
        entry = {"nfe": 4, "solver": "euler", "rule": "sharpness", "row": name, "steps": [], "chosen": chosen,
                 "chosen_by_error": by_error, "offsets": [0.0, -0.2, 0.0, 0.0] if "offsets" in name else None,
                 "fd_teacher": fd, "fd_data": fd + 10, "rmse": 0.1, "contrast": 0.6, "detail": 0.2,
                 "offset_fit": None, "best_plain": "euler"}
        for metric in ("fd_teacher", "fd_data", "rmse"):
            entry[f"{metric}_vs_plain"] = interval(0.0 if name == "plain" else -2.0)
            entry[f"{metric}_vs_best_plain"] = interval(0.0 if name == "plain" else -2.0)
            if vs_pas is not None:
                entry[f"{metric}_vs_PAS"] = interval(vs_pas)
                entry[f"{metric}_vs_offsets"] = interval(-1.0)
        return entry

    rows = [row("plain", 10.0), row("offsets", 8.0), row("PAS", 6.0, by_error=False),
            row("PAS + offsets", 7.0, chosen=False, by_error=True, vs_pas=1.0)]
    rows[1]["offset_fit"] = {"confirmed": True, "kept": False, "kept_by_error": True, "rollouts": 30}
    rows[2]["chosen"] = True
    text = report({"setting": "test", "rule": "auto", "offset_loss": "l1", "n": 400,
                   "teacher": {"contrast": 0.6, "detail": 0.2}, "rows": rows}, "python -m study")
    assert "| PAS (chosen) |" in text and "| PAS + offsets |" in text
    assert "in 0, by the error alone in 1" in text and "offset loss L1" in text
    lines = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| chosen")}
    assert "1 / 0 / 0" in lines["chosen vs plain"]  # PAS beat plain (interval -2.5 .. -1.5)
    assert lines["chosen vs PAS"].count("0 / 0 / 0") == 3  # PAS against itself: no comparison
    worse = next(line for line in text.splitlines() if line.startswith("| chosen by the error alone vs PAS"))
    assert worse.count("0 / 0 / 1") == 3  # PAS + offsets against PAS: +1 [+0.5, +1.5], worse
