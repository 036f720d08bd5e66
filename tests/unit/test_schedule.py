"""learn_schedule: the dynamic programme against brute force, teacher targets, and the end-to-end choice."""
import itertools

import pytest
import torch

from comfyui_pas import (
    ScheduleSettings,
    SearchSettings,
    edm_sigmas,
    learn_and_train,
    learn_schedule,
    sample_pas,
    train_pas,
)
from comfyui_pas.schedule import candidate_grid, cheapest_path, local_costs
from comfyui_pas.teacher import teacher_states
from train_tools.data.seeds import seeded_noise


def test_cheapest_path_equals_brute_force():
    generator = torch.Generator().manual_seed(0)
    costs = torch.rand(9, 9, generator=generator, dtype=torch.float64)
    for steps in (1, 3, 5, 8):
        path = cheapest_path(costs, steps)
        best = min(((0, *inner, 8) for inner in itertools.combinations(range(1, 8), steps - 1)),
                   key=lambda p: sum(costs[a, b] for a, b in zip(p[:-1], p[1:], strict=True)))
        assert tuple(path) == best
    with pytest.raises(ValueError, match="steps must be"):
        cheapest_path(costs, 9)


@pytest.mark.parametrize("append_zero", [False, True])
def test_targets_are_the_teacher_states_and_the_grid_lies_on_the_candidates(gmm, append_zero):
    x = seeded_noise(range(12), (96,)) * 80.0
    schedule = learn_schedule(gmm, x, 5, solver="euler", settings=ScheduleSettings(
        candidates=24, teacher_substeps=1, append_zero=append_zero))
    sigmas, report = schedule.sigmas, schedule.report
    grid = torch.tensor(report["candidates"], dtype=torch.float64)
    assert len(sigmas) == 6 and float(sigmas[0]) == 80.0 and (float(sigmas[-1]) == 0.0) == append_zero
    assert all(bool((grid == s).any()) for s in sigmas)
    # the teacher states at the learned points are a Heun run over the refined candidates
    states, _ = teacher_states(gmm, x, grid, substeps=1)
    torch.testing.assert_close(schedule.states, states[report["indices"]])
    assert report["model_calls"] == report["teacher_model_calls"] == 12 * (4 * (len(grid) - 1) - append_zero)


def test_local_schedule_beats_the_edm_grid_for_euler_and_pas_trains_on_it(gmm):
    """The mixture is not a tuned test: euler's error on held-out seeds drops with the learned grid."""
    x = seeded_noise(range(32), (96,)) * 80.0
    held_out = seeded_noise(range(500, 564), (96,)) * 80.0
    schedule = learn_schedule(gmm, x, 5, solver="euler")
    sigmas = schedule.sigmas
    edm = edm_sigmas(5)

    def error(grid, coords=None):
        reference = teacher_states(gmm, held_out, grid, 200)[0][-1]
        return float((sample_pas(gmm, held_out, grid, coords=coords) - reference).square().mean().sqrt())

    assert error(sigmas) < error(edm)
    coords, report = train_pas(gmm, x, schedule)  # its grid and teacher states: no teacher run of its own
    assert report["teacher_model_calls"] == 0 and report["schedule"]["objective"] == "local"
    assert coords.metadata["schedule"]["chosen"] == "local"
    assert coords.steps and error(sigmas, coords) < error(sigmas)


def test_end_to_end_keeps_the_best_of_its_candidates(gmm):
    x = seeded_noise(range(16), (96,)) * 80.0
    sigmas, report = learn_schedule(gmm, x, 4, solver="dpmpp_2m", objective="end_to_end", candidates=24)  # unpacks
    errors = report["end_to_end_errors"]
    assert set(errors) == {"local", "edm rho 3", "edm rho 5", "edm rho 7", "edm rho 9"}
    assert report["chosen"] == min(errors, key=errors.get)
    if report["chosen"] == "edm rho 7":
        torch.testing.assert_close(sigmas, edm_sigmas(4))


def test_candidate_grid_and_errors():
    grid = candidate_grid(0.002, 80.0, 8, True, [edm_sigmas(3, rho=3.0)])
    assert float(grid[0]) == 80.0 and float(grid[-1]) == 0.0 and (grid[1:] < grid[:-1]).all()
    with pytest.raises(ValueError, match="sigma_min"):
        learn_schedule(lambda x, s: x, torch.zeros(2, 3), 4)
    with pytest.raises(ValueError, match="objective"):
        learn_schedule(lambda x, s: x, torch.zeros(2, 3), 4, sigma_min=0.1, sigma_max=1.0, objective="fid")


def test_one_candidate_teacher_serves_every_step_count(gmm):
    from comfyui_pas.schedule import CandidateTeacher

    x = seeded_noise(range(10), (96,)) * 80.0
    grid = candidate_grid(0.002, 80.0, 20, False)
    teacher = CandidateTeacher.run(gmm, x, grid, 1)
    for steps in (4, 6):
        direct = learn_schedule(gmm, x, steps, candidates=20)
        reused = learn_schedule(gmm, x, steps, candidates=20, teacher=teacher)
        assert torch.equal(direct.sigmas, reused.sigmas) and reused.report["model_calls"] == 0
        torch.testing.assert_close(reused.states, direct.states)
    with pytest.raises(ValueError, match="lacks the points of edm rho 3"):
        learn_schedule(gmm, x, 4, teacher=teacher, objective="end_to_end")


def test_a_candidate_teacher_with_the_baselines_serves_the_end_to_end_choice(gmm):
    """One teacher over the candidates joined with every step count's EDM grids: the end-to-end choice from it
    equals a run that builds its own teacher (same grid, same errors), and costs only the roll-outs."""
    from comfyui_pas.schedule import CandidateTeacher, baseline_grids

    x = seeded_noise(range(10), (96,)) * 80.0
    extra = [g for steps in (4, 6) for g in baseline_grids(steps, 0.002, 80.0, False).values()]
    teacher = CandidateTeacher.run(gmm, x, candidate_grid(0.002, 80.0, 20, False, extra), 1)
    for steps in (4, 6):
        direct = learn_schedule(gmm, x, steps, solver="dpmpp_2m", candidates=20, objective="end_to_end")
        reused = learn_schedule(gmm, x, steps, solver="dpmpp_2m", teacher=teacher, objective="end_to_end")
        assert reused.report["model_calls"] == 10 * steps * 5 and reused.report["teacher_model_calls"] == 0
        assert set(reused.report["end_to_end_errors"]) == set(direct.report["end_to_end_errors"])
        for rho in (3, 5, 7, 9):  # the plain solver's final on each EDM grid against the shared teacher's final
            final = sample_pas(gmm, x, edm_sigmas(steps, rho=float(rho)), solver="dpmpp_2m")
            expected = float((final.double() - teacher.states[-1].double()).square().mean())
            assert reused.report["end_to_end_errors"][f"edm rho {rho}"] == pytest.approx(expected, rel=1e-4)
        chosen = reused.report["chosen"]
        assert chosen == min(reused.report["end_to_end_errors"], key=reused.report["end_to_end_errors"].get)
        if chosen != "local":
            torch.testing.assert_close(reused.sigmas, edm_sigmas(steps, rho=float(chosen.split()[-1])))


def test_learn_and_train_is_the_schedule_then_pas_on_it_with_exact_call_counts(gmm, counting_gmm):
    """One job: the end-to-end schedule, then train_pas on it from the same teacher states. The model sees
    exactly the calls the reports count, and one progress bar runs from 0 to its total without going back."""
    x = seeded_noise(range(16), (96,)) * 80.0
    (counting, seen), ticks = counting_gmm, []
    schedule = ScheduleSettings(candidates=24)
    coords, report = learn_and_train(counting, x, 4, solver="dpmpp_2m", settings=SearchSettings(guard="mean"),
                                     schedule=schedule, progress=lambda done, total: ticks.append((done, total)))
    learned = report["schedule"]
    assert learned["objective"] == "end_to_end" and report["teacher_model_calls"] == 0
    grid = torch.tensor(learned["candidates"], dtype=torch.float64)
    teacher_calls = 16 * 2 * (len(grid) - 1) * 2  # Heun on the candidates with one point inserted per interval
    assert learned["model_calls"] == teacher_calls + 16 * 4 * 5  # + one roll-out on each of the 5 grids
    assert sum(seen) == report["total_model_calls"] == learned["model_calls"] + report["model_calls"]
    total = ticks[-1][1]
    assert all(t == total for _, t in ticks) and ticks[-1][0] == total
    assert all(b[0] >= a[0] for a, b in zip(ticks, ticks[1:], strict=False))
    assert total >= sum(seen)  # the training's held-out roll-outs are bounded, not all spent
    alone = train_pas(gmm, x, learn_schedule(gmm, x, 4, solver="dpmpp_2m", objective="end_to_end", candidates=24),
                      solver="dpmpp_2m", guard="mean")[0]
    assert alone.steps == coords.steps and torch.equal(alone.coordinates, coords.coordinates)


def test_final_share_is_how_an_error_reaches_the_final_sample_for_gaussian_data():
    """For Gaussian data (analytic denoiser x * v / (v + sigma^2)) a perturbation made at sigma reaches the final
    sample scaled by sqrt(v / (v + sigma^2)): propagated here with a fine Heun run, independent of final_share."""
    from comfyui_pas.schedule import CandidateTeacher, final_share

    variance = 0.36

    def gaussian(x, sigma):
        sigma = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, *[1] * (x.dim() - 1))
        return x * variance / (variance + sigma ** 2)

    gaussian.sigma_min, gaussian.sigma_max = 0.002, 80.0
    x = seeded_noise(range(4000), (4,)).double() * (variance + 80.0 ** 2) ** 0.5
    teacher = CandidateTeacher.run(gaussian, x, edm_sigmas(24, 0.002, 80.0, append_zero=True), 4)
    share = final_share(teacher)
    assert float(teacher.states[-1].var()) == pytest.approx(variance, rel=0.05)
    delta = seeded_noise(range(9000, 13000), (4,)).double() * 1e-3
    for k in (4, 12, 20):
        rest = teacher.grid[k:]
        plain = teacher_states(gaussian, teacher.states[k], rest, 50)[0][-1]
        moved = teacher_states(gaussian, teacher.states[k] + delta, rest, 50)[0][-1]
        reached = float((moved - plain).square().mean() / delta.square().mean())
        assert reached == pytest.approx(float(share[k]), rel=0.02), (k, float(teacher.grid[k]))
    weighted, plain_costs = local_costs(teacher, "final"), local_costs(teacher)
    finite = torch.isfinite(plain_costs)
    torch.testing.assert_close(weighted[finite], (plain_costs * share[None, :])[finite])


def test_the_programme_weighs_costs_by_the_final_share_unless_told_otherwise(gmm):
    from comfyui_pas.schedule import CandidateTeacher

    x = seeded_noise(range(10), (96,)) * 80.0
    teacher = CandidateTeacher.run(gmm, x, candidate_grid(0.002, 80.0, 20, False), 1)
    weighted = learn_schedule(gmm, x, 5, teacher=teacher)
    unweighted = learn_schedule(gmm, x, 5, teacher=teacher, cost_weighting="none")
    assert weighted.report["indices"] == cheapest_path(local_costs(teacher, "final"), 5)
    assert unweighted.report["indices"] == cheapest_path(local_costs(teacher), 5)
    coords, _ = train_pas(gmm, x, weighted)
    assert coords.metadata["schedule"]["cost_weighting"] == "final"
    with pytest.raises(ValueError, match="cost_weighting must be one of"):
        ScheduleSettings(cost_weighting="mse")
