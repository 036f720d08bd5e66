"""The level-row confirmation: which rows it samples again, against which row, its seeds and its report."""

import json

import numpy as np
import pytest

from train_tools.data.seeds import CONFIRM_SEED_START
from train_tools.evaluation.quality import Scored
from train_tools.studies.level_confirm import confirm, level_rows, paired, report


def interval(value, low, high):
    return {"value": value, "low": low, "high": high}


def row(method, nfe, steps=None, diff=None):
    out = {"method": method, "nfe": nfe}
    if steps is not None:
        out["steps"] = steps
    if diff is not None:
        out["vs_base"] = {"fd_teacher": diff}
    return out


RUN_ROWS = [
    row("comfy dpmpp_2m", 8), row("dpmpp_2m [learned]", 8), row("comfy deis", 8),
    row("dpmpp_2m+PAS", 8, [1, 2], interval(-0.2, -0.6, 0.2)),  # level: taken, against ComfyUI's
    row("dpmpp_2m+PAS [multi-grid]", 8, [1], interval(0.1, -0.1, 0.3)),  # level: taken
    row("dpmpp_2m+PAS [learned]", 8, [1, 3], interval(0.1, -0.5, 0.7)),  # level: against the learned plain row
    row("deis+PAS", 8, [1, 2], interval(-0.5, -0.8, -0.2)),  # better: skipped
    row("deis+PAS [multi-grid]", 8, [1, 2], interval(0.5, 0.2, 0.8)),  # worse: skipped
    row("deis+PAS [learned]", 8, [], interval(0.0, 0.0, 0.0)),  # corrects nothing: skipped
    row("comfy dpmpp_2m", 10), row("dpmpp_2m+PAS", 10, [2], interval(0.0, -0.1, 0.1)),
]


def test_level_rows_take_corrected_level_rows_against_the_runs_base():
    found = level_rows(RUN_ROWS)
    assert [(c["nfe"], c["pas"], c["base"]) for c in found] == [
        (8, "dpmpp_2m+PAS", "comfy dpmpp_2m"), (8, "dpmpp_2m+PAS [multi-grid]", "comfy dpmpp_2m"),
        (8, "dpmpp_2m+PAS [learned]", "dpmpp_2m [learned]"), (10, "dpmpp_2m+PAS", "comfy dpmpp_2m")]
    assert found[0]["run"] == interval(-0.2, -0.6, 0.2) and found[0]["steps"] == [1, 2]
    assert [c["nfe"] for c in level_rows(RUN_ROWS, [10])] == [10]


def test_level_rows_refuse_a_row_without_its_base():
    with pytest.raises(SystemExit, match="no uncorrected row"):
        level_rows([row("euler+PAS", 4, [1], interval(0.0, -1.0, 1.0))])


def scored(fd, boots):
    out = Scored()
    out.values["fd_teacher"], out.boots["fd_teacher"] = fd, np.asarray(boots, float)
    return out


def test_paired_differences_are_absolute_and_relative_on_shared_resamples():
    a, b = scored(2.0, [1.0, 2.0, 3.0]), scored(4.0, [2.0, 4.0, 6.0])
    diff = paired(a, b)["fd_teacher"]
    half_abs = 1.96 * np.std([-1.0, -2.0, -3.0], ddof=1)
    assert diff["abs"] == pytest.approx(interval(-2.0, -2.0 - half_abs, -2.0 + half_abs))
    # every resample is exactly half of b's: the relative difference has no spread
    assert diff["rel"] == pytest.approx(interval(-0.5, -0.5, -0.5))


def test_report_counts_verdicts_and_shows_both_seed_sets():
    def case(pas, verdict, fresh):
        rel = {"fd_teacher": interval(fresh, fresh - 0.1, fresh + 0.1), "fd_data": interval(0.0, -0.1, 0.1),
               "rmse": interval(-0.02, -0.03, -0.01)}
        return {"nfe": 8, "pas": pas, "base": "comfy x", "steps": [1, 3], "run": interval(-0.2, -0.6, 0.2),
                "fresh": {m: {"abs": interval(fresh, fresh - 0.1, fresh + 0.1), "rel": rel[m]} for m in rel},
                "values": {"pas": {"fd_teacher": 1.5}, "base": {"fd_teacher": 1.7}}, "verdict": verdict}

    result = {"label": "m", "n": 2000, "run_n": 400, "seed_start": CONFIRM_SEED_START, "run": "r", "seconds": 120.0,
              "floor": {"fd_teacher": 0.5, "fd_data": 9.0},
              "cases": [case("x+PAS", "better", -0.2), case("x+PAS [multi-grid]", "level", 0.05)]}
    text = report(result, "cmd")
    assert "Rows level on the run's 400 seeds: 2." in text and "1 better, 1 level, 0 worse." in text
    assert "| 8 | x+PAS | comfy x | 1, 3 | -0.2 [-0.6, +0.2] | 1.7 -> 1.5 | -0.2 [-0.3, -0.1] |" in text
    assert "| level |" in text and "`cmd` (2 min)" in text


def test_confirm_refuses_a_run_evaluated_on_the_fresh_seeds(tmp_path):
    saved = {"args": {"eval_seed_start": CONFIRM_SEED_START, "eval": 400, "model": "uncond", "cfg": 1.0},
             "rows": RUN_ROWS}
    (tmp_path / "results.json").write_text(json.dumps(saved))
    with pytest.raises(SystemExit, match="overlap the fresh seeds"):
        confirm(tmp_path, None, 2000)


def test_results_are_named_by_study_seeds_and_nfe_and_reports_rebuild(tmp_path):
    from train_tools.studies import fresh_seeds, level_confirm

    assert fresh_seeds.stem(tmp_path, "level_confirm", 2000, None) == tmp_path / "level_confirm_n2000"
    assert fresh_seeds.stem(tmp_path, "best_row_confirm", 500, [8, 10]) == tmp_path / "best_row_confirm_n500_nfe8-10"
    result = {"label": "m", "n": 20, "run_n": 6, "seed_start": CONFIRM_SEED_START, "run": "r", "seconds": 60.0,
              "floor": {"fd_teacher": 0.5, "fd_data": 9.0}, "cases": []}
    saved = tmp_path / "level_confirm_n20.json"
    fresh_seeds.write(result, saved.with_suffix(""), "train_tools.studies.level_confirm", ["--run", "r"], report)
    written = saved.with_suffix(".md").read_text()
    assert "`python -m train_tools.studies.level_confirm --run r` (1 min)" in written
    saved.with_suffix(".md").unlink()
    assert level_confirm.main(["--report", str(saved)]) is None  # samples nothing
    assert saved.with_suffix(".md").read_text() == written
