"""train_tools.studies.trajectory_pca: the explained-variance helper on hand-made trajectories, and the three sets."""
import pytest
import torch

from train_tools.studies import trajectory_pca


def _plane_trajectory(points=12, dim=50, seed=0):
    """Points a + s_k u + t_k v on a curve inside one 2-D affine plane of R^dim."""
    g = torch.Generator().manual_seed(seed)
    a, u, v = (torch.randn(dim, generator=g, dtype=torch.float64) for _ in range(3))
    s = torch.linspace(0, 1, points, dtype=torch.float64)
    return a + s[:, None] * u + (s ** 2)[:, None] * v


def test_a_trajectory_in_a_plane_is_explained_by_two_components():
    ratios = trajectory_pca.explained_variance(_plane_trajectory())
    assert ratios.sum() == pytest.approx(1.0)
    assert float(ratios[:2].sum()) == pytest.approx(1.0, abs=1e-12)
    assert float(ratios[0]) < 1 - 1e-3  # it is curved: one component is not enough


def test_a_straight_line_is_explained_by_one_component():
    g = torch.Generator().manual_seed(1)
    a, u = torch.randn(30, generator=g, dtype=torch.float64), torch.randn(30, generator=g, dtype=torch.float64)
    steps = torch.tensor([0.0, 0.1, 0.5, 0.55, 2.0, 3.0], dtype=torch.float64)  # uneven spacing along the line
    ratios = trajectory_pca.explained_variance(a + steps[:, None] * u)
    assert float(ratios[0]) == pytest.approx(1.0, abs=1e-12)


def test_batched_per_sample_and_cumulative():
    batch = torch.stack([_plane_trajectory(seed=s) for s in range(3)])
    ratios = trajectory_pca.explained_variance(batch)
    assert ratios.shape == (3, 12)
    for i in range(3):  # each sample on its own, whatever the batch
        torch.testing.assert_close(ratios[i], trajectory_pca.explained_variance(batch[i]))
    sums = trajectory_pca.cumulative(ratios[:, :2], 4)  # padded past the rank with the last value
    assert sums.shape == (3, 4) and torch.allclose(sums[:, 1:], torch.ones(3, 3, dtype=torch.float64))
    same = trajectory_pca.explained_variance(torch.ones(4, 5))  # no variance at all
    assert torch.equal(same, torch.zeros_like(same))
    with pytest.raises(ValueError):
        trajectory_pca.explained_variance(torch.ones(5))


def test_trajectory_sets_of_the_mixture():
    model, shape, dtype, _ = trajectory_pca.load_model("gmm")
    x = torch.randn(2, *shape, dtype=dtype, generator=torch.Generator().manual_seed(0)) * 80.0
    sets = trajectory_pca.trajectory_sets(model, x, 6)
    assert sets["states"].shape == (2, 7, 128) and sets["directions"].shape == (2, 6, 128)
    torch.testing.assert_close(sets["x_T + directions"][:, 0], x)
    torch.testing.assert_close(sets["states"][:, 0], x)
    # the first direction is the ODE's at x_T: (x_T - D(x_T, 80)) / 80
    expected = (x - model(x, torch.full((2,), 80.0, dtype=dtype))) / 80.0
    torch.testing.assert_close(sets["directions"][:, 0], expected)
