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
