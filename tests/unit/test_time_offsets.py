"""train_tools/studies/time_offsets.py: a shifted model asks for the shifted sigma, zero offsets are the solver
itself, and the offset fit never keeps offsets that the held-out trajectories do not confirm."""
import pytest
import torch

from comfyui_pas import edm_sigmas, sample_pas
from train_tools.data.seeds import seeded_noise
from train_tools.studies.time_offsets import ShiftedModel, final_error, fit_offsets


class Recorder:
    sigma_min, sigma_max = 0.002, 80.0

    def __init__(self):
        self.sigmas = []

    def __call__(self, x, sigma, **_):
        self.sigmas.append(torch.as_tensor(sigma, dtype=torch.float64).reshape(-1).clone())
        return x * 0.5


def test_the_model_is_asked_at_the_shifted_sigma_of_each_step():
    sigmas = edm_sigmas(4)
    recorder = Recorder()
    offsets = torch.tensor([0.1, -0.2, 0.0, 0.3], dtype=torch.float64)
    model = ShiftedModel(recorder, sigmas, offsets)
    x = torch.ones(3, 5)
    for i in range(4):
        assert torch.equal(model(x, sigmas[i].float()), x * 0.5)
        asked = recorder.sigmas[-1]
        assert asked.shape == (3,)
        torch.testing.assert_close(asked, torch.full((3,), float(sigmas[i]) * float(torch.exp(offsets[i])), dtype=torch.float64),
                                   rtol=1e-6, atol=0)


def test_calls_off_the_grid_and_wrong_offset_counts_are_refused():
    sigmas = edm_sigmas(4)
    with pytest.raises(ValueError, match="4 steps"):
        ShiftedModel(Recorder(), sigmas, torch.zeros(5))
    model = ShiftedModel(Recorder(), sigmas, torch.zeros(4))
    with pytest.raises(ValueError, match="not a point of the grid"):
        model(torch.ones(2, 5), torch.tensor(3.0))
    with pytest.raises(ValueError, match="not a point of the grid"):
        model(torch.ones(2, 5), sigmas[-1])  # the last point starts no step


@pytest.mark.parametrize("solver", ["euler", "dpmpp_2m"])
def test_zero_offsets_are_the_plain_solver(gmm, solver):
    sigmas = edm_sigmas(5)
    x = seeded_noise(range(8), (96,)) * sigmas[0]
    plain = sample_pas(gmm, x, sigmas.clone(), {}, solver=solver)
    shifted = sample_pas(ShiftedModel(gmm, sigmas, torch.zeros(5)), x, sigmas.clone(), {}, solver=solver)
    torch.testing.assert_close(shifted, plain, rtol=1e-6, atol=1e-6)


def test_the_offset_fit_lowers_the_training_error_and_keeps_only_what_the_held_out_rows_confirm(gmm):
    sigmas = edm_sigmas(4)
    x = seeded_noise(range(40), (96,)) * sigmas[0]
    target = sample_pas(gmm, x, edm_sigmas(64), {}, solver="euler")
    offsets, info = fit_offsets(gmm, x, sigmas, lambda rows: {}, target, "euler", holdout=10)
    zero = torch.zeros(4, dtype=torch.float64)
    train_zero = final_error(gmm, x[:30], sigmas, {}, "euler", zero, target[:30])
    assert info["train_mse"] <= train_zero and info["rollouts"] <= 50
    assert info["kept"] == (info["held_out_mse"] < info["held_out_mse_zero"])
    if info["kept"]:
        assert info["train_mse"] < train_zero and offsets.abs().sum() > 0
    else:
        assert torch.equal(offsets, zero)


def test_tally_skips_identical_rows_and_rows_without_the_comparison():
    from train_tools.studies.time_offsets import tally

    def interval(low, high):
        return {"value": (low + high) / 2, "low": low, "high": high}

    same = {m: interval(0.0, 0.0) for m in ("fd_teacher_vs_PAS", "fd_data_vs_PAS", "rmse_vs_PAS")}
    rows = [{"row": "plain"}, {"row": "PAS + offsets", **same},
            {"row": "PAS + offsets", "fd_teacher_vs_PAS": interval(-2.0, -1.0), "fd_data_vs_PAS": interval(-1.0, 0.5),
             "rmse_vs_PAS": interval(0.1, 0.3)}]
    assert tally(rows, "vs_PAS") == {"fd_teacher": [1, 0, 0], "fd_data": [0, 1, 0], "rmse": [0, 0, 1]}
