"""train_tools/studies/fit_variants.py: variants parse to the settings they name, and bad ones are refused."""
import pytest
import torch

from comfyui_pas import SearchSettings
from comfyui_pas.settings import TRAINER_TRAJECTORIES
from train_tools.studies.fit_variants import Variant, tally, train_variant


def test_variants_name_the_settings_they_change():
    base = SearchSettings()
    assert Variant().name == "fit" and Variant().settings(base) == base
    assert Variant().trajectories == TRAINER_TRAJECTORIES
    assert Variant.parse("loss:l2").settings(base).loss == "l2"
    basis = Variant.parse("basis:4")
    assert basis.name == "basis 4" and basis.settings(base).n_basis == 4
    assert basis.settings(base).guard == base.guard
    assert Variant.parse("trajectories:96").trajectories == 96
    assert Variant.parse("spread:1.0").name == "spread 1"


@pytest.mark.parametrize("text", ["teacher:1", "loss:l3", "basis:x", "basis:", "trajectories:-2", "spread"])
def test_bad_variants_are_refused(text):
    with pytest.raises(ValueError):
        Variant.parse(text)


def test_a_basis_variant_trains_with_that_basis(gmm_training):
    denoiser, x, sigmas, targets, settings = gmm_training
    coords = train_variant(Variant.parse("basis:2"), denoiser, x, sigmas, targets, "euler", settings)
    assert coords.n_basis == 2 and coords.steps and coords.coordinates.shape == (len(coords.steps), 2)
    default = train_variant(Variant(), denoiser, x, sigmas, targets, "euler", settings)
    assert default.n_basis == 3 and not torch.equal(default.coordinates[:, :2], coords.coordinates)


def test_tally_counts_rows_by_their_intervals_and_skips_rows_that_correct_nothing():
    def interval(low, high):
        return {"value": (low + high) / 2, "low": low, "high": high}

    def row(nfe, solver, fit, steps, fd_teacher, fd_data=(-1.0, 1.0), rmse=(-1.0, 1.0)):
        out = {"nfe": nfe, "solver": solver, "fit": fit, "steps": steps}
        if fit != "fit":
            out.update(fd_teacher_vs_fit=interval(*fd_teacher), fd_data_vs_fit=interval(*fd_data),
                       rmse_vs_fit=interval(*rmse))
        return out

    rows = [row(4, "euler", "fit", [1], None), row(4, "euler", "loss l2", [1], (-2.0, -0.5), rmse=(0.1, 0.2)),
            row(4, "deis", "fit", [], None), row(4, "deis", "loss l2", [2], (0.5, 1.0)),
            row(4, "ipndm", "fit", [], None), row(4, "ipndm", "loss l2", [], (0.0, 0.0)),
            row(5, "euler", "fit", [1, 2], None), row(5, "euler", "loss l2", [], (-0.3, 0.4), (-2.0, -1.0))]
    counts = tally(rows)
    assert counts == {"loss l2": {"fd_teacher": [1, 1, 1], "fd_data": [1, 2, 0], "rmse": [0, 2, 1]}}
