"""train_pas: planted coordinates are recovered at exactly the planted steps; determinism; guard; errors."""
import math

import pytest
import torch

from comfyui_pas import PASCoordinates, TeacherSettings, edm_sigmas, sample_pas, train_pas
from comfyui_pas.search import teacher_targets
from comfyui_pas.teacher import Denoiser
from train_tools.data.seeds import seeded_noise

SIGMAS = edm_sigmas(8)
PLANTED_STEPS = [3, 6]


def planted(parameterization, solver, max_order):
    if parameterization == "relative":
        values = [[1.08, 0.04, -0.03, 0.02], [0.93, -0.05, 0.02, 0.04]]
    else:
        values = [[10.5, 0.6, -0.4, 0.3], [9.0, -0.5, 0.3, 0.2]]
    return PASCoordinates(SIGMAS, solver, max_order, 4, PLANTED_STEPS, torch.tensor(values, dtype=torch.float64),
                          parameterization=parameterization)


def trajectory_states(model, x, coords):
    """States x_0..x_N of the corrected sampler, read through its callback."""
    states = []
    final = sample_pas(model, x, coords.sigmas, callback=lambda e: states.append(e["x"]), solver=coords.solver,
                       max_order=coords.max_order, coords=coords)
    return torch.stack(states + [final])


@pytest.mark.parametrize("parameterization", ["absolute", "relative"])
@pytest.mark.parametrize("solver, max_order", [("euler", 1), ("ipndm", 3), ("ipndm_v", 4), ("deis", 3),
                                               ("dpmpp_2m", None), ("res_multistep", None)])
@pytest.mark.parametrize("loss", ["l2", "l1"])
def test_planted_coordinates_are_recovered_at_only_those_steps(gmm, parameterization, solver, max_order, loss):
    truth = planted(parameterization, solver, max_order)
    x = seeded_noise(range(24), (96,)) * SIGMAS[0]
    targets = trajectory_states(gmm, x, truth)
    coords, report = train_pas(gmm, x, SIGMAS, solver=solver, max_order=max_order, n_basis=4, loss=loss,
                               parameterization=parameterization, targets=targets, guard="none",
                               tolerance_mode="absolute", tolerance=1e-10)
    assert coords.steps == PLANTED_STEPS
    assert torch.allclose(coords.coordinates, truth.coordinates, rtol=1e-6, atol=1e-7)
    unplanted = [s for s in report["steps"] if s["step"] not in PLANTED_STEPS]
    assert all(s["loss_plain"] < 1e-10 for s in unplanted)
    assert report["train_final_loss"] < 1e-10


def test_validation_guard_keeps_planted_steps_and_checks_held_out_error(gmm):
    truth = planted("relative", "euler", 1)
    x = seeded_noise(range(32), (96,)) * SIGMAS[0]
    coords, report = train_pas(gmm, x, SIGMAS, n_basis=4, parameterization="relative",
                               targets=trajectory_states(gmm, x, truth), guard="validation",
                               tolerance_mode="absolute", tolerance=1e-10)
    assert coords.steps == PLANTED_STEPS
    assert report["settings"]["n_validation"] == 8
    for step in report["steps"]:
        if step["accepted"]:
            assert step["val_final_corrected"] < step["val_final_before"]
    assert report["val_final_pas"] < report["val_final_plain"]


def test_steps_too_early_for_the_basis_are_never_candidates(gmm):
    x = seeded_noise(range(8), (96,)) * SIGMAS[0]
    _, report = train_pas(gmm, x, SIGMAS, n_basis=4, teacher_nfe=20, guard="none")
    assert [s["feasible"] for s in report["steps"][:3]] == [False, False, True]
    assert report["steps"][0]["loss_corrected"] is None


def test_repeat_runs_are_bit_identical(gmm):
    x = seeded_noise(range(16), (96,)) * SIGMAS[0]
    first = train_pas(gmm, x, SIGMAS, solver="ipndm", max_order=3, teacher_nfe=24)
    second = train_pas(gmm, x, SIGMAS, solver="ipndm", max_order=3, teacher_nfe=24)
    assert first[0].steps == second[0].steps
    assert torch.equal(first[0].coordinates, second[0].coordinates)
    assert [s["loss_corrected"] for s in first[1]["steps"]] == [s["loss_corrected"] for s in second[1]["steps"]]


def test_corrected_sample_is_batch_invariant(gmm):
    truth = planted("absolute", "ipndm", 3)
    x = seeded_noise(range(7), (96,)) * SIGMAS[0]
    batch = sample_pas(gmm, x, SIGMAS, solver="ipndm", max_order=3, coords=truth)
    for j in range(7):
        alone = sample_pas(gmm, x[j:j + 1], SIGMAS, solver="ipndm", max_order=3, coords=truth)
        assert torch.equal(alone[0], batch[j])


def test_chunked_model_calls_and_per_sample_arguments(gmm):
    x = seeded_noise(range(12), (96,)) * SIGMAS[0]
    seen = []

    def model(x, sigma, *, row_id):
        seen.append(row_id.tolist())
        assert row_id.shape[0] == x.shape[0]
        return gmm(x, sigma)

    ids = torch.arange(12)
    chunked = train_pas(Denoiser(model, per_sample_args={"row_id": ids}, chunk_size=5), x, SIGMAS,
                        teacher=TeacherSettings(nfe=16))
    whole = train_pas(gmm, x, SIGMAS, teacher=TeacherSettings(nfe=16))
    legacy = train_pas(model, x, SIGMAS, teacher_nfe=16, chunk_size=5, per_sample_args={"row_id": ids})
    assert legacy[0].steps == chunked[0].steps and torch.equal(legacy[0].coordinates, chunked[0].coordinates)
    assert max(len(r) for r in seen) == 5
    assert [0, 1, 2, 3, 4] in seen and [10, 11] in seen
    assert chunked[0].steps == whole[0].steps
    assert torch.allclose(chunked[0].coordinates, whole[0].coordinates, rtol=1e-10)


def test_report_and_progress(gmm):
    x = seeded_noise(range(8), (96,)) * SIGMAS[0]
    ticks = []
    coords, report = train_pas(gmm, x, SIGMAS, teacher_nfe=16, progress=lambda d, t: ticks.append((d, t)))
    assert ticks and ticks[-1][0] <= ticks[-1][1] and all(b[0] >= a[0] for a, b in zip(ticks, ticks[1:], strict=False))
    assert report["teacher_seconds"] > 0 and report["search_seconds"] > 0
    assert len(report["steps"]) == 8
    assert coords.metadata["n_trajectories"] == 8 and coords.metadata["loss"] == "l1"


def test_bad_inputs_give_clear_errors(gmm):
    x = seeded_noise(range(4), (96,)) * SIGMAS[0]
    with pytest.raises(ValueError, match="NaN"):
        train_pas(gmm, x * math.nan, SIGMAS)
    with pytest.raises(ValueError, match="NaN"):
        train_pas(lambda x, s: x * math.nan, x, SIGMAS, teacher_nfe=16)
    with pytest.raises(ValueError, match="held-out"):
        train_pas(gmm, x[:1], SIGMAS)
    with pytest.raises(ValueError, match="loss"):
        train_pas(gmm, x, SIGMAS, loss="lpips")


def test_one_training_serves_several_grids_from_one_teacher_run(gmm):
    """Grids of 4, 5 and 6 steps: one Heun run over their union; each entry equals a single-grid training
    on the same teacher states, and the sampler picks the entry of the grid it is given."""
    grids = [edm_sigmas(n) for n in (4, 5, 6)]
    x = seeded_noise(range(16), (96,)) * grids[0][0]
    calls = []

    def counting(points, sigma, **extra):
        calls.append(points.shape[0])
        return gmm(points, sigma, **extra)

    coords, report = train_pas(counting, x, grids, solver="deis", teacher_nfe=40)
    assert coords.step_counts == [4, 5, 6] and len(report["grids"]) == 3
    union = len(torch.unique(torch.cat(grids)))
    teacher = report["teacher_model_calls"]
    assert teacher == 16 * 2 * (union - 1) * (report["settings"]["teacher"]["substeps"] + 1)
    assert report["model_calls"] == sum(calls)
    union_targets, _ = teacher_targets(Denoiser(gmm), x, grids, 40, report["settings"]["teacher"]["substeps"])
    for grid, entry, targets in zip(grids, coords.grids, union_targets, strict=True):
        single, _ = train_pas(gmm, x, grid, solver="deis", targets=targets)
        assert single.steps == entry.steps
        torch.testing.assert_close(single.coordinates, entry.coordinates)
        out = sample_pas(gmm, x[:3], grid.float(), solver="deis", coords=coords)
        torch.testing.assert_close(out, sample_pas(gmm, x[:3], grid.float(), solver="deis", coords=single))
    with pytest.raises(ValueError, match="covers 4, 5, 6 steps"):
        sample_pas(gmm, x[:2], edm_sigmas(8), solver="deis", coords=coords)


def test_grids_of_one_training_must_share_the_start(gmm):
    with pytest.raises(ValueError, match="same sigma"):
        train_pas(gmm, torch.zeros(8, 96), [edm_sigmas(4), edm_sigmas(4, sigma_max=40.0)])
