"""comfyui_pas.teacher, the ground truth every PAS number is measured against, pinned to references
written here: EDM's Algorithm 1 (Karras et al. 2022, deterministic Heun) on the Gaussian mixture, and the
exact probability-flow solution of a single Gaussian."""
import math

import pytest
import torch

from comfyui_pas.grids import edm_sigmas
from comfyui_pas.teacher import Denoiser, heun_states, teacher_states
from train_tools.data.gmm import GaussianMixtureDenoiser
from train_tools.data.seeds import seeded_noise


def edm_algorithm_1(denoise, x, t):
    """EDM Algorithm 1 with S_churn = 0: the states x_0 ... x_N on the grid t_0 > ... > t_N."""
    states = [x]
    for i in range(len(t) - 1):
        t_cur, t_next = float(t[i]), float(t[i + 1])
        d_cur = (x - denoise(x, t_cur)) / t_cur
        x_next = x + (t_next - t_cur) * d_cur
        if t_next != 0:  # second-order correction, except on the last step to t_N = 0
            d_prime = (x_next - denoise(x_next, t_next)) / t_next
            x_next = x + (t_next - t_cur) * (0.5 * d_cur + 0.5 * d_prime)
        x = x_next
        states.append(x)
    return torch.stack(states)


def counting(model):
    """denoise(x, t) for the reference loop, counting model calls per sample."""
    def denoise(x, t):
        denoise.calls += 1
        return model(x, torch.full((x.shape[0],), t, dtype=x.dtype))
    denoise.calls = 0
    return denoise


def refined(sigmas, substeps, rho=7.0):
    """`substeps` points inserted in every interval, uniform in sigma^(1/rho) (docs/method.md 2)."""
    points = []
    for hi, lo in zip(sigmas[:-1].tolist(), sigmas[1:].tolist(), strict=True):
        a, b = hi ** (1 / rho), lo ** (1 / rho)
        points += [(a + j / (substeps + 1) * (b - a)) ** rho for j in range(substeps + 1)]
    return torch.tensor(points + [float(sigmas[-1])], dtype=torch.float64)


@pytest.mark.parametrize("append_zero", [True, False])
def test_heun_states_is_edm_algorithm_1_on_the_mixture(gmm, append_zero):
    grid = edm_sigmas(12, append_zero=append_zero).double()
    x = seeded_noise(range(6), (96,)) * 80.0
    expected = edm_algorithm_1(counting(gmm), x, grid)
    torch.testing.assert_close(heun_states(gmm, x, grid, 1), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(heun_states(gmm, x, grid, 4), expected[::4], rtol=1e-12, atol=1e-12)


def test_teacher_states_are_heun_on_the_refined_grid_at_the_student_sigmas(gmm):
    student = edm_sigmas(5, append_zero=True).double()
    x = seeded_noise(range(5), (96,)) * 80.0
    denoise = counting(gmm)
    expected = edm_algorithm_1(denoise, x, refined(student, 3))[::4]
    states, info = teacher_states(gmm, x, student, substeps=3)
    assert states.shape == (6, 5, 96)
    torch.testing.assert_close(states, expected, rtol=1e-10, atol=1e-10)
    assert info["substeps"] == 3 and info["nfe"] == denoise.calls
    chunked, _ = teacher_states(Denoiser(gmm, chunk_size=2), x, student, substeps=3)
    assert torch.equal(chunked, states)  # a trajectory does not depend on its chunk


def test_heun_converges_at_second_order_to_the_exact_flow_of_one_gaussian():
    """x0 ~ N(mu, s^2 I) has the exact solution x(sigma) = mu + (x_T - mu) sqrt(s^2 + sigma^2) / sqrt(s^2 + T^2)."""
    mu, s = seeded_noise([7], (16,))[0], 0.5
    model = GaussianMixtureDenoiser(mu[None], s)
    student = edm_sigmas(6).double()  # ends at sigma_min: every step is a Heun step
    x = seeded_noise(range(4), (16,)) * 80.0
    exact = mu + (x - mu) * math.sqrt(s ** 2 + float(student[-1]) ** 2) / math.sqrt(s ** 2 + 80.0 ** 2)
    errors = []
    for substeps in (1, 3, 7, 15):  # 2, 4, 8, 16 Heun steps per student interval
        final = teacher_states(model, x, student, substeps=substeps)[0][-1]
        errors.append(float((final - exact).abs().max()))
    ratios = [a / b for a, b in zip(errors, errors[1:], strict=False)]
    assert all(3.0 < r < 5.0 for r in ratios[1:]), (errors, ratios)  # halving the step: error / 4
    assert errors[-1] < 2.5e-3 * float((exact - mu).abs().max())  # 96 Heun steps: within 0.25% of the scale
