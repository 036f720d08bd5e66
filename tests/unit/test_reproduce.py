"""The reproduction run end to end on the bundled model, and torchrun sharding equal to one process."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from comfyui_pas import edm_sigmas

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--nfe", "4", "--train", "6", "--eval", "6", "--teacher-nfe", "8", "--reference-nfe", "8", "--no-fid", "--batch", "1",
        "--save-samples", "--builtins", "--solvers", "euler", "ipndm"]


def run(args, out, processes=1, **env_extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), **env_extra)
    if processes == 1:
        command = [sys.executable, "-m", "train_tools.reproduction.reproduce"]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
                   "--master-addr", "127.0.0.1", "--master-port", "29571", "-m", "train_tools.reproduction.reproduce"]
    result = subprocess.run(command + args + ["--out", str(out)], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


def best_row_file(path, cfg=4.0, nfe=4):
    """A best-row study's saved choices as best_row.json holds them: lms on rho 5, euler on rho 9."""
    rows = [{"nfe": nfe, "method": "lms", "kind": "builtin", "rho": 5.0},
            {"nfe": nfe, "method": "euler", "kind": "builtin", "rho": 9.0},
            {"nfe": nfe, "method": "euler+PAS", "kind": "pas", "rho": 9.0}]
    path.write_text(json.dumps({"args": {"model": "cond", "cfg": cfg, "nfe": [nfe]}, "rows": rows}))
    return str(path)


def test_two_process_run_equals_single_process(tmp_path):
    best_grids = ["--best-grid-builtins", best_row_file(tmp_path / "best_row.json")]
    printed = run(TINY + best_grids, tmp_path / "one")
    run(TINY + best_grids, tmp_path / "two", processes=2)
    assert "| 4 | euler+PAS | euler |" in printed
    one, two = load_file(str(tmp_path / "one" / "samples.safetensors")), load_file(str(tmp_path / "two" / "samples.safetensors"))
    assert one.keys() == two.keys() and {"euler+PAS@4", "ipndm+PAS@4", "comfy ipndm@4", "teacher@0"} <= set(one)
    for key in one:
        assert torch.equal(one[key], two[key]), key  # batch 1: every seed is evaluated alone in both runs
    # the call cache answers repeated calls (every row's start) and changes no sample
    run(TINY + best_grids + ["--no-call-cache"], tmp_path / "uncached")
    uncached = load_file(str(tmp_path / "uncached" / "samples.safetensors"))
    assert uncached.keys() == one.keys() and all(torch.equal(one[key], uncached[key]) for key in one)
    extras = [json.loads((tmp_path / name / "results.json").read_text())["extra"] for name in ("one", "two", "uncached")]
    # the same calls in all, split over the processes; each process reuses only its own calls
    counts = [extras[0]["repeated_calls"], extras[1]["repeated_calls"]]
    assert counts[0]["rows_called"] == counts[1]["rows_called"] and "repeated_calls" not in extras[2]
    assert 0 < counts[1]["rows_reused"] <= counts[0]["rows_reused"] < counts[0]["rows_called"]
    rows = json.loads((tmp_path / "one" / "results.json").read_text())["rows"]
    rows_two = json.loads((tmp_path / "two" / "results.json").read_text())["rows"]
    # the bench scores its rows on both ranks: the same figures as one process scoring them all
    assert [r.get("bench") for r in rows] == [r.get("bench") for r in rows_two] and "bench" in rows[1]
    assert [r.get("vs_base") for r in rows] == [r.get("vs_base") for r in rows_two]
    assert {r["method"] for r in rows} == {"teacher (Heun 8 NFE)", "comfy euler", "euler+PAS", "comfy ipndm",
                                           "ipndm+PAS", "euler [learned]", "euler+PAS [learned]", "ipndm [learned]",
                                           "ipndm+PAS [learned]", "comfy lms (rho 5)", "comfy euler (rho 9)"}
    # the best-row grids: ComfyUI's karras grid with the study's rho, and ComfyUI's own function on it
    lms = next(r for r in rows if r["method"] == "comfy lms (rho 5)")
    assert lms["sigmas"] == edm_sigmas(4, 0.002, 80.0, rho=5.0, append_zero=True).float().tolist()
    best = json.loads((tmp_path / "one" / "results.json").read_text())["extra"]["bench"]["best_vs_builtin"]["4"]
    assert set(best["each"]) == {"comfy euler", "comfy ipndm", "comfy lms (rho 5)", "comfy euler (rho 9)"}
    # the teacher's own samples against the best built-in, from the two rows' FD values
    fd = {r["method"]: r["bench"]["fd_teacher"]["value"] for r in rows}
    teacher = best["teacher"]["fd_teacher"]
    assert teacher["value"] == pytest.approx(fd["teacher (Heun 8 NFE)"] / fd[best["builtin"]] - 1)
    assert teacher["low"] < teacher["value"] < teacher["high"]
    assert (tmp_path / "one" / "coords" / "euler_nfe4.safetensors").is_file()
    phases = json.loads((tmp_path / "one" / "results.json").read_text())["extra"]["phase_seconds"]
    assert {"references", "training teacher", "search", "sampling", "learned schedules", "bench"} <= set(phases)
    # inception_check finds each row's grid and coordinates file again
    from train_tools.bench_setup import BenchSetup
    from train_tools.studies.inception_check import row_sampler

    setup = BenchSetup.create("cond", 4.0, n=6)
    learned = next(r["sigmas"] for r in rows if r["method"] == "euler [learned]")
    # the Trainer's `grid: learned`: the end-to-end choice, ending in 0 as ComfyUI's grids; the row names it
    chosen = next(r["solver"] for r in rows if r["method"] == "euler+PAS [learned]").split("; grid ")[1]
    assert learned[-1] == 0.0 and len(learned) == 5
    if chosen != "local":
        grid = edm_sigmas(4, setup.guided.sigma_min, setup.guided.sigma_max, rho=float(chosen.split()[-1]),
                          append_zero=True)
        assert learned == grid.float().tolist()
    _, sigmas = row_sampler(setup, tmp_path / "one", rows, "euler+PAS [learned]", 4)
    assert sigmas.tolist() == torch.tensor(learned, dtype=torch.float32).tolist()
    _, sigmas = row_sampler(setup, tmp_path / "one", rows, "euler+PAS", 4)
    assert len(sigmas) == 5 and float(sigmas[-1]) == pytest.approx(setup.guided.sigma_min)
    assert (tmp_path / "one" / "error_curve_euler_nfe4.png").is_file()
    written = (tmp_path / "one" / "results.md").read_text()
    assert "Targets, judged on paired 95% intervals of the quality bench:" in written
    assert "Targets, judged on RMSE vs the reference:" in written and "FID (no interval)" not in written
    assert {"fd_teacher", "fd_data", "acc", "rmse"} <= set(rows[1]["bench"])  # conditional model: class accuracy
    cells = {}  # the rows table comes first: later tables name the same methods
    for line in written.splitlines():
        if line.startswith("| "):
            cells.setdefault(line.split(" | ")[1], line.split(" | "))
    assert cells["teacher (Heun 8 NFE)"][6] == "1.000"  # the reference shows its own class on every seed
    pas = next(r for r in rows if r["method"] == "euler+PAS")
    assert cells["euler+PAS"][5:7] == [f"{pas['bench'][m]['value']:.3f}" for m in ("acc", "agree")]
    assert set(pas["vs_base"]) == {"fd_teacher", "fd_data", "rmse", "agree"}
    corrected = sum(1 for r in rows if r.get("steps") and "vs_base" in r)
    assert f"Teacher's class against the uncorrected row (paired 95% interval), {corrected} PAS rows" in written
    (tmp_path / "one" / "results.md").unlink()
    reprinted = run(["--report", str(tmp_path / "one" / "results.json")], tmp_path / "unused")
    assert (tmp_path / "one" / "results.md").read_text() == written and written.strip() in reprinted
    check_level_confirm(tmp_path / "one")


def check_level_confirm(folder):
    """level_confirm samples a level row and its uncorrected row again on fresh seeds, with the run's coordinates."""
    from train_tools.studies.level_confirm import confirm

    saved = json.loads((folder / "results.json").read_text())
    pas = next(r for r in saved["rows"] if r["method"] == "euler+PAS")
    assert pas["steps"]  # the tiny run corrects euler
    pas["vs_base"]["fd_teacher"] = {"value": 0.0, "low": -1.0, "high": 1.0}  # made level, so that it is taken
    (folder / "results.json").write_text(json.dumps(saved))
    result = confirm(folder, [4], 4)
    case = next(c for c in result["cases"] if c["pas"] == "euler+PAS")
    assert case["base"] == "comfy euler" and case["verdict"] in ("better", "level", "worse")
    values = case["values"]
    assert values["pas"]["fd_teacher"] != values["base"]["fd_teacher"]  # the coordinates were applied
    assert case["fresh"]["fd_teacher"]["abs"]["value"] == pytest.approx(
        values["pas"]["fd_teacher"] - values["base"]["fd_teacher"])


def test_two_process_fid_equals_single_process(tmp_path):
    """FID rows are scored on different ranks and the uncached reference statistics are computed with the
    Inception pass split across ranks; both must agree with one process (each run gets its own cache)."""
    import numpy as np

    from train_tools.data.fashion_mnist import load_images
    from train_tools.evaluation import fid

    args = ["--nfe", "4", "--train", "4", "--eval", "4", "--teacher-nfe", "6", "--reference-nfe", "6",
            "--fid-ref", "10", "--fid", "--batch", "2", "--solvers", "euler", "--no-learned", "--model", "uncond"]
    run(args, tmp_path / "one", PAS_FID_CACHE=str(tmp_path / "cache_one"))
    run(args, tmp_path / "two", processes=2, PAS_FID_CACHE=str(tmp_path / "cache_two"))
    rows = {}
    for name in ("one", "two"):
        for row in json.loads((tmp_path / name / "results.json").read_text())["rows"]:
            rows.setdefault(row["method"], []).append(row["fid"])
    assert set(rows) == {"teacher (Heun 6 NFE)", "comfy euler", "euler+PAS"}
    for method, (single, sharded) in rows.items():
        assert np.isfinite(single) and single > 0, method
        assert abs(single - sharded) <= 1e-3 * single, (method, single, sharded)
    [cached] = (tmp_path / "cache_two").glob("fmnist-test-n10-*.npz")
    mu, sigma = fid.load_stats(cached)
    expected = fid.statistics(fid.features(load_images("test")[:10]))
    # Equal up to float rounding: Inception sees batches of 5 per rank instead of one batch of 10.
    assert np.allclose(mu, expected[0], atol=1e-5) and np.allclose(sigma, expected[1], atol=1e-5)


def test_best_grid_builtins_refuse_another_setting(tmp_path):
    from argparse import Namespace

    from train_tools.reproduction.reproduce import best_row_grids

    comfy = {"lms": None, "euler": None}
    args = Namespace(model="cond", cfg=4.0, nfe=[4])
    assert best_row_grids([best_row_file(tmp_path / "a.json")], args, comfy) == {4: {"lms": 5.0, "euler": 9.0}}
    committed = ROOT / "docs" / "results" / "best_row_grids_cond_cfg4.json"  # make reproduce's copy of the choices
    assert best_row_grids([str(committed)], Namespace(model="cond", cfg=4.0, nfe=[4, 6]), comfy | {
        name: None for name in ("ipndm", "ipndm_v", "deis", "dpmpp_2m", "res_multistep", "uni_pc", "uni_pc_bh2",
                                "gradient_estimation")})[4]["deis"] == 9.0
    with pytest.raises(SystemExit, match="CFG 1"):  # the study of another CFG picked other grids
        best_row_grids([best_row_file(tmp_path / "b.json", cfg=1.0)], args, comfy)
    notes = []  # an NFE the study did not cover keeps the EDM-grid built-ins, and the run says so
    assert best_row_grids([best_row_file(tmp_path / "c.json")], Namespace(model="cond", cfg=4.0, nfe=[4, 5]), comfy,
                          notes.append) == {4: {"lms": 5.0, "euler": 9.0}}
    assert notes == ["--best-grid-builtins: no best-row grids at NFE [5]; the built-ins there are on the EDM grid only"]
    with pytest.raises(SystemExit, match="not among ComfyUI's samplers"):
        best_row_grids([best_row_file(tmp_path / "d.json")], args, {"euler": None})
    (tmp_path / "e.json").write_text("{not json")
    with pytest.raises(SystemExit, match="is not a best-row study"):
        best_row_grids([str(tmp_path / "e.json")], args, comfy)


def test_best_row_must_beat_every_builtin():
    """The best PAS row is judged against each built-in: the best one in FD may not be the hardest in RMSE."""
    from train_tools.reproduction.reproduce_report import interval_checks

    def iv(value, low, high):
        return {"value": value, "low": low, "high": high}

    against_best = {"fd_teacher": iv(-0.3, -0.4, -0.2), "fd_data": iv(0, -0.1, 0.1), "rmse": iv(-0.2, -0.25, -0.15)}
    against_euler = {"fd_teacher": iv(-0.5, -0.6, -0.4), "fd_data": iv(0, -0.1, 0.1), "rmse": iv(-0.05, -0.06, -0.04)}
    best = {"pas": "euler+PAS [learned]", "builtin": "comfy lms (rho 5)", **against_best,
            "each": {"comfy lms (rho 5)": against_best, "comfy euler (rho 5)": against_euler}}
    target = "at NFE 4 the best PAS row beats every ComfyUI built-in in FD to the teacher (interval below 0) and in RMSE by at least 10%"
    checks = {t: (met, evidence) for t, met, evidence in interval_checks([], {"bench": {"best_vs_builtin": {"4": best}}})}
    met, evidence = checks[target]
    assert not met and "not beaten: comfy euler (rho 5) (FD -50 [-60, -40]%, RMSE -5 [-6, -4]%)" in evidence
    best["each"]["comfy euler (rho 5)"] = against_best
    checks = {t: (met, evidence) for t, met, evidence in interval_checks([], {"bench": {"best_vs_builtin": {"4": best}}})}
    assert checks[target][0] and "not beaten" not in checks[target][1]
    # where even the teacher's own samples are level with the built-in, the evidence says so
    best["teacher"] = {"fd_teacher": iv(-0.05, -0.12, 0.02), "fd_data": iv(0, -0.1, 0.1)}
    checks = {t: (met, evidence) for t, met, evidence in interval_checks([], {"bench": {"best_vs_builtin": {"4": best}}})}
    assert "the teacher itself vs comfy lms (rho 5): FD -5 [-12, 2]% (not measurable" in checks[target][1]
    best["teacher"]["fd_teacher"] = iv(-0.5, -0.6, -0.4)
    checks = {t: (met, evidence) for t, met, evidence in interval_checks([], {"bench": {"best_vs_builtin": {"4": best}}})}
    assert "FD -50 [-60, -40]%" in checks[target][1] and "not measurable" not in checks[target][1]


def test_agree_summary_counts_pas_rows_by_their_paired_interval():
    from train_tools.reproduction.reproduce_report import agree_summary

    def row(method, steps, low, high):
        return {"method": method, "nfe": 5, "steps": steps, "vs_base": {"agree": {"value": (low + high) / 2,
                                                                                  "low": low, "high": high}}}

    rows = [row("euler+PAS", [1, 2], 0.01, 0.05), row("deis+PAS", [1], -0.02, 0.03),
            row("ipndm+PAS", [2], -0.09, -0.01), row("dpmpp_2m+PAS", [], -0.2, -0.1),  # corrects nothing: left out
            {"method": "comfy euler", "nfe": 5}]
    assert agree_summary(rows) == ("Teacher's class against the uncorrected row (paired 95% interval), 3 PAS rows "
                                   "that correct a step: 1 up, 1 level, 1 down (ipndm+PAS NFE 5: -0.05 [-0.09, -0.01]).")


def test_overlapping_seeds_are_refused(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-m", "train_tools.reproduction.reproduce", *TINY, "--eval-seed-start", "3",
                             "--out", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode != 0 and "overlap" in result.stderr


def test_min_held_out_gain_replaces_the_rules():
    from comfyui_pas.settings import SearchSettings
    from train_tools.reproduction.reproduce import parse_args, rule_overrides

    args = parse_args(["--preset", "quick", "--min-held-out-gain", "0.02"])
    overrides = rule_overrides(args)
    assert overrides == {"min_held_out_gain": 0.02}
    assert SearchSettings.for_rule(args.rule, "euler", 1.0, **overrides).min_held_out_gain == 0.02
    assert SearchSettings.for_rule(args.rule, "euler", 1.0, **overrides).guard == "sharpness"
    assert rule_overrides(parse_args(["--preset", "quick"])) == {}
    assert parse_args(["--preset", "quick", "--auto-default", "patches"]).auto_default == "patches"
    with pytest.raises(SystemExit):
        parse_args(["--preset", "quick", "--min-held-out-gain", "1.5"])


def test_time_offsets_switch_on_the_option_for_every_pas_row():
    from comfyui_pas.settings import SearchSettings
    from train_tools.reproduction.reproduce import parse_args, rule_overrides

    overrides = rule_overrides(parse_args(["--preset", "quick", "--time-offsets", "--offset-loss", "l2"]))
    assert overrides == {"time_offsets": True, "offset_loss": "l2"}
    settings = SearchSettings.for_rule("auto", "deis", 4.0, **overrides)
    assert settings.time_offsets and settings.offset_loss == "l2" and settings.rule == "paper"
    assert rule_overrides(parse_args(["--preset", "quick", "--time-offsets"])) == {"time_offsets": True}
    with pytest.raises(SystemExit):
        parse_args(["--preset", "quick", "--offset-loss", "l1"])


def test_a_pas_row_that_corrects_nothing_takes_its_base_rows_samples():
    from train_tools.reproduction.reproduce import Run

    run = Run.__new__(Run)  # the row bookkeeping alone, without a model
    base = torch.arange(6.0).reshape(3, 2)
    run.samples, run.rows, run.reference, run.eval_seeds = {("comfy euler", 4): base}, [], torch.zeros(3, 2), [7, 8, 9]
    run.seeds_map = lambda sample, seeds: sample(seeds)

    def never(seeds):
        raise AssertionError("an uncorrected PAS row must not be sampled again")

    run.add_pas_row("euler+PAS", 4, never, [], params=0)
    assert run.samples[("euler+PAS", 4)] is base and run.rows[-1]["steps"] == []
    assert run.rows[-1]["rmse"] == pytest.approx(float(base.pow(2).mean().sqrt()))
    run.add_pas_row("euler+PAS [multi-grid]", 4, never, [], params=0)  # judged against the EDM-grid row too
    assert run.samples[("euler+PAS [multi-grid]", 4)] is base
    corrected = torch.ones(3, 2)
    run.add_pas_row("euler+PAS [learned]", 4, lambda seeds: corrected[:len(seeds)], [], params=0)  # no base row
    run.add_pas_row("ipndm+PAS", 4, lambda seeds: corrected[:len(seeds)], [1], params=3)
    assert torch.equal(run.samples[("ipndm+PAS", 4)], corrected) and run.rows[-1]["steps"] == [1]
    assert torch.equal(run.samples[("euler+PAS [learned]", 4)], corrected)


def test_a_builtin_repeated_on_the_same_grid_is_sampled_once():
    from train_tools.reproduction.reproduce import Run

    run = Run.__new__(Run)  # the row bookkeeping, with ComfyUI's sampler replaced by one that counts its grids
    run.samples, run.rows, run.reference, run.eval_seeds = {}, [], torch.zeros(3, 1), [7, 8, 9]
    run.plain_finals, run.reused = {}, []
    run.model = type("Model", (), {"bind": lambda self, seeds: None})()
    run.seeds_map = lambda sample, seeds: sample(seeds)
    grids = []

    def counting(model, x, sigmas, **_):
        grids.append(sigmas.tolist())
        return torch.full((3, 1), float(len(sigmas)))

    run.comfy = {"lms": counting}
    karras5 = edm_sigmas(4, 0.002, 80.0, rho=5.0, append_zero=True).float()
    run.add_plain_row("comfy lms (rho 5)", 4, "lms", karras5)
    run.add_plain_row("lms [learned]", 4, "lms", karras5.clone(), sigmas=karras5.tolist())  # the same grid
    run.add_plain_row("comfy lms (rho 7)", 4, "lms", edm_sigmas(4, 0.002, 80.0, append_zero=True).float())
    assert len(grids) == 2 and run.reused == ["lms [learned]@4"]
    assert run.samples[("lms [learned]", 4)] is run.samples[("comfy lms (rho 5)", 4)]
    assert run.rows[1]["sigmas"] == karras5.tolist() and run.rows[1]["rmse"] == pytest.approx(5.0)


def test_target_checks_judge_hand_made_rows():
    from train_tools.reproduction.reproduce_report import (
        fid_keys,
        format_targets,
        summary_table,
        target_checks,
    )

    def row(method, nfe, fid):
        return {"method": method, "nfe": nfe, "fid": fid, "rmse": fid / 100}

    rows = [row("teacher (Heun 200 NFE)", 0, 10.0),
            row("comfy euler", 5, 40.0), row("euler+PAS", 5, 30.0), row("comfy deis", 5, 25.0),
            row("deis+PAS", 5, 22.0), row("comfy dpmpp_2m", 5, 24.0), row("dpmpp_2m+PAS", 5, 24.5),
            row("comfy uni_pc", 5, 35.0), row("deis [learned]", 5, 20.0), row("deis+PAS [learned]", 5, 18.0),
            row("deis+PAS [multi-grid]", 5, 22.6),
            row("comfy euler", 8, 30.0), row("euler+PAS", 8, 15.0), row("comfy deis", 8, 16.0)]
    extra = {"multigrid_cost": {"deis": {"multi": 1400, "single_largest": 1000, "largest_nfe": 10}}}
    checks = {target: (met, evidence) for target, met, evidence in target_checks(rows, "fid", extra)}
    assert checks["every solver+PAS is never worse than the same solver uncorrected"] == (
        False, "dpmpp_2m+PAS NFE 5: 24.00 -> 24.50")
    assert checks["at NFE 5 the best PAS row beats every ComfyUI built-in"] == (
        True, "deis+PAS [learned] 18.00 vs comfy dpmpp_2m 24.00 (-25.0%)")  # learned rows are not built-ins
    assert checks["learned schedule + PAS beats the EDM (karras) grid + PAS at NFE 4-6"] == (
        True, "deis+PAS [learned] NFE 5: 22.00 -> 18.00 (-18%)")
    rmse_checks = {target: (met, evidence) for target, met, evidence in target_checks(rows, "rmse", extra)}
    assert rmse_checks["at NFE 8 the best PAS row beats every ComfyUI built-in by at least 10%"][0] is False  # -6%
    assert rmse_checks["the multi-grid file keeps at least 90% of each grid's single-run gain"] == (
        False, "deis+PAS [multi-grid] NFE 5: 80%")  # gain 0.024 of the single run's 0.030
    assert rmse_checks["one training for every NFE costs at most 1.5x the model calls of one training at NFE 10"] == (
        True, "deis 1400 vs 1000 calls (1.40x)")
    # with the bench's paired RMSE intervals, a point difference inside the interval is not "worse"
    check = "no solver+PAS is worse than the same solver uncorrected (paired 95% interval above 0)"
    rows[6]["vs_base"] = {"rmse": {"value": 0.005, "low": -0.001, "high": 0.011}}  # dpmpp_2m+PAS NFE 5: level
    assert dict((t, (m, e)) for t, m, e in target_checks(rows, "rmse", extra))[check] == (True, "1 pairs, none worse")
    rows[6]["vs_base"]["rmse"]["low"] = 0.001
    assert dict((t, (m, e)) for t, m, e in target_checks(rows, "rmse", extra))[check] == (
        False, "dpmpp_2m+PAS NFE 5: 0.2400 -> 0.2450, paired 0.005 [0.001, 0.011]")
    del rows[6]["vs_base"]
    text = format_targets(target_checks(rows, "fid", extra))
    assert text.count("MISSED") == 1 and text.count("* met") == 3
    assert "| 5 | FID | deis+PAS [learned] | 18.00 | comfy dpmpp_2m | 24.00 | -25.0% |" in summary_table(rows)
    assert format_targets(target_checks([{"method": "euler", "nfe": 5, "rmse": 0.1}])) == "Targets: no FID rows to judge."
    # contenders: the teacher, every built-in, and at each NFE the best PAS row of each kind with its counterparts
    assert set(fid_keys(rows, "contenders")) == {
        ("teacher", 0), ("comfy euler", 5), ("comfy deis", 5), ("comfy dpmpp_2m", 5), ("comfy uni_pc", 5),
        ("deis+PAS", 5), ("deis [learned]", 5), ("deis+PAS [learned]", 5), ("deis+PAS [multi-grid]", 5),
        ("comfy euler", 8), ("comfy deis", 8), ("euler+PAS", 8)}


def test_runs_summary_counts_verdicts_on_paired_intervals(tmp_path):
    from train_tools.reproduction.reproduce_report import runs_summary

    def iv(value, low, high):
        return {"value": value, "low": low, "high": high}

    def row(method, fd, steps=None, vs=None):
        r = {"method": method, "nfe": 5, "rmse": 0.1, "bench": {"fd_teacher": iv(fd, fd - 1, fd + 1)}}
        if steps is not None:
            r.update(steps=steps, vs_base={"fd_teacher": vs})
        return r

    rows = [row("comfy deis", 20.0), row("deis+PAS", 10.0, [1, 2], iv(-10, -12, -8)),
            row("comfy euler", 15.0), row("euler+PAS", 15.0, [], iv(0, 0, 0)),
            row("comfy dpmpp_2m", 12.0), row("dpmpp_2m+PAS", 13.0, [3], iv(1, 0.2, 1.8)),
            row("ipndm+PAS", 30.0, [1], iv(0.5, -0.5, 1.5))]
    best = {"5": {"pas": "deis+PAS", "builtin": "comfy dpmpp_2m", "fd_teacher": iv(-0.17, -0.25, -0.09),
                  "fd_data": iv(0.01, -0.05, 0.07), "rmse": iv(-0.3, -0.35, -0.25)}}
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"args": {"model": "cond", "cfg": 4.0}, "rows": rows,
                                "extra": {"bench": {"best_vs_builtin": best}}}))
    text = runs_summary([path])
    assert ("| conditional model, CFG 4 | 5 | comfy dpmpp_2m: 12 | deis+PAS: 10 | -17 [-25, -9] | 1 [-5, 7] | "
            "-30 [-35, -25] | - | 1 / 1 / 1 / 1 |") in text  # a run from before the teacher's comparison
    best["5"]["teacher"] = {"fd_teacher": iv(-0.7, -0.8, -0.6), "fd_data": iv(0, -0.1, 0.1)}
    path.write_text(json.dumps({"args": {"model": "cond", "cfg": 4.0}, "rows": rows,
                                "extra": {"bench": {"best_vs_builtin": best}}}))
    assert "| -30 [-35, -25] | -70 [-80, -60] | 1 / 1 / 1 / 1 |" in runs_summary([path])
    assert text.endswith("PAS rows worse than their uncorrected row: conditional model, CFG 4, dpmpp_2m+PAS NFE 5")
