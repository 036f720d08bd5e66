"""Every registry solver against weights derived by hand, without ComfyUI: Adams-Bashforth from exact rational
integration, ipndm_v reducing to ipndm on a uniform grid, DPM-Solver++(2M) and RES in their closed forms,
and DEIS coefficients integrating polynomials exactly."""
import math
from fractions import Fraction

import pytest
import torch

from comfyui_pas.grids import edm_sigmas
from comfyui_pas.solvers import DEIS_QUADRATURE_POINTS, SOLVERS, deis_vp_times, make_solver


def adams_bashforth(order: int) -> list[Fraction]:
    """b_j = integral over s in [0, 1] of the Lagrange polynomial of node -j on the nodes 0, -1, ..., -(order-1)."""
    weights = []
    for j in range(order):
        poly = [Fraction(1)]  # coefficients, lowest degree first
        for k in range(order):
            if k == j:
                continue
            scale = Fraction(1, k - j)  # (s + k) / (-j + k)
            poly = [scale * (a + b) for a, b in zip([Fraction(0)] + poly, [Fraction(k) * c for c in poly] + [Fraction(0)], strict=True)]
        weights.append(sum(c / (n + 1) for n, c in enumerate(poly)))
    return weights


def steps_of(solver, sigmas, x, outputs):
    """Run the solver over `sigmas` with the given model outputs (denoised per step): the points."""
    points = [x]
    for i, denoised in enumerate(outputs):
        direction = solver.direction(i, points[-1], denoised, sigmas[i])
        solver.commit(i, points[-1], denoised, sigmas[i])
        points.append(denoised if float(sigmas[i + 1]) == 0 else points[-1] + (sigmas[i + 1] - sigmas[i]) * direction)
    return points


def random_run(steps, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 5, generator=generator, dtype=torch.float64) * 10
    outputs = [torch.randn(3, 5, generator=generator, dtype=torch.float64) for _ in range(steps)]
    return x, outputs


def test_euler_is_the_ode_direction():
    sigmas = edm_sigmas(4)
    x, outputs = random_run(4)
    points = steps_of(make_solver("euler", sigmas), sigmas, x, outputs)
    for i, denoised in enumerate(outputs):
        expected = points[i] + (sigmas[i + 1] - sigmas[i]) * (points[i] - denoised) / sigmas[i]
        torch.testing.assert_close(points[i + 1], expected, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_ipndm_weights_are_adams_bashforth(order):
    solver = make_solver("ipndm", edm_sigmas(6), max_order=order)
    for step, (weights, divisor) in enumerate(solver.weights):
        expected = adams_bashforth(min(order, step + 1))
        assert [Fraction(w) / divisor for w in weights] == expected


@pytest.mark.parametrize("order", [1, 2, 3])
def test_ipndm_v_on_a_uniform_grid_is_ipndm(order):
    sigmas = torch.linspace(12.0, 2.0, 7, dtype=torch.float64)  # equal steps in sigma
    variable = make_solver("ipndm_v", sigmas, max_order=order)
    fixed = make_solver("ipndm", sigmas, max_order=order)
    for (weights, divisor), (table, table_divisor) in zip(variable.weights, fixed.weights, strict=True):
        assert [w / divisor for w in weights] == pytest.approx([w / table_divisor for w in table], rel=1e-13)
    x, outputs = random_run(6)
    torch.testing.assert_close(steps_of(variable, sigmas, x, outputs)[-1], steps_of(fixed, sigmas, x, outputs)[-1],
                               rtol=1e-12, atol=1e-12)


def test_ipndm_v_order_4_on_a_uniform_grid_is_third_order():
    """ComfyUI's ipndm_v order-4 formula (kept exactly) gives (57, -65, 43, -11) / 24 on equal steps, not
    Adams-Bashforth's (55, -59, 37, -9) / 24: exact for polynomials of degree <= 2 only (docs/method.md 1)."""
    sigmas = torch.linspace(12.0, 2.0, 7, dtype=torch.float64)
    weights, _ = make_solver("ipndm_v", sigmas, max_order=4).weights[4]
    assert list(weights) == pytest.approx([57 / 24, -65 / 24, 43 / 24, -11 / 24], rel=1e-13)
    for degree, exact in enumerate([1, 1 / 2, 1 / 3, 1 / 4]):  # integral of s^degree over [0, 1]
        moment = sum(w * (-j) ** degree for j, w in enumerate(weights))
        if degree <= 2:
            assert moment == pytest.approx(exact, rel=1e-13)
        else:
            assert moment != pytest.approx(exact, rel=1e-3)


def test_ipndm_v_second_order_weights_follow_the_step_ratio():
    sigmas = torch.tensor([10.0, 6.0, 5.0, 1.0], dtype=torch.float64)
    solver = make_solver("ipndm_v", sigmas, max_order=2)
    for step in (1, 2):
        ratio = float((sigmas[step + 1] - sigmas[step]) / (sigmas[step] - sigmas[step - 1]))
        assert solver.weights[step][0] == pytest.approx((1 + ratio / 2, -ratio / 2), rel=1e-14)


def two_step_run(sigmas, x, outputs, update):
    """Roll a two-step data rule out: update(x, d, d_old, sigma_old, sigma, sigma_next) gives the next x
    (d_old and sigma_old None on the first step); a step onto 0 returns d."""
    old = None
    for i, denoised in enumerate(outputs):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        if s_next == 0:
            return denoised
        x = update(x, denoised, old, None if old is None else float(sigmas[i - 1]), s, s_next)
        old = denoised
    return x


def dpmpp_2m_step(x, d, d_old, s_old, s, s_next):
    """DPM-Solver++(2M) (Lu et al. 2022, in k-diffusion's form): x' = (s'/s) x - expm1(-h) d_hat."""
    h = math.log(s) - math.log(s_next)
    if d_old is None:
        d_hat = d
    else:
        r = (math.log(s_old) - math.log(s)) / h
        d_hat = (1 + 1 / (2 * r)) * d - d_old / (2 * r)
    return (s_next / s) * x - math.expm1(-h) * d_hat


def res_multistep_step(x, d, d_old, s_old, s, s_next):
    """RES two-step (Zhang and Chen; ComfyUI's res_multistep, eta 0): x' = e^-h x + h (b1 d + b2 d_old) with
    phi_1(z) = (e^z - 1) / z, phi_2(z) = (phi_1(z) - 1) / z at z = -h, c2 = (t_old - t) / h; Euler first."""
    if d_old is None:
        return x + (s_next - s) * (x - d) / s
    t, t_next, t_old = -math.log(s), -math.log(s_next), -math.log(s_old)
    h = t_next - t
    c2 = (t_old - t) / h
    phi1 = math.expm1(-h) / -h
    phi2 = (phi1 - 1) / -h
    return math.exp(-h) * x + h * ((phi1 - phi2 / c2) * d + (phi2 / c2) * d_old)


@pytest.mark.parametrize("name, reference", [("dpmpp_2m", dpmpp_2m_step), ("res_multistep", res_multistep_step)])
@pytest.mark.parametrize("append_zero", [False, True])
def test_data_solvers_match_their_closed_forms(name, reference, append_zero):
    sigmas = edm_sigmas(6, append_zero=append_zero)
    x, outputs = random_run(6, seed=4)
    points = steps_of(make_solver(name, sigmas), sigmas, x, outputs)
    torch.testing.assert_close(points[-1], two_step_run(sigmas, x, outputs, reference), rtol=1e-12, atol=1e-12)


def vp_weight(taus, beta_0, beta_1):
    """The DEIS weight of e in VP time: -1/2 d(log alpha)/dt / sqrt(alpha (1 - alpha))."""
    alpha = torch.exp(-0.5 * taus ** 2 * (beta_1 - beta_0) - taus * beta_0)
    return 0.5 * (taus * (beta_1 - beta_0) + beta_0) / torch.sqrt(alpha * (1 - alpha))


def simpson(values, a, b):
    n = values.shape[0] - 1
    width = (b - a) / n
    return float(width / 3 * (values[0] + values[-1] + 4 * values[1:-1:2].sum() + 2 * values[2:-1:2].sum()))


@pytest.mark.parametrize("order", [2, 3])
def test_deis_coefficients_integrate_polynomials_exactly(order):
    """sum_j C_ij p(t_{i-j}) (sigma_{i+1} - sigma_i) = the integral of the VP weight times p over [t_i, t_{i+1}]
    for every polynomial p of degree < order (Lagrange extrapolation is exact on them), with the integral
    taken by Simpson's rule on 200,001 points in float64, not the solver's rectangle rule."""
    sigmas = edm_sigmas(6)
    solver = make_solver("deis", sigmas, max_order=order)
    t, beta_0, beta_1 = (v.double() for v in deis_vp_times(sigmas))
    for step in range(order - 1, 6):
        coefficients, _ = solver.weights[step]
        h = float(sigmas[step + 1] - sigmas[step])
        taus = torch.linspace(float(t[step]), float(t[step + 1]), 200_001, dtype=torch.float64)
        weight = vp_weight(taus, beta_0, beta_1)
        for degree in range(order):
            exact = simpson(weight * taus ** degree, float(t[step]), float(t[step + 1]))
            combined = sum(c * float(t[step - j]) ** degree for j, c in enumerate(coefficients)) * h
            # the solver's N-point rectangle rule (ComfyUI's) is first-order accurate in 1 / N
            assert combined == pytest.approx(exact, rel=2 / DEIS_QUADRATURE_POINTS)


def test_deis_weights_sum_to_one_as_the_exact_vp_integral_says():
    """The integral of the VP weight over [t_i, t_{i+1}] is sigma_{i+1} - sigma_i (d sigma / d alpha), so the
    coefficients of a constant e sum to 1."""
    solver = make_solver("deis", edm_sigmas(6), max_order=3)
    for coefficients, _ in solver.weights[1:]:
        assert sum(coefficients) == pytest.approx(1.0, rel=2 / DEIS_QUADRATURE_POINTS)


HAND_DERIVED = {"euler": test_euler_is_the_ode_direction, "ipndm": test_ipndm_weights_are_adams_bashforth,
                "ipndm_v": test_ipndm_v_on_a_uniform_grid_is_ipndm, "deis": test_deis_coefficients_integrate_polynomials_exactly,
                "dpmpp_2m": test_data_solvers_match_their_closed_forms,
                "res_multistep": test_data_solvers_match_their_closed_forms}


def test_every_registry_solver_has_a_hand_derived_test():
    assert set(HAND_DERIVED) == set(SOLVERS)
