"""The best-row confirmation: which built-ins it samples again, its seeds, and its verdict lines."""

import json

import pytest

from train_tools.bench_setup import BenchSetup
from train_tools.data.seeds import CONFIRM_SEED_START, EVAL_SEED_START
from train_tools.studies.best_row_confirm import closest, confirm, contenders, report, why_not


def interval(value, low, high):
    return {"value": value, "low": low, "high": high}


def test_contenders_split_fd_level_from_rmse_short():
    best = {"each": {
        "comfy a": {"fd_teacher": interval(-0.05, -0.12, 0.02), "rmse": interval(-0.30, -0.35, -0.25)},  # FD level
        "comfy b": {"fd_teacher": interval(-0.40, -0.50, -0.30), "rmse": interval(-0.05, -0.08, -0.02)},  # RMSE short
        "comfy c": {"fd_teacher": interval(-0.40, -0.50, -0.30), "rmse": interval(-0.20, -0.25, -0.15)},  # beaten
        "comfy d": {"fd_teacher": interval(0.10, 0.0, 0.20), "rmse": interval(0.05, 0.0, 0.1)},  # worse: level list
    }}
    assert contenders(best) == (["comfy a", "comfy d"], ["comfy b"])


def test_setup_seeds_start_where_asked():
    setup = BenchSetup("cond", 1.0, 3, guided=None, weights_md5="x")
    assert setup.seeds("eval") == [EVAL_SEED_START + i for i in range(3)]
    fresh = BenchSetup("cond", 1.0, 3, guided=None, weights_md5="x", eval_start=CONFIRM_SEED_START)
    assert fresh.seeds("eval") == [CONFIRM_SEED_START, CONFIRM_SEED_START + 1, CONFIRM_SEED_START + 2]
    assert fresh.seeds("reference") == setup.seeds("reference")


def test_report_names_what_is_beaten_and_what_is_not():
    diff = {"fd_teacher": interval(-0.10, -0.15, -0.05), "fd_data": interval(0.0, -0.1, 0.1),
            "rmse": interval(-0.2, -0.25, -0.15)}
    result = {"label": "m", "n": 2000, "run_n": 400, "seed_start": CONFIRM_SEED_START, "run": "r", "seconds": 60.0,
              "floor": {"fd_teacher": 1.0, "fd_data": 9.0},
              "nfe": {"8": {"pas": "x+PAS", "values": {"x+PAS": {"fd_teacher": 2.0}, "comfy y": {"fd_teacher": 2.2},
                                                        "comfy z": {"fd_teacher": 2.1}},
                            "against": {"comfy y": {"run": diff, "confirm": diff, "teacher": diff, "beaten": True},
                                        "comfy z": {"run": diff, "confirm": diff, "teacher": diff, "beaten": False}},
                            "rmse_short": {"comfy w": -0.05}}}}
    result["nfe"]["8"]["against"]["comfy z"]["confirm"] = {**diff, "fd_teacher": interval(0.02, -0.03, 0.07)}
    text = report(result, "cmd")
    assert "| 8 | comfy y | x+PAS | 2.2 -> 2 | -10.0 [-15.0, -5.0] | -10.0 [-15.0, -5.0] |" in text
    assert "| yes |" in text and "| no: FD level |" in text
    assert ("* NFE 8: x+PAS does not beat comfy z (FD level) on these seeds; RMSE short of the 10% margin in the run "
            "against comfy w (-5.0%).") in text


def test_why_not_names_the_failing_condition():
    fd = {"better": interval(-0.1, -0.15, -0.05), "level": interval(-0.1, -0.2, 0.01), "worse": interval(0.1, 0.05, 0.15)}
    rmse = interval(-0.092, -0.1, -0.08)
    assert why_not({"beaten": True, "confirm": {"fd_teacher": fd["better"], "rmse": rmse}}) == ""
    assert why_not({"beaten": False, "confirm": {"fd_teacher": fd["better"], "rmse": rmse}}) == "FD better, RMSE -9.2%"
    assert why_not({"beaten": False, "confirm": {"fd_teacher": fd["level"], "rmse": rmse}}) == "FD level"
    assert why_not({"beaten": False, "confirm": {"fd_teacher": fd["worse"], "rmse": rmse}}) == "FD worse"


def test_closest_ranks_the_run_built_ins_by_fd_and_skips_those_already_taken():
    def row(method, nfe, fd):
        return {"method": method, "nfe": nfe, "bench": {"fd_teacher": interval(fd, fd - 1, fd + 1)}}

    rows = [row("comfy a", 4, 3.0), row("comfy b", 4, 1.0), row("comfy c", 4, 2.0), row("comfy b", 5, 9.0),
            row("x+PAS", 4, 0.5)]
    names = ["comfy a", "comfy b", "comfy c"]
    assert closest(rows, 4, names, 2, skip=[]) == ["comfy b", "comfy c"]
    assert closest(rows, 4, names, 2, skip=["comfy b"]) == ["comfy c", "comfy a"]
    assert closest(rows, 4, names, 0, skip=[]) == []


def test_confirm_refuses_a_run_evaluated_on_the_fresh_seeds(tmp_path):
    saved = {"args": {"eval_seed_start": CONFIRM_SEED_START + 100, "eval": 400, "model": "cond", "cfg": 4.0},
             "rows": [], "extra": {"bench": {"best_vs_builtin": {"8": {"pas": "x+PAS", "each": {}}}}}}
    (tmp_path / "results.json").write_text(json.dumps(saved))
    with pytest.raises(SystemExit, match="overlap the fresh seeds"):
        confirm(tmp_path, [8], 2000)
