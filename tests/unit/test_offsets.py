"""Per-step time offsets (comfyui_pas.offsets): the sampler asks the model at the shifted sigmas and steps on
the grid (checked against an Euler loop written out here), zero offsets are the plain solver, the fit keeps
only what held-out trajectories confirm, and train_pas keeps PAS on the shifted model only where it beats
PAS alone on those trajectories, within the model calls it plans."""
import json

import pytest
import torch

from comfyui_pas import PASCoordinates, edm_sigmas, sample_pas, train_pas
from comfyui_pas.coords import MAX_LOG_OFFSET, PASFileError
from comfyui_pas.denoiser import Denoiser
from comfyui_pas.offsets import (
    MAX_FIT_OFFSET,
    SigmaShift,
    fit_time_offsets,
    held_out_rows,
    offset_fit_model_calls,
    roll_out_error,
)
from comfyui_pas.search import TeacherSettings, teacher_targets
from train_tools.data.seeds import seeded_noise


def offsets_only(sigmas, solver, log_offsets):
    return PASCoordinates(sigmas, solver, None, 3, [], torch.zeros(0, 3), "relative", log_offsets=log_offsets)


def euler_by_hand(model, x, sigmas, log_offsets):
    """Euler on the grid, the model asked at sigma_i * exp(d_i); a step onto 0 lands on the model's output."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        asked = sigma * float(torch.exp(torch.as_tensor(log_offsets[i], dtype=torch.float64)))
        denoised = model(x, torch.full((x.shape[0],), asked, dtype=x.dtype))
        x = denoised if sigma_next == 0 else x + (sigma_next - sigma) * (x - denoised) / sigma
    return x


@pytest.mark.parametrize("append_zero", [False, True])
def test_the_sampler_asks_the_model_at_the_shifted_sigmas(gmm, append_zero):
    sigmas = edm_sigmas(5, append_zero=append_zero)
    offsets = torch.tensor([0.1, -0.5, -0.2, 0.3, -0.1][:len(sigmas) - 1], dtype=torch.float64)
    x = seeded_noise(range(16), (96,)) * sigmas[0]
    got = sample_pas(gmm, x, sigmas.clone(), solver="euler", coords=offsets_only(sigmas, "euler", offsets))
    torch.testing.assert_close(got, euler_by_hand(gmm, x, sigmas, offsets), rtol=1e-5, atol=1e-5)
    plain = sample_pas(gmm, x, sigmas.clone(), solver="euler")
    assert (got - plain).abs().max() > 1e-2  # the offsets change the samples


def test_zero_offsets_are_no_offsets_and_sample_as_the_plain_solver(gmm):
    sigmas = edm_sigmas(4)
    coords = offsets_only(sigmas, "dpmpp_2m", torch.zeros(4))
    assert coords.log_offsets is None and not coords.has_offsets
    x = seeded_noise(range(8), (96,)) * sigmas[0]
    assert torch.equal(sample_pas(gmm, x, sigmas.clone(), solver="dpmpp_2m", coords=coords),
                       sample_pas(gmm, x, sigmas.clone(), solver="dpmpp_2m"))


@pytest.mark.parametrize("offsets, message", [
    (torch.zeros(3) + 0.1, "3 time offsets for a grid of 4 steps"),
    (torch.tensor([0.0, float("nan"), 0.0, 0.0]), "NaN or inf"),
    (torch.tensor([0.0, MAX_LOG_OFFSET + 0.5, 0.0, 0.0]), "exceed"),
])
def test_bad_offsets_are_refused_with_a_clear_error(offsets, message):
    with pytest.raises(PASFileError, match=message):
        offsets_only(edm_sigmas(4), "euler", offsets)


def test_files_and_texts_with_offsets_are_version_3_and_round_trip(tmp_path):
    sigmas = edm_sigmas(4)
    coords = PASCoordinates(sigmas, "euler", None, 3, [2], torch.tensor([[1.0, 0.1, 0.0]]), "relative",
                            log_offsets=torch.tensor([0.1, -0.4, 0.0, -0.2]))
    assert coords.n_parameters == 3 + 4 and "time offsets [0.1, -0.4, 0.0, -0.2]" in coords.describe()
    loaded = PASCoordinates.load(coords.save(tmp_path / "with.safetensors"))
    assert torch.equal(loaded.log_offsets, coords.log_offsets) and loaded.steps == [2]
    from safetensors import safe_open

    with safe_open(str(tmp_path / "with.safetensors"), framework="pt") as handle:
        assert handle.metadata()["format_version"] == "3"
    text = coords.to_text()
    assert text.split(" ")[1] == "v3" and torch.equal(PASCoordinates.from_text(text).log_offsets, coords.log_offsets)
    plain = PASCoordinates(sigmas, "euler", None, 3, [2], torch.tensor([[1.0, 0.1, 0.0]]), "relative")
    assert plain.to_text().split(" ")[1] == "v2"
    with safe_open(plain.save(tmp_path / "without.safetensors"), framework="pt") as handle:
        assert handle.metadata()["format_version"] == "2"


def test_a_version_2_file_with_offsets_and_a_version_3_file_without_are_refused(tmp_path):
    from safetensors.torch import save_file

    from comfyui_pas.coords_text import checksum

    coords = PASCoordinates(edm_sigmas(4), "euler", None, 3, [], torch.zeros(0, 3), "relative",
                            log_offsets=torch.tensor([0.1, -0.4, 0.0, -0.2]))
    tensors, header = coords._file_content()
    save_file(tensors, str(tmp_path / "relabelled.safetensors"), metadata=dict(header, format_version="2"))
    with pytest.raises(PASFileError, match="relabelled.safetensors: holds time offsets"):
        PASCoordinates.load(tmp_path / "relabelled.safetensors")
    tensors.pop("log_offsets")
    save_file(tensors, str(tmp_path / "empty_v3.safetensors"), metadata=header)
    with pytest.raises(PASFileError, match="holds none"):
        PASCoordinates.load(tmp_path / "empty_v3.safetensors")
    marker, _, _, payload = coords.to_text().split(" ", 3)
    with pytest.raises(PASFileError, match="grid 0 must be an object with exactly"):  # v3 text relabelled v2 (checksum recomputed)
        PASCoordinates.from_text(f"{marker} v2 {checksum(payload)} {payload}")
    content = json.loads(payload)
    del content["grids"][0]["log_offsets"]
    bare = json.dumps(content, sort_keys=True, separators=(",", ":"))
    with pytest.raises(PASFileError, match="must carry time offsets"):
        PASCoordinates.from_text(f"{marker} v3 {checksum(bare)} {bare}")


def test_a_sigma_shift_maps_grid_points_and_refuses_other_sigmas():
    sigmas = edm_sigmas(4)
    shift = SigmaShift(sigmas, torch.tensor([0.1, -0.2, 0.0, 0.3], dtype=torch.float64))
    for i, d in enumerate([0.1, -0.2, 0.0, 0.3]):
        assert float(shift(sigmas[i].float())) == pytest.approx(float(sigmas[i]) * float(torch.exp(torch.tensor(d))),
                                                                rel=1e-6)
    with pytest.raises(ValueError, match="starts no step"):
        shift(torch.tensor(3.0))
    with pytest.raises(ValueError, match="starts no step"):
        shift(sigmas[-1])
    with pytest.raises(ValueError, match="5 time offsets for a grid of 4 steps"):
        SigmaShift(sigmas, torch.zeros(5))


def test_a_shifted_denoiser_is_restored_after_an_error(gmm):
    denoiser = Denoiser(gmm)
    shift = SigmaShift(edm_sigmas(4), torch.zeros(4))
    with pytest.raises(ValueError), denoiser.shifted(shift):
        assert denoiser.sigma_shift is shift
        denoiser(torch.zeros(2, 96), torch.tensor(3.0))
    assert denoiser.sigma_shift is None


def teacher_finals(gmm, x, nfe=64):
    return sample_pas(gmm, x, edm_sigmas(nfe), solver="euler")


@pytest.mark.parametrize("loss", ["l1", "l2"])
def test_the_fit_lowers_the_training_error_and_keeps_only_what_the_held_out_rows_confirm(gmm, loss):
    sigmas = edm_sigmas(4)
    x = seeded_noise(range(40), (96,)) * sigmas[0]
    target = teacher_finals(gmm, x)
    denoiser = Denoiser(gmm).counted()
    offsets, report = fit_time_offsets(denoiser, x, sigmas, target, "euler", {}, loss=loss, max_rollouts=20)
    assert denoiser.calls <= offset_fit_model_calls(40, 4, max_rollouts=20) and report["rollouts"] <= 20
    fit_rows = slice(0, held_out_rows(40).start)
    zero = roll_out_error(Denoiser(gmm), x, sigmas, target, "euler", {}, fit_rows, loss)
    fitted = torch.tensor(report["fitted"], dtype=torch.float64)
    assert report["train_error"] == pytest.approx(
        roll_out_error(Denoiser(gmm), x, sigmas, target, "euler", {}, fit_rows, loss, log_offsets=fitted))
    assert report["train_error"] < zero and fitted.abs().max() <= MAX_FIT_OFFSET
    assert (sigmas[:-1] * fitted.exp()).max() <= sigmas[0] * (1 + 1e-9)  # never asked above the grid's start
    assert report["confirmed"] == report["kept"] == (report["held_out_error"] < report["held_out_error_plain"])
    assert (offsets is not None) == report["confirmed"]
    if offsets is not None:
        assert torch.equal(offsets, fitted)


def test_the_fit_needs_four_trajectories_and_a_known_loss(gmm):
    sigmas = edm_sigmas(4)
    x = seeded_noise(range(3), (96,)) * sigmas[0]
    with pytest.raises(ValueError, match="at least 4 trajectories"):
        fit_time_offsets(Denoiser(gmm), x, sigmas, x, "euler", {})
    with pytest.raises(ValueError, match="unknown offset loss"):
        fit_time_offsets(Denoiser(gmm), torch.cat([x, x]), sigmas, torch.cat([x, x]), "euler", {}, loss="huber")


@pytest.mark.parametrize("solver, nfe", [("euler", 4), ("dpmpp_2m", 5), ("euler", 6)])
def test_train_pas_keeps_the_shifted_search_only_where_it_beats_pas_alone(gmm, solver, nfe):
    sigmas = edm_sigmas(nfe)
    x = seeded_noise(range(48), (96,)) * sigmas[0]
    totals, done = [], []
    coords, report = train_pas(gmm, x, sigmas, solver=solver, time_offsets=True,
                               progress=lambda d, t: (done.append(d), totals.append(t)))
    assert max(done) <= totals[-1] and report["model_calls"] <= totals[-1]
    plain, _ = train_pas(gmm, x, sigmas, solver=solver)
    fit = report["time_offsets"]
    assert report["settings"]["time_offsets"] is True and coords.metadata["time_offsets"] is True
    if not fit["confirmed"]:
        assert not fit["kept"] and "held_out_error_pas" not in fit
    else:  # kept: closer to the teacher on the held-out rows, and a mean contrast no further from the teacher's
        assert fit["kept"] == (fit["held_out_error_pas_offsets"] < fit["held_out_error_pas"]
                               and fit["contrast_gap_pas_offsets"] <= fit["contrast_gap_pas"])
        teacher = TeacherSettings()
        target = teacher_targets(Denoiser(gmm), x, [sigmas], teacher.nfe, teacher.substeps)[0][0][-1]
        goal = float(target.double().reshape(48, -1).std(dim=1).mean())

        def held_out_error_and_contrast_gap(chosen):
            finals = sample_pas(gmm, x, sigmas.clone(), solver=solver, coords=chosen)
            error = float((finals - target)[held_out_rows(48)].abs().mean())
            return error, abs(float(finals.double().reshape(48, -1).std(dim=1).mean()) - goal)

        suffix = "_pas_offsets" if fit["kept"] else "_pas"
        error, gap = held_out_error_and_contrast_gap(coords)
        assert error == pytest.approx(fit["held_out_error" + suffix], rel=1e-5)
        assert gap == pytest.approx(fit["contrast_gap" + suffix], rel=1e-5, abs=1e-7)
        error, gap = held_out_error_and_contrast_gap(plain)
        assert (error, gap) == pytest.approx((fit["held_out_error_pas"], fit["contrast_gap_pas"]), rel=1e-5, abs=1e-7)
    if fit["kept"]:
        assert torch.equal(coords.log_offsets, torch.tensor(fit["fitted"], dtype=torch.float64))
    else:  # exactly the training without offsets
        assert coords.log_offsets is None and coords.steps == plain.steps
        assert torch.equal(coords.coordinates, plain.coordinates)


def test_train_pas_with_offsets_on_several_grids_fits_each_grid(gmm):
    grids = [edm_sigmas(4), edm_sigmas(6)]
    x = seeded_noise(range(32), (96,)) * grids[0][0]
    coords, report = train_pas(gmm, x, grids, solver="euler", time_offsets=True)
    assert len(report["grids"]) == 2 and all("time_offsets" in grid for grid in report["grids"])
    for grid, grid_report in zip(coords.grids, report["grids"], strict=True):
        assert (grid.log_offsets is not None) == grid_report["time_offsets"]["kept"]


def test_learn_and_train_with_offsets_keeps_one_progress_bar_within_its_total(counting_gmm):
    from comfyui_pas import ScheduleSettings, SearchSettings, learn_and_train

    x = seeded_noise(range(16), (96,)) * 80.0
    (counting, seen), ticks = counting_gmm, []
    coords, report = learn_and_train(counting, x, 4, solver="euler", settings=SearchSettings(time_offsets=True),
                                     schedule=ScheduleSettings(candidates=24),
                                     progress=lambda done, total: ticks.append((done, total)))
    assert "time_offsets" in report and sum(seen) == report["total_model_calls"]
    total = ticks[-1][1]
    assert all(t == total for _, t in ticks) and ticks[-1][0] == total >= sum(seen)
    assert all(b[0] >= a[0] for a, b in zip(ticks, ticks[1:], strict=False))
    assert (coords.log_offsets is not None) == report["time_offsets"]["kept"]
