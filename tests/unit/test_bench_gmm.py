"""make bench's distribution check: exact mixture draws, and the Frechet judge on blur and grain."""
import torch

from train_tools.benches.bench_gmm import DistributionJudge
from train_tools.data.gmm import GaussianMixtureDenoiser


def test_mixture_draws_match_the_analytic_moments():
    model = GaussianMixtureDenoiser.random(dim=8, components=3, spread=2.0, std=0.4, seed=1)
    draws = model.sample(200_000, seed=3)
    weights = model.log_weights.exp()
    mean = (weights[:, None] * model.means).sum(dim=0)
    # Total variance: the spread of the component means plus each component's own isotropic variance.
    variance = (weights[:, None] * (model.means - mean).square()).sum(dim=0) + model.std ** 2
    assert draws.shape == (200_000, 8) and draws.dtype == torch.float64
    assert torch.allclose(draws.mean(dim=0), mean, atol=0.02)
    assert torch.allclose(draws.var(dim=0), variance, rtol=0.03)
    assert torch.equal(model.sample(5, seed=3), model.sample(5, seed=3))


def test_judge_sees_blur_and_grain_against_exact_draws():
    model = GaussianMixtureDenoiser.random(dim=16, components=4, spread=1.0, std=0.5, seed=0)
    judge = DistributionJudge({"data": model.sample(4000, seed=0), "teacher": model.sample(4000, seed=1)}, n=400)
    exact = model.sample(400, seed=2)
    centre = exact.mean(dim=0)
    blurred = centre + 0.7 * (exact - centre)  # shrunk toward the mean, as a least-squares fit does
    grainy = exact + 0.4 * torch.randn(exact.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    scores = {name: judge.score(x) for name, x in {"exact": exact, "blurred": blurred, "grainy": grainy}.items()}
    assert 0.9 < scores["exact"]["spread"] < 1.1
    assert abs(scores["blurred"]["spread"] / scores["exact"]["spread"] - 0.49) < 1e-9
    added = (scores["grainy"]["spread"] - scores["exact"]["spread"]) * judge.data_spread
    assert abs(added - 16 * 0.4 ** 2) < 0.3  # the added noise's variance, 0.16 in each of 16 coordinates
    for name in ("data", "teacher"):
        for worse in ("blurred", "grainy"):
            change = judge.change(scores["exact"], scores[worse], name)
            assert change["low"] > 0, (name, worse, change)
        same = judge.change(scores["exact"], scores["exact"], name)
        assert same["value"] == same["low"] == same["high"] == 0


def test_bench_compares_two_rules_on_the_same_seeds(tmp_path):
    import json

    from train_tools.benches import bench_gmm

    out = tmp_path / "bench.json"
    bench_gmm.main(["--nfe", "4", "--solvers", "euler", "--train", "24", "--eval", "40", "--teacher-nfe", "12",
                    "--reference-nfe", "24", "--references", "80", "--rule", "paper", "--against-rule", "sharpness",
                    "--out", str(out)])
    row = json.loads(out.read_text())["rows"][0]
    change, versus = row["fd_data_change"], row["fd_data_vs_against"]
    assert abs(change["value"] - (row["fd_data_pas"] - row["fd_data_plain"])) < 1e-9
    assert abs(versus["value"] - (row["fd_data_pas"] - row["against_fd_data"])) < 1e-9
    assert change["low"] <= change["value"] <= change["high"]
    assert row["against_rule"] == "sharpness" and row["rmse_pas"] > 0 and row["against_rmse"] > 0
