"""The spread-matched fit of train_tools/studies/spread_fit.py: it keeps the teacher's spread at a cost in fit
loss, reduces to the plain fit at weight 0, and plugs into the PAS search through GridSearch.fit_step."""
import torch

from comfyui_pas.fit import fit_coordinates
from train_tools.studies.spread_fit import spread_matched_coordinates, spread_statistics, train


def shrinking_problem():
    """Teacher steps = a predictable part along the basis + a part no shared coordinates can predict, so the
    least-squares next states have less spread than the teacher's."""
    g = torch.Generator().manual_seed(0)
    n, shape = 64, (1, 8, 8)
    points = torch.randn(n, *shape, generator=g, dtype=torch.float64)
    basis = torch.linalg.qr(torch.randn(n, 64, 2, generator=g, dtype=torch.float64))[0].transpose(1, 2)
    h = -0.5
    unpredictable = 0.8 * torch.randn(n, 64, generator=g, dtype=torch.float64)
    wanted = 3.0 * basis[:, 0] - 1.0 * basis[:, 1] + unpredictable
    target = points + h * wanted.reshape(n, *shape)
    return basis, wanted, points, h, target


def next_states(basis, c, points, h):
    return points + h * torch.einsum("nkd,k->nd", basis, c).reshape(points.shape)


def test_spread_statistics_by_hand():
    x = torch.tensor([[[[0.0, 2.0, 0.0], [2.0, 0.0, 2.0], [0.0, 2.0, 0.0]]]], dtype=torch.float64)
    values = spread_statistics(torch.cat([x, torch.zeros_like(x)]))
    assert values.shape == (2,)
    assert torch.isclose(values[0], torch.tensor(x.flatten().var().item() / 2, dtype=torch.float64))
    assert spread_statistics(torch.ones(3, 5, dtype=torch.float64)).tolist() == [0.0]  # vectors: variance only


def test_weight_zero_is_the_plain_fit():
    basis, wanted, points, h, target = shrinking_problem()
    plain = fit_coordinates(basis, wanted, None, "l2")
    assert torch.equal(spread_matched_coordinates(basis, wanted, None, points, h, target, "l2", weight=0), plain)


def test_a_large_weight_matches_the_teachers_spread_at_a_cost_in_fit_loss():
    basis, wanted, points, h, target = shrinking_problem()
    goal = spread_statistics(target)
    plain = fit_coordinates(basis, wanted, None, "l2")
    matched = spread_matched_coordinates(basis, wanted, None, points, h, target, "l2", weight=1000.0)
    gap_plain = (spread_statistics(next_states(basis, plain, points, h)) / goal - 1).abs()
    gap_matched = (spread_statistics(next_states(basis, matched, points, h)) / goal - 1).abs()
    assert float(gap_plain.max()) > 0.05  # the least-squares states have lost spread
    assert float(gap_matched.max()) < 0.01
    loss = lambda c: float((torch.einsum("nkd,k->nd", basis, c) - wanted).square().mean())  # noqa: E731
    assert loss(matched) > loss(plain)


def test_the_search_uses_the_fit_it_is_given(gmm_training):
    denoiser, x, sigmas, targets, settings = gmm_training
    plain = train(denoiser, x, sigmas, targets, "euler", settings, None)
    same = train(denoiser, x, sigmas, targets, "euler", settings, 0.0)
    matched = train(denoiser, x, sigmas, targets, "euler", settings, 1000.0)
    assert plain.steps and same.steps == plain.steps
    assert torch.equal(same.coordinates, plain.coordinates)
    assert matched.steps != plain.steps or not torch.allclose(matched.coordinates, plain.coordinates)
