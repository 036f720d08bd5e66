"""train_tools.benches.ab_study (with ab_bench, ab_report and metrics): its model, metrics, decision rule and a tiny
end-to-end run on the mixture."""
import json

import pytest
import torch

from comfyui_pas import sample_pas
from comfyui_pas.errors import rmse
from train_tools.benches import ab_bench, ab_report, ab_study
from train_tools.data.gmm import GaussianMixtureDenoiser
from train_tools.data.seeds import seeded_noise
from train_tools.evaluation import metrics


def test_block_mixture_is_the_mixture_applied_to_every_block():
    block = GaussianMixtureDenoiser.random(dim=8, components=4, spread=1.0, std=0.5, seed=2)
    model = ab_bench.BlockMixtureDenoiser(block)
    x = seeded_noise(range(3), (24,)) * 3.0
    sigma = torch.tensor([0.5, 2.0, 7.0], dtype=torch.float64)
    out = model(x, sigma)
    for b in range(3):
        expected = block(x[:, 8 * b: 8 * b + 8], sigma)
        torch.testing.assert_close(out[:, 8 * b: 8 * b + 8], expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="multiple of the block size"):
        model(torch.zeros(2, 10, dtype=torch.float64), sigma[:2])


def test_metrics_from_hand_values():
    plain = torch.tensor([1.0, 2.0, 2.0, 4.0], dtype=torch.float64)
    corrected = torch.tensor([0.5, 1.0, 3.0, 2.0], dtype=torch.float64)
    m = metrics.compare(plain, corrected)
    assert m["rmse_plain"] == pytest.approx((25 / 4) ** 0.5)
    assert m["rmse_pas"] == pytest.approx((14.25 / 4) ** 0.5)
    assert m["gain"] == pytest.approx(1 - (14.25 / 25) ** 0.5)
    assert m["median_change"] == pytest.approx(1.0 / 2.0 - 1)  # torch.median is the lower middle value
    assert m["worse"] == pytest.approx(0.25)


def test_cheapest_within_90_percent_of_the_best():
    summary = [{"setting": "big", "mean_gain": 0.50, "mean_calls": 1000},
               {"setting": "small", "mean_gain": 0.46, "mean_calls": 100},
               {"setting": "tiny", "mean_gain": 0.40, "mean_calls": 10}]
    assert ab_report.cheapest_within(summary)["setting"] == "small"
    assert ab_report.cheapest_within([dict(s, mean_gain=-s["mean_gain"]) for s in summary]) is None


def test_training_and_held_out_seeds_are_disjoint_and_per_seed():
    bench = ab_bench.Bench(ab_bench.make_spec("gmm"), 4, 0, evaluate=False)
    x = bench.train_x(1, 3)
    torch.testing.assert_close(x[2], seeded_noise([ab_bench.TRAIN_SEED_STRIDE + 2], (128,))[0] * 80.0)
    assert min(bench.eval_seeds) >= ab_bench.TRAIN_SEED_STRIDE * 9


def test_tiny_study_end_to_end(tmp_path):
    argv = ["--model", "gmm", "--study", "parameterization", "transfer", "subsets", "teacher-error", "--nfe", "4",
            "--eval", "24", "--teacher-nfes", "8", "16",
            "--reps", "1", "--reference-nfe", "40", "--baseline-train", "16", "--baseline-teacher", "16",
            "--transfer-train", "32", "64", "--transfer-eval", "64", "--check-reference", "4", "--subset-nfe", "5",
            "--quiet",
            "--out", str(tmp_path)]
    results = ab_study.main(argv)
    assert set(results) == {"parameterization", "transfer", "subsets", "teacher-error"}
    data = json.loads((tmp_path / "parameterization.json").read_text())
    assert len(data["rows"]) == 5 * 2  # five settings x (euler, ipndm)
    for row in data["rows"]:
        assert row["n_train"] == 16 and row["teacher_calls"] == 16 * row["teacher_nfe"]
        assert row["search_calls"] >= 16 * 4  # at least one pass over the student grid
        assert row["calls"] == row["teacher_calls"] + row["search_calls"]
        assert row["gain"] == pytest.approx(1 - row["rmse_pas"] / row["rmse_plain"], rel=1e-12)
        if not row["accepted"]:  # nothing corrected: exactly the plain solver
            assert row["rmse_pas"] == row["rmse_plain"]
    plain = {}  # the plain solver's error does not depend on the setting, and is the sampler's against Heun
    for row in data["rows"]:
        plain.setdefault((row["solver"], row["rep"]), set()).add(row["rmse_plain"])
    assert all(len(values) == 1 for values in plain.values())
    bench = ab_bench.Bench(ab_bench.make_spec("gmm"), 24, 40)
    for solver, order in (("euler", 1), ("ipndm", 3)):
        final = sample_pas(bench.spec.model, bench.eval_x, bench.spec.sigmas(4), solver=solver, max_order=order)
        (value,) = plain[(solver, 0)]
        assert value == pytest.approx(rmse(final, bench.reference), rel=1e-12)
    text = (tmp_path / "parameterization.md").read_text()
    assert "relative, guard" in text and "python -m train_tools.benches.ab_study" in text
    transfer = json.loads((tmp_path / "transfer.json").read_text())
    assert {(r["train_size"], r["eval_size"]) for r in transfer["rows"]} == {(32, 64), (64, 64)}
    subsets = json.loads((tmp_path / "subsets.json").read_text())["rows"]
    for row in subsets:  # every non-empty subset of the accepted steps, nothing else
        assert row["kept"] and set(row["kept"]) <= set(row["accepted"]) and row["nfe"] == 5
    full = [r for r in subsets if r["kept"] == r["accepted"]]
    assert len(full) == len({(r["solver"], r["parameterization"]) for r in subsets})
    teacher = json.loads((tmp_path / "teacher-error.json").read_text())["rows"]
    assert [r["nfe"] for r in teacher] == [4] and {"euler", "ipndm3", "teacher 8", "teacher 16"} <= set(teacher[0])
    written = {path.name: path.read_text() for path in tmp_path.glob("*.md")}
    for path in tmp_path.glob("*.md"):
        path.unlink()
    ab_study.main(argv + ["--from-json"])  # every study's tables rebuilt from its JSON alone, unchanged
    assert {path.name: path.read_text() for path in tmp_path.glob("*.md")} == written


def test_solver_specs_and_case_names():
    assert ab_study.parse_solver("deis") == ("deis", 3)  # the registry's default order
    assert ab_study.parse_solver("ipndm:3") == ("ipndm", 3)
    assert ab_study.parse_solver("ddim") == ("euler", None)
    assert ab_study.parse_solver("dpmpp_2m") == ("dpmpp_2m", None)
    with pytest.raises(ValueError, match="no order option"):
        ab_study.parse_solver("dpmpp_2m:2")
    with pytest.raises(ValueError, match="unknown solver"):
        ab_study.parse_solver("heun")
    # the published tables' labels stay as they were
    assert ab_report.case_name("euler", 1, 5) == "euler 5" and ab_report.case_name("ipndm", 3, 8) == "ipndm3 8"
    assert ab_report.case_name("deis", 3, 5) == "deis3 5" and ab_report.case_name("dpmpp_2m", None, 5) == "dpmpp_2m 5"
    assert ab_study.parse_args([]).solvers == list(ab_study.DEFAULT_SOLVERS)
    with pytest.raises(SystemExit):
        ab_study.parse_args(["--solvers", "nonsense"])


def test_capped_choice_uses_the_calls_at_the_largest_nfe():
    def setting(name, gain, calls_small, calls_large):
        cases = {"euler 5": {"gain": gain, "calls": calls_small}, "euler 10": {"gain": gain, "calls": calls_large}}
        return {"setting": name, "mean_gain": gain, "mean_calls": (calls_small + calls_large) / 2, "cases": cases}

    summary = [setting("best", 0.50, 900, 2000), setting("ok", 0.46, 700, 990), setting("cheap", 0.30, 100, 200)]
    choice, nfe = ab_report.capped_choice(summary, cap=1000)
    assert nfe == 10 and choice["setting"] == "ok"
    assert ab_report.capped_choice(summary, cap=500)[0] is None
    assert ab_report.calls_at(summary[0], 5) == 900


def test_budget_study_on_registry_solvers_counts_calls_with_the_teacher(tmp_path):
    argv = ["--model", "gmm", "--study", "budget", "calls", "--nfe", "4", "--eval", "16", "--reps", "1",
            "--reference-nfe", "40", "--check-reference", "0", "--baseline-train", "8", "--baseline-teacher", "16",
            "--baseline-n-basis", "3", "--budget-counts", "8", "--budget-teachers", "8", "16",
            "--solvers", "euler", "deis", "dpmpp_2m", "--quiet", "--out", str(tmp_path)]
    ab_study.main(argv)
    budget = json.loads((tmp_path / "budget.json").read_text())["rows"]
    assert {(r["solver"], r["order"]) for r in budget} == {("euler", None), ("deis", 3), ("dpmpp_2m", None)}
    assert all(r["config"]["n_basis"] == 3 for r in budget)
    calls = json.loads((tmp_path / "calls.json").read_text())["rows"]
    assert len(calls) == 3
    for row in calls:  # an end-to-end run (its own teacher) costs what the budget study counts for it
        same = [r for r in budget if r["solver"] == row["solver"] and r["config"]["teacher_nfe"] == 16]
        assert len(same) == 1 and same[0]["calls"] == row["model_calls"]
        assert row["teacher_calls"] == 8 * row["teacher_nfe"] and row["model_calls"] <= row["bound"]
        assert 0 <= row["guard_calls"] <= row["guard_bound"]
    text = (tmp_path / "budget.md").read_text()
    assert "Model calls per training run" in text and "deis3 4" in text and "dpmpp_2m 4" in text
    assert "at most 1,000 model calls per run at NFE 4" in text


def test_merge_joins_the_rows_of_two_runs(tmp_path):
    common = ["--model", "gmm", "--study", "budget", "--nfe", "4", "--eval", "8", "--reps", "1", "--reference-nfe", "20",
              "--check-reference", "0", "--budget-counts", "8", "--budget-teachers", "8", "16", "--solvers", "euler",
              "--quiet"]
    ab_study.main(common + ["--out", str(tmp_path / "a")])
    ab_study.main(common + ["--first-rep", "1", "--only", "teacher 16", "--out", str(tmp_path / "b")])
    summary = ab_study.main(["--model", "gmm", "--study", "budget", "--merge", str(tmp_path / "a"), str(tmp_path / "b"),
                             "--only", "teacher 16", "--quiet", "--out", str(tmp_path / "m")])["budget"]
    merged = json.loads((tmp_path / "m" / "budget.json").read_text())
    assert sorted(r["rep"] for r in merged["rows"]) == [0, 1]
    assert [s["setting"] for s in summary] == ["relative, N=8, teacher 16"]
    text = (tmp_path / "m" / "budget.md").read_text()
    assert "from 2 runs" in text and "'teacher 16'" in text  # the command keeps its quotes


def test_fashion_rows_carry_the_quality_bench_paired_changes():
    """On the demo model each A/B row gets the bench's FD changes against the plain solver on the same seeds;
    the value is the ratio of the two FDs to the reference computed directly, and no change is exactly zero."""
    from comfyui_pas import train_pas
    from train_tools.benches.ab_bench import Bench, make_spec
    from train_tools.data.fashion_mnist import to_uint8
    from train_tools.evaluation.classifier import features
    from train_tools.evaluation.quality import frechet_pair

    bench = Bench(make_spec("fashion"), 12, 7)
    plain = bench.score(None, "euler", 1, 3)
    assert plain["fd_paired_change"] == {"value": 0.0, "low": 0.0, "high": 0.0}
    x = bench.spec.noise(range(4))
    coords, _ = train_pas(bench.spec.model, x, bench.spec.sigmas(3), solver="euler", teacher_nfe=6, guard="none",
                          min_held_out_gain=0.0, correct_last_step=True)
    row = bench.score(coords, "euler", 1, 3)
    from comfyui_pas import sample_pas

    ref = features(to_uint8(bench.reference))
    fd = [frechet_pair(features(to_uint8(sample_pas(bench.spec.model, bench.eval_x, bench.spec.sigmas(3), solver="euler",
                                                    coords=c))), ref) for c in (None, coords)]
    assert row["fd_paired_change"]["value"] == pytest.approx(fd[1] / fd[0] - 1, rel=1e-6)
    assert row["fd_paired_change"]["low"] <= row["fd_paired_change"]["value"] <= row["fd_paired_change"]["high"]
