"""Sigma grids against the values and teacher settings of the paper's EDM schedule (docs/method.md 1, 2)."""
import pytest
import torch

from comfyui_pas.grids import check_sigmas, edm_sigmas, heun_nfe, refine_sigmas, teacher_substeps


@pytest.mark.parametrize("nfe, expected", [
    (5, [80, 24.408, 5.8389, 0.9654, 0.0851, 0.002]),
    (6, [80, 30.183, 9.7232, 2.5152, 0.4700, 0.0515, 0.002]),
    (10, [80, 45.314, 24.408, 12.382, 5.8389, 2.5152, 0.9654, 0.3183, 0.0851, 0.0167, 0.002]),
])
def test_edm_grid_matches_published_values(nfe, expected):
    sigmas = edm_sigmas(nfe)
    assert len(sigmas) == nfe + 1
    assert torch.allclose(sigmas, torch.tensor(expected, dtype=torch.float64), rtol=2e-3)


def test_append_zero_gives_comfyui_layout():
    sigmas = edm_sigmas(6, sigma_min=0.0292, sigma_max=14.6146, append_zero=True)
    assert len(sigmas) == 7 and sigmas[-1] == 0 and sigmas[-2] == pytest.approx(0.0292)
    assert sigmas[0] == pytest.approx(14.6146)


@pytest.mark.parametrize("sigmas", [edm_sigmas(5), edm_sigmas(8, append_zero=True), torch.tensor([3.0, 1.0, 0.0])])
@pytest.mark.parametrize("substeps", [0, 1, 4])
def test_refinement_keeps_every_original_point(sigmas, substeps):
    fine = refine_sigmas(sigmas, substeps)
    assert len(fine) == (len(sigmas) - 1) * (substeps + 1) + 1
    assert torch.equal(fine[:: substeps + 1], sigmas)
    assert (fine[1:] < fine[:-1]).all()
    roots = fine[:substeps + 2].double() ** (1 / 7)
    tolerance = 1e-9 if sigmas.dtype == torch.float64 else 1e-5
    assert torch.allclose(roots.diff(), roots.diff()[0].expand(substeps + 1), rtol=tolerance)


@pytest.mark.parametrize("nfe, substeps, teacher_nfe", [(4, 12, 104), (5, 9, 100), (6, 8, 108), (8, 6, 112), (10, 4, 100)])
def test_teacher_substeps_match_paper_table(nfe, substeps, teacher_nfe):
    sigmas = edm_sigmas(nfe)
    assert teacher_substeps(sigmas, 100) == substeps
    assert heun_nfe(nfe * (substeps + 1), ends_at_zero=False) == teacher_nfe


def test_final_euler_step_onto_zero_counts_once():
    assert heun_nfe(3, ends_at_zero=True) == 5


@pytest.mark.parametrize("bad, message", [
    (torch.tensor([1.0, 2.0]), "decreasing"),
    (torch.tensor([2.0, float("nan"), 0.0]), "NaN"),
    (torch.tensor([2.0, 0.0, 0.0]), "positive"),
    (torch.tensor([2.0]), "at least 2"),
])
def test_bad_grids_are_rejected(bad, message):
    with pytest.raises(ValueError, match=message):
        check_sigmas(bad)


def test_parse_step_counts():
    from comfyui_pas.grids import parse_step_counts

    assert parse_step_counts("4-8") == [4, 5, 6, 7, 8]
    assert parse_step_counts("5,6,8") == [5, 6, 8]
    assert parse_step_counts(" 10, 4-5 ,5") == [4, 5, 10]
    for bad, message in [("", "no step counts"), ("4-", "neither"), ("a", "neither"), ("8-4", "smallest first"),
                         ("0-3", "within"), ("1-40", "at most")]:
        with pytest.raises(ValueError, match=message):
            parse_step_counts(bad)
