"""train_tools/studies/fit_variants.py: variants parse to the settings they name, and bad ones are refused."""
import pytest
import torch

from comfyui_pas import SearchSettings, edm_sigmas
from comfyui_pas.search import teacher_targets
from comfyui_pas.settings import TRAINER_TRAJECTORIES
from comfyui_pas.teacher import Denoiser
from train_tools.data.seeds import seeded_noise
from train_tools.studies.fit_variants import Variant, train_variant


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


def test_a_basis_variant_trains_with_that_basis(gmm):
    sigmas = edm_sigmas(6)
    x = seeded_noise(range(24), (96,)) * sigmas[0]
    denoiser = Denoiser(gmm)
    (targets,), _ = teacher_targets(denoiser, x, [sigmas], 40, None)
    settings = SearchSettings.for_rule("paper")
    coords = train_variant(Variant.parse("basis:2"), denoiser, x, sigmas, targets, "euler", settings)
    assert coords.n_basis == 2 and coords.steps and coords.coordinates.shape == (len(coords.steps), 2)
    default = train_variant(Variant(), denoiser, x, sigmas, targets, "euler", settings)
    assert default.n_basis == 3 and not torch.equal(default.coordinates[:, :2], coords.coordinates)
