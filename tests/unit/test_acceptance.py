"""The acceptance rules on planted numbers: the training-loss tolerance, each held-out guard, min_held_out_gain
and correct_last_step, and the settings objects that carry them."""
from dataclasses import FrozenInstanceError, replace

import numpy as np
import pytest
import torch
from test_search import PLANTED_STEPS, SIGMAS, planted, trajectory_states

from comfyui_pas import SearchSettings, edm_sigmas, train_pas
from comfyui_pas.acceptance import HeldOutErrors, guard_passes, loss_drops
from comfyui_pas.settings import GUARDS
from train_tools.data.seeds import seeded_noise


def errors(values, fine=None):
    return HeldOutErrors(torch.tensor(values, dtype=torch.float64),
                         None if fine is None else torch.tensor(fine, dtype=torch.float64))


BEFORE = errors([1.0, 1.0, 1.0, 1.0, 4.0], fine=[1.0] * 5)  # pooled RMSE 2, median 1
CASES = {  # after the step: (errors, which guards pass with min_gain 0)
    "all better": (errors([0.9] * 5, fine=[0.9] * 5), {"none", "mean", "validation", "spectral", "texture",
                                                             "sharpness", "patches"}),
    # the one large error fixed, the majority a little worse: the pooled RMSE drops, the median rises
    "majority worse": (errors([1.1, 1.1, 1.1, 1.1, 1.0], fine=[0.9] * 5), {"none", "mean", "texture", "sharpness",
                                                                            "patches"}),
    # better in RMSE and median, but more high-pass error (grain)
    "more grain": (errors([0.9] * 5, fine=[1.2] * 5), {"none", "mean", "validation", "texture", "sharpness",
                                                       "patches"}),
    "all worse": (errors([1.0, 1.0, 1.0, 1.0, 5.0], fine=[1.0] * 5), {"none"}),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("guard", GUARDS)
def test_each_guard_on_planted_held_out_errors(case, guard):
    after, passing = CASES[case]
    assert guard_passes(BEFORE, after, guard, 0.0) == (guard in passing)


def test_texture_guard_rejects_a_step_that_widens_a_texture_gap():
    def with_gaps(rmse, contrast, detail):
        return HeldOutErrors(torch.tensor(rmse), None, torch.tensor(contrast), torch.tensor(detail))

    before = with_gaps([1.0] * 3, [0.2] * 3, [0.1] * 3)
    assert guard_passes(before, with_gaps([0.9] * 3, [0.1] * 3, [0.1] * 3), "texture")
    assert guard_passes(before, with_gaps([1.0] * 3, [0.2] * 3, [0.1] * 3), "texture")  # level passes
    assert not guard_passes(before, with_gaps([0.9] * 3, [0.3] * 3, [0.05] * 3), "texture")  # contrast
    assert not guard_passes(before, with_gaps([0.9] * 3, [0.1] * 3, [0.2] * 3), "texture")  # detail
    assert not guard_passes(before, with_gaps([1.1] * 3, [0.1] * 3, [0.05] * 3), "texture")  # RMSE grew
    assert not guard_passes(before, with_gaps([0.97] * 3, [0.1] * 3, [0.1] * 3), "texture", 0.05)


def test_sharpness_guard_rejects_a_step_that_blurs():
    target = seeded_noise([1, 2, 3, 4], (1, 16, 16), torch.float64)
    blurred = torch.nn.functional.avg_pool2d(target, 3, stride=1, padding=1, count_include_pad=False)
    plain, smooth = HeldOutErrors.of(2.5 * target, target), HeldOutErrors.of(blurred, target)
    assert smooth.rmse.square().mean() < plain.rmse.square().mean()  # closer in RMSE, yet blurred
    assert not guard_passes(plain, smooth, "sharpness") and guard_passes(plain, smooth, "mean")
    assert guard_passes(smooth, plain, "sharpness", 0.0) is False  # sharper but the RMSE grew
    sharper = HeldOutErrors.of(1.1 * target, target)
    assert guard_passes(HeldOutErrors.of(0.8 * target, target), sharper, "sharpness")


def test_sharpness_guard_judges_contrast_on_images_only():
    target = seeded_noise([1, 2, 3], (96,), torch.float64)
    wide, narrow = HeldOutErrors.of(2.0 * target, target), HeldOutErrors.of(0.9 * target, target)
    assert narrow.detail is None and guard_passes(wide, narrow, "sharpness")  # lower spread, lower RMSE


def test_patch_frechet_matches_pytorch_fids_formula_on_the_patches():
    from pytorch_fid.fid_score import calculate_frechet_distance

    from comfyui_pas.acceptance import PATCH, patch_frechet

    target = seeded_noise(range(6), (2, 9, 11), torch.float64)
    final = 0.8 * target + 0.3 * seeded_noise(range(6, 12), (2, 9, 11), torch.float64) + 0.1
    # every PATCH x PATCH window of both channels, gathered by hand
    def windows(x):
        return torch.stack([x[n, :, i:i + PATCH, j:j + PATCH].reshape(-1) for n in range(x.shape[0])
                            for i in range(x.shape[2] - PATCH + 1) for j in range(x.shape[3] - PATCH + 1)]).numpy()
    a, b = windows(final), windows(target)
    expected = calculate_frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert patch_frechet(final, target) == pytest.approx(expected, rel=1e-6)
    assert patch_frechet(target, target) == pytest.approx(0.0, abs=1e-9)
    assert patch_frechet(target.flatten(1), target.flatten(1)) is None  # off images


def test_patches_guard_rejects_a_step_that_moves_the_patch_distribution_away():
    target = seeded_noise(range(8), (1, 12, 12), torch.float64)
    grain = seeded_noise(range(8, 16), (1, 12, 12), torch.float64)
    plain = HeldOutErrors.of(target + 0.5 * grain, target, patches=True)
    # a uniform brightening that costs less RMSE than the grain it replaces, with the same spread and more detail
    shifted = HeldOutErrors.of(1.2 * target + 0.2, target, patches=True)
    assert shifted.rmse.square().mean() < plain.rmse.square().mean()
    assert shifted.not_blurred(plain) and guard_passes(plain, shifted, "sharpness")
    assert shifted.patch_gap > plain.patch_gap and not guard_passes(plain, shifted, "patches")
    faint, closer = (HeldOutErrors.of(scale * target, target, patches=True) for scale in (0.7, 0.9))
    assert closer.patch_gap < faint.patch_gap and guard_passes(faint, closer, "patches")
    vectors = HeldOutErrors.of(seeded_noise(range(3), (96,), torch.float64), seeded_noise(range(3, 6), (96,), torch.float64),
                               patches=True)
    assert vectors.patch_gap is None and vectors.patches_not_worse(vectors)
    assert HeldOutErrors.of(target, target).patch_gap is None  # the other guards skip the costly term


def test_texture_gaps_see_blur_and_grain_that_cost_the_same_rmse():
    target = seeded_noise([1, 2, 3, 4], (1, 16, 16), torch.float64)
    blurred = torch.nn.functional.avg_pool2d(target, 3, stride=1, padding=1, count_include_pad=False)
    blur = blurred - target
    grain = seeded_noise([5, 6, 7, 8], (1, 16, 16), torch.float64)
    grain = grain * (blur.norm() / grain.norm())  # the same RMSE as the blur
    exact, smooth, noisy = (HeldOutErrors.of(target + d, target) for d in (0 * blur, blur, grain))
    assert torch.allclose(smooth.rmse.square().mean(), noisy.rmse.square().mean())
    assert float(exact.contrast_gap.max()) == 0 and float(exact.detail_gap.max()) == 0
    assert float(smooth.detail_gap.mean()) > 0.1 and float(noisy.detail_gap.mean()) > 0.1
    assert not smooth.texture_not_worse(exact) and not noisy.texture_not_worse(exact)
    assert exact.texture_not_worse(smooth)


def test_spectral_guard_without_a_high_pass_part_is_the_validation_guard():
    after = errors([0.9] * 5)
    assert guard_passes(errors([1.0] * 5), after, "spectral") and guard_passes(errors([1.0] * 5), after, "validation")


@pytest.mark.parametrize("guard", ["mean", "validation", "spectral"])
def test_min_held_out_gain_needs_that_fraction_of_the_pooled_rmse(guard):
    before, after = errors([2.0] * 4, fine=[1.0] * 4), errors([1.8] * 4, fine=[1.0] * 4)  # 10% lower
    assert guard_passes(before, after, guard, 0.09)
    assert not guard_passes(before, after, guard, 0.11)
    assert guard_passes(before, after, "none", 0.99)


@pytest.mark.parametrize("mode, tolerance, plain, corrected, kept", [
    ("relative", 0.01, 1.0, 0.985, True), ("relative", 0.01, 1.0, 0.995, False),
    ("relative", 0.01, 0.0, -1.0, False),  # nothing to gain on a perfect step
    ("absolute", 1e-4, 1.0, 1.0 - 2e-4, True), ("absolute", 1e-4, 1.0, 1.0 - 5e-5, False)])
def test_training_loss_tolerance(mode, tolerance, plain, corrected, kept):
    assert loss_drops(plain, corrected, SearchSettings(tolerance=tolerance, tolerance_mode=mode)) == kept


def planted_run(gmm, **fields):
    truth = planted("relative", "euler", 1)
    x = seeded_noise(range(32), (96,)) * SIGMAS[0]
    fields = {"n_basis": 4, "tolerance_mode": "absolute", "tolerance": 1e-10, **fields}
    settings = SearchSettings.for_rule("fid-safe", **fields)  # the validation guard and its held-out gain
    return train_pas(gmm, x, SIGMAS, settings=settings, teacher=trajectory_states(gmm, x, truth))


def test_min_held_out_gain_rejects_planted_steps_whose_held_out_gain_is_smaller(gmm):
    coords, report = planted_run(gmm, min_held_out_gain=0.0)
    assert coords.steps == PLANTED_STEPS
    gains = [1 - s["val_final_corrected"] / s["val_final_before"] for s in report["steps"] if s["accepted"]]
    assert all(0 < gain < 1 for gain in gains)
    demanding, strict = planted_run(gmm, min_held_out_gain=max(gains) + 0.01)
    first = next(s for s in strict["steps"] if s["step"] == PLANTED_STEPS[0])
    assert first["val_final_corrected"] is not None and not first["accepted"]  # the loss dropped, the gain is short
    assert PLANTED_STEPS[0] not in demanding.steps


def test_the_last_step_is_left_to_the_solver_unless_asked(gmm):
    _, report = planted_run(gmm)
    last = report["steps"][-1]
    assert not last["feasible"] and last["coordinates"] is None
    _, report = planted_run(gmm, correct_last_step=True, min_held_out_gain=0.0)
    assert report["steps"][-1]["feasible"]


def test_search_settings_are_the_one_source_of_the_defaults():
    """train_pas without settings uses SearchSettings(); its acceptance fields are DEFAULT_RULE's."""
    from comfyui_pas.settings import ACCEPTANCE_RULES, DEFAULT_RULE

    defaults = SearchSettings()
    rule = ACCEPTANCE_RULES[DEFAULT_RULE]
    assert (defaults.guard, defaults.min_held_out_gain, defaults.correct_last_step) == (
        rule["guard"], rule["min_held_out_gain"], rule["correct_last_step"])
    assert defaults.n_basis == 3
    assert defaults.tolerance == 0.01 and SearchSettings(tolerance_mode="absolute").tolerance == 1e-4
    with pytest.raises(FrozenInstanceError):
        defaults.n_basis = 4
    assert replace(defaults, n_basis=4).n_basis == 4
    for bad, message in [({"loss": "lpips"}, "loss"), ({"guard": "x"}, "guard"), ({"n_basis": 9}, "n_basis")]:
        with pytest.raises(ValueError, match=message):
            SearchSettings(**bad)


def test_overrides_and_settings_train_alike(gmm):
    x = seeded_noise(range(12), (96,)) * 80.0
    sigmas = edm_sigmas(5)
    by_object = train_pas(gmm, x, sigmas, settings=SearchSettings(n_basis=2, guard="mean"), teacher=None)
    by_keywords = train_pas(gmm, x, sigmas, n_basis=2, guard="mean")
    assert by_object[0].steps == by_keywords[0].steps
    torch.testing.assert_close(by_object[0].coordinates, by_keywords[0].coordinates, rtol=0, atol=0)
    assert by_object[1]["settings"]["guard"] == "mean" and by_object[0].n_basis == 2
    with pytest.raises(TypeError, match="unknown"):
        train_pas(gmm, x, sigmas, n_bases=2)


def test_named_rules_set_their_fields_and_are_recorded():
    from comfyui_pas.settings import ACCEPTANCE_RULES, DEFAULT_RULE

    assert SearchSettings().rule == DEFAULT_RULE
    for name, fields in ACCEPTANCE_RULES.items():
        settings = SearchSettings.for_rule(name, n_basis=2)
        assert settings.rule == name and settings.n_basis == 2
        assert all(getattr(settings, key) == value for key, value in fields.items())
        assert settings.recorded()["rule"] == name
    assert SearchSettings(guard="mean").rule == "custom"
    with pytest.raises(ValueError, match="rule"):
        SearchSettings.for_rule("fid_safe")


def test_auto_rule_is_each_solvers_and_train_pas_uses_it(gmm):
    from comfyui_pas.settings import DEFAULT_RULE, SOLVER_RULES, describe_rule

    assert SearchSettings.for_rule("auto", "deis").rule == SOLVER_RULES["deis"] == "paper"
    assert SearchSettings.for_rule("auto", "euler").rule == DEFAULT_RULE
    assert SearchSettings.for_rule("auto", "dpmpp_2m", 4.0).for_steps(6).rule == "paper"  # under strong CFG
    assert SearchSettings.for_rule("auto", "dpmpp_2m", 1.0).rule == DEFAULT_RULE
    for solver in ("euler", "ipndm_v"):  # the paper's rule under CFG from GUIDED_CFG on
        assert SearchSettings.for_rule("auto", solver, 4.0).rule == "paper"
        assert SearchSettings.for_rule("auto", solver, 2.9).rule == DEFAULT_RULE
    for cfg in (None, 1.0, 4.0):  # ipndm: the paper's rule with or without guidance
        assert SearchSettings.for_rule("auto", "ipndm", cfg).rule == SOLVER_RULES["ipndm"] == "paper"
    assert SearchSettings.for_rule("auto", "res_multistep", 4.0).for_steps(6).rule == DEFAULT_RULE
    assert "deis: paper" in describe_rule("auto") and describe_rule("paper") == "paper"
    with pytest.raises(ValueError, match="solver"):
        SearchSettings.for_rule("auto")
    assert SearchSettings.for_rule("auto", "euler", otherwise="patches").rule == "patches"  # rule studies
    assert SearchSettings.for_rule("auto", "deis", otherwise="patches").rule == "paper"
    with pytest.raises(ValueError, match="otherwise"):
        SearchSettings.for_rule("auto", "euler", otherwise="auto")
    x = seeded_noise(range(8), (96,)) * 80.0
    for solver, rule in [("deis", "paper"), ("dpmpp_2m", DEFAULT_RULE)]:
        coords, report = train_pas(gmm, x, edm_sigmas(5), solver=solver, teacher_nfe=12)
        assert coords.metadata["rule"] == report["settings"]["rule"] == rule
    coords, _ = train_pas(gmm, x, edm_sigmas(5), solver="deis", settings=SearchSettings(), teacher_nfe=12)
    assert coords.metadata["rule"] == DEFAULT_RULE  # explicit settings are kept


def test_auto_rule_by_step_count_resolves_per_grid(gmm):
    from comfyui_pas.settings import DEFAULT_RULE, SOLVER_STEP_RULES, default_rule, describe_rule

    start, rule = SOLVER_STEP_RULES["res_multistep"]
    assert (start, rule) == (8, "paper")
    for cfg in (None, 1.0, 4.0):
        settings = SearchSettings.for_rule("auto", "res_multistep", cfg)
        assert settings.rule_from_steps == (8, "paper")
        assert settings.rule == f"{DEFAULT_RULE}, paper from 8 steps"
        assert settings.for_steps(7).rule == DEFAULT_RULE == default_rule("res_multistep", cfg, steps=7)
        assert settings.for_steps(8).rule == "paper" == default_rule("res_multistep", cfg, steps=10)
        assert settings.for_steps(10).rule_from_steps is None and settings.for_steps(10).guard == "none"
    assert default_rule("res_multistep") == DEFAULT_RULE  # no step count: the short grids' rule
    assert "res_multistep: paper from 8 steps" in describe_rule("auto")
    # explicit acceptance fields hold at every step count; other fields keep the step rule
    assert SearchSettings.for_rule("auto", "res_multistep", guard="validation").rule_from_steps is None
    assert SearchSettings.for_rule("auto", "res_multistep", n_basis=2).rule_from_steps == (8, "paper")
    assert SearchSettings.for_rule("auto", "euler").rule_from_steps is None
    for bad in [(0, "paper"), (8, "auto"), (8, "fid_safe")]:
        with pytest.raises(ValueError, match="rule_from_steps"):
            SearchSettings(rule_from_steps=bad)
    # one training over a 5- and an 8-step grid: each grid searched under its own rule
    x = seeded_noise(range(8), (96,)) * 80.0
    coords, report = train_pas(gmm, x, [edm_sigmas(5), edm_sigmas(8)], solver="res_multistep", teacher_nfe=12)
    assert [g["rule"] for g in report["grids"]] == [DEFAULT_RULE, "paper"]
    assert [g["rule"] for g in coords.metadata["per_grid"]] == [DEFAULT_RULE, "paper"]
    assert coords.metadata["rule"] == report["settings"]["rule"] == DEFAULT_RULE  # the first grid's
    assert report["grids"][0]["val_final_plain"] is not None  # sharpness holds trajectories out
    assert report["grids"][1]["val_final_plain"] is None  # the paper's rule does not
    alone, alone_report = train_pas(gmm, x, edm_sigmas(8), solver="res_multistep", teacher_nfe=12)
    assert alone.metadata["rule"] == alone_report["grids"][0]["rule"] == "paper"


def test_auto_rule_for_guided_dpmpp_2m_switches_to_sharpness_from_10_steps(gmm):
    from comfyui_pas.settings import DEFAULT_RULE, GUIDED_SOLVER_STEP_RULES, default_rule, describe_rule

    assert GUIDED_SOLVER_STEP_RULES["dpmpp_2m"] == (10, "sharpness")
    for cfg in (3.0, 4.0, 7.5):
        settings = SearchSettings.for_rule("auto", "dpmpp_2m", cfg)
        assert settings.rule == "paper, sharpness from 10 steps"
        assert settings.for_steps(9).rule == "paper" == default_rule("dpmpp_2m", cfg, steps=8)
        assert settings.for_steps(10).rule == "sharpness" == default_rule("dpmpp_2m", cfg, steps=12)
    for cfg in (None, 1.0, 2.9):  # without guidance dpmpp_2m keeps the default rule at every step count
        settings = SearchSettings.for_rule("auto", "dpmpp_2m", cfg)
        assert settings.rule == DEFAULT_RULE and settings.rule_from_steps is None
        assert default_rule("dpmpp_2m", cfg, steps=10) == DEFAULT_RULE
    assert default_rule("dpmpp_2m", 4.0) == "paper"  # no step count: the short grids' rule
    assert "dpmpp_2m: paper at CFG >= 3 (sharpness from 10 steps)" in describe_rule("auto")
    assert SearchSettings.for_rule("auto", "euler", 4.0).rule_from_steps is None
    # one guided training over an 8- and a 10-step grid: each grid under its own rule
    x = seeded_noise(range(8), (96,)) * 80.0
    settings = SearchSettings.for_rule("auto", "dpmpp_2m", 4.0)
    _, report = train_pas(gmm, x, [edm_sigmas(8), edm_sigmas(10)], solver="dpmpp_2m", settings=settings,
                          teacher_nfe=12)
    assert [g["rule"] for g in report["grids"]] == ["paper", "sharpness"]


@pytest.mark.parametrize("guard", ["patches", "sharpness"])
def test_the_search_measures_patch_distance_only_for_the_patches_guard(guard):
    from comfyui_pas.denoiser import Denoiser
    from comfyui_pas.search import GridSearch

    x = seeded_noise(range(8), (1, 8, 8), torch.float64) * 80.0
    sigmas = edm_sigmas(4).double()
    targets = torch.zeros(len(sigmas), *x.shape, dtype=torch.float64)  # a point mass at 0: D(x) = 0 is exact
    search = GridSearch(Denoiser.of(lambda z, s, **_: torch.zeros_like(z)), x, sigmas, targets, "euler", {},
                        SearchSettings(guard=guard))
    plain = search.held_out_errors(search.trajectory.rows(search.val_rows), x[search.val_rows], 0)
    assert (plain.patch_gap is not None) == (guard == "patches")
