"""Base solvers as effective step directions (docs/solvers.md, docs/method.md 1): x_next = x + (sigma_next - sigma) * D.

Every solver here calls the model once per step. Its grid-dependent weights are computed once from the
sigmas it is built on; per step it combines the current model output with its history of past outputs
(raw directions e = (x - denoised) / sigma, or denoised samples) into D. The history always holds model
outputs, never a corrected direction (docs/method.md 1). A step onto sigma = 0 lands on `denoised`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .grids import EDM_SIGMA_MAX, EDM_SIGMA_MIN


@dataclass(frozen=True)
class Option:
    """An integer solver option with its default (ComfyUI's) and range."""

    name: str
    default: int
    low: int
    high: int


ORDER = "max_order"


class Solver:
    """One grid, one batch: `direction` gives D_i, `commit` records the model output of step i."""

    name = ""
    comfy_sampler = ""  # the ComfyUI sampler this solver equals with default options
    options: tuple[Option, ...] = ()
    history_kind = "eps"  # "eps": D = sum_j w_j e_{i-j}; "data": D = (x - sum_j w_j denoised_{i-j}) / sigma

    def __init__(self, sigmas: torch.Tensor, **options):
        self.settings = resolve_options(type(self), options)
        self.sigma_values = [float(s) for s in sigmas.detach().cpu().flatten().tolist()]
        steps = len(self.sigma_values) - 1
        self.weights = [self.step_weights(sigmas, i) for i in range(steps)]
        self.keep = max([len(w) - 1 for w, _ in self.weights] + [0])
        self.history: list[torch.Tensor] = []

    # ---- what each rule defines -------------------------------------------------------------------
    def step_weights(self, sigmas: torch.Tensor, step: int) -> tuple[tuple[float, ...], float]:
        """(weights, divisor) of the current output and the older ones (newest first) at a 0-based step."""
        return (1.0,), 1.0

    # ---- the shared recursion ---------------------------------------------------------------------
    @property
    def label(self) -> str:
        return describe_solver(self.name, self.settings)

    def lands_on_denoised(self, step: int) -> bool:
        return self.sigma_values[step + 1] == 0

    def _output(self, x, denoised, sigma):
        return (x - denoised) / sigma if self.history_kind == "eps" else denoised

    def direction(self, step: int, x: torch.Tensor, denoised: torch.Tensor, sigma) -> torch.Tensor:
        """Effective direction D_i at step i from the current point, its model output and its sigma."""
        if self.lands_on_denoised(step):
            return (x - denoised) / sigma
        weights, divisor = self.weights[step]
        total = weights[0] * self._output(x, denoised, sigma)
        for weight, past in zip(weights[1:], reversed(self.history), strict=False):
            total = total + weight * past
        if divisor != 1:
            total = total / divisor
        return total if self.history_kind == "eps" else (x - total) / sigma

    def commit(self, step: int, x: torch.Tensor, denoised: torch.Tensor, sigma) -> None:
        """Keep the model output of step i (e or denoised) for the later steps."""
        if not self.keep:
            return
        self.history.append(self._output(x, denoised, sigma))
        del self.history[: max(0, len(self.history) - self.keep)]

    def rows(self, index) -> Solver:
        """A copy restricted to some samples (held-out roll-outs)."""
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__)
        copy.history = [past[index] for past in self.history]
        return copy


class Euler(Solver):
    """DDIM in the sigma form (docs/method.md 1)."""

    name, comfy_sampler = "euler", "euler"


def _order(solver: Solver, step: int) -> int:
    """Warm-up: orders 1, 2, ... up to max_order on the first steps."""
    return min(solver.settings[ORDER], step + 1)


class IPNDM(Solver):
    """Fixed-step Adams-Bashforth on e, the paper's iPNDM (docs/method.md 1)."""

    name, comfy_sampler = "ipndm", "ipndm"
    options = (Option(ORDER, 4, 1, 4),)
    TABLE = {1: ((1,), 1), 2: ((3, -1), 2), 3: ((23, -16, 5), 12), 4: ((55, -59, 37, -9), 24)}

    def step_weights(self, sigmas, step):
        return self.TABLE[_order(self, step)]


class IPNDMVariable(Solver):
    """iPNDM with weights from the ratios of the actual sigma steps (ComfyUI's ipndm_v, orders 1-4)."""

    name, comfy_sampler = "ipndm_v", "ipndm_v"
    options = (Option(ORDER, 4, 1, 4),)

    def step_weights(self, sigmas, step):
        order = _order(self, step)
        s = self.sigma_values
        if order == 1:
            return (1.0,), 1.0
        # h0: this step, h1, h2, h3: the earlier ones (all in sigma, all negative).
        h0, h1 = s[step + 1] - s[step], s[step] - s[step - 1]
        ratio = h0 / h1
        base = (1 + ratio / 2, -ratio / 2)
        if order == 2:
            return base, 1.0
        h2 = s[step - 1] - s[step - 2]
        span01 = h0 + h1
        a = (1 - h0 / (3 * span01) * (h0 * span01) / (h1 * (h1 + h2))) / 2
        if order == 3:
            return (base[0] + a, base[1] - (1 + h1 / h2) * a, a * h1 / h2), 1.0
        h3 = s[step - 2] - s[step - 3]
        span012 = span01 + h2
        q = h1 * (h1 + h2) / (h2 * (h2 + h3))
        b = (((1 - h0 / (3 * span01)) / 2 + (1 - h0 / (2 * span01)) * h0 / (6 * span012))
             * (h0 * span01 * span012) / (h1 * (h1 + h2) * (h1 + h2 + h3)))
        return (base[0] + a + b,
                base[1] - (1 + h1 / h2) * a - (1 + h1 / h2 + q) * b,
                a * h1 / h2 + (h1 / h2 + q * (1 + h2 / h3)) * b,
                -b * q * h1 / h2), 1.0


# DEIS maps sigma to VP time with ComfyUI's fixed range (comfy/k_diffusion/deis.py), whatever the grid.
DEIS_SIGMA_RANGE = (EDM_SIGMA_MIN, EDM_SIGMA_MAX)
DEIS_EPSILON = 1e-3
DEIS_QUADRATURE_POINTS = 10000


def deis_vp_times(sigmas: torch.Tensor):
    """(t, beta_0, beta_1): the VP time of each sigma and the linear-beta schedule through the range."""
    sigma_min, sigma_max = (torch.tensor(v, dtype=torch.float32) for v in DEIS_SIGMA_RANGE)
    log_max = torch.log(sigma_max ** 2 + 1)
    beta_d = 2 * (torch.log(sigma_min ** 2 + 1) / DEIS_EPSILON - log_max) / (DEIS_EPSILON - 1)
    beta_min = log_max - 0.5 * beta_d
    grid = sigmas.detach().cpu()
    t = ((beta_min ** 2 + 2 * beta_d * torch.log(grid ** 2 + 1)).sqrt() - beta_min) / beta_d
    return t, beta_min, beta_d + beta_min


class DEIS(Solver):
    """DEIS-tAB: exponential integrator on e with Lagrange extrapolation in VP time (ComfyUI's deis).

    x_next = x + sum_j C_ij e_{i-j}, so D = sum_j C_ij e_{i-j} / (sigma_next - sigma). C_ij integrates
    the VP weight against the Lagrange basis polynomial of node t_{i-j} over [t_i, t_{i+1}], with the same
    N-point rectangle rule as ComfyUI (in the precision of the sigmas it is given).
    """

    name, comfy_sampler = "deis", "deis"
    options = (Option(ORDER, 3, 1, 3),)

    def __init__(self, sigmas, **options):
        self._vp = deis_vp_times(sigmas)
        super().__init__(sigmas, **options)

    def step_weights(self, sigmas, step):
        order = _order(self, step)
        if order == 1 or self.sigma_values[step + 1] == 0:
            return (1.0,), 1.0
        t, beta_0, beta_1 = self._vp
        taus = torch.linspace(float(t[step]), float(t[step + 1]), DEIS_QUADRATURE_POINTS, dtype=t.dtype)
        width = (t[step + 1] - t[step]) / DEIS_QUADRATURE_POINTS
        log_alpha_slope = -taus * (beta_1 - beta_0) - beta_0
        alpha = torch.exp(-0.5 * taus ** 2 * (beta_1 - beta_0) - taus * beta_0)
        weight = -0.5 * log_alpha_slope / torch.sqrt(alpha * (1 - alpha))
        nodes = [t[step - k] for k in range(order)]
        h = self.sigma_values[step + 1] - self.sigma_values[step]
        coefficients = []
        for j in range(order):
            lagrange = torch.ones_like(taus)
            for k in range(order):
                if k != j:
                    lagrange = lagrange * (taus - nodes[k]) / (nodes[j] - nodes[k])
            coefficients.append(float(torch.sum(weight * lagrange) * width) / h)
        return tuple(coefficients), 1.0


def _log_ratio(sigma_a: float, sigma_b: float) -> float:
    """h = t_b - t_a with t = -log sigma."""
    return math.log(sigma_a) - math.log(sigma_b)


class TwoStepDataSolver(Solver):
    """A rule on denoised samples that extrapolates from the previous one in t = -log sigma: first step and
    a step onto 0 plain; otherwise weights from h_last = t_i - t_{i-1} and h = t_{i+1} - t_i."""

    history_kind = "data"

    def step_weights(self, sigmas, step):
        s = self.sigma_values
        if step == 0 or s[step + 1] == 0:
            return (1.0,), 1.0
        return self.two_step_weights(_log_ratio(s[step - 1], s[step]), _log_ratio(s[step], s[step + 1])), 1.0

    def two_step_weights(self, h_last: float, h: float) -> tuple[float, float]:
        raise NotImplementedError


class DPMSolverPP2M(TwoStepDataSolver):
    """DPM-Solver++(2M): D = (x - d_hat) / sigma, d_hat = (1 + 1/2r) d_i - (1/2r) d_{i-1}, r = h_last / h."""

    name, comfy_sampler = "dpmpp_2m", "dpmpp_2m"

    def two_step_weights(self, h_last, h):
        r = h_last / h
        return 1 + 1 / (2 * r), -1 / (2 * r)


class ResMultistep(TwoStepDataSolver):
    """RES two-step exponential integrator (ComfyUI's res_multistep, eta 0): phi-function weights."""

    name, comfy_sampler = "res_multistep", "res_multistep"

    def two_step_weights(self, h_last, h):
        c2 = -h_last / h
        phi1 = math.expm1(-h) / -h
        phi2 = (phi1 - 1) / -h
        b_current, b_previous = phi1 - phi2 / c2, phi2 / c2
        # x_next = (sigma_next / sigma) x + h (b_cur d_i + b_prev d_{i-1}) = x + (1 - sigma_next / sigma)(d_hat - x)
        scale = h / -math.expm1(-h)
        return scale * b_current, scale * b_previous


SOLVER_CLASSES: dict[str, type[Solver]] = {
    cls.name: cls for cls in (Euler, IPNDM, IPNDMVariable, DEIS, DPMSolverPP2M, ResMultistep)}
SOLVERS = tuple(SOLVER_CLASSES)
SOLVER_ALIASES = {"ddim": "euler"}


def canonical_solver(solver: str) -> str:
    """The registry name; 'ddim' is 'euler' in the sigma formulation; anything unknown is an error."""
    name = str(solver).lower()
    name = SOLVER_ALIASES.get(name, name)
    if name not in SOLVER_CLASSES:
        raise ValueError(f"unknown solver {solver!r}: choose one of {', '.join(SOLVERS)} (ddim = euler)")
    return name


def solver_class(solver: str) -> type[Solver]:
    return SOLVER_CLASSES[canonical_solver(solver)]


def resolve_options(cls: type[Solver], given: dict) -> dict:
    """The solver's options with defaults filled in; unknown options are ignored only when None."""
    known = {option.name: option for option in cls.options}
    settings = {}
    for key, value in given.items():
        if key not in known and value is not None:
            raise ValueError(f"solver {cls.name} has no option {key!r}"
                             + (f" (its options: {', '.join(known)})" if known else " (it takes none)"))
    for name, option in known.items():
        value = given.get(name)
        value = option.default if value is None or int(value) == 0 else int(value)
        if not option.low <= value <= option.high:
            raise ValueError(f"{cls.name} {name} must be {option.low}-{option.high}, got {value}")
        settings[name] = value
    return settings


def solver_options(solver: str, max_order: int | None = None) -> dict:
    """The full option dict of a solver from the one shared order argument (ignored where it has none)."""
    cls = solver_class(solver)
    given = {ORDER: max_order} if any(option.name == ORDER for option in cls.options) else {}
    return resolve_options(cls, given)


def make_solver(solver: str, sigmas: torch.Tensor, **options) -> Solver:
    """A solver object for one grid (weights precomputed from exactly these sigmas)."""
    return solver_class(solver)(sigmas, **options)


def describe_solver(solver: str, options: dict) -> str:
    """'deis (order 3)', 'euler'."""
    cls = solver_class(solver)
    extras = ", ".join(f"{o.name.replace('max_', '')} {options.get(o.name, o.default)}" for o in cls.options)
    return f"{cls.name} ({extras})" if extras else cls.name


def solver_tooltip() -> str:
    """One line per solver: which ComfyUI sampler it equals and its options."""
    lines = []
    for cls in SOLVER_CLASSES.values():
        extras = "; ".join(f"{o.name} {o.low}-{o.high}, ComfyUI's default {o.default}" for o in cls.options)
        lines.append(f"{cls.name} = ComfyUI's {cls.comfy_sampler}" + (f" ({extras})" if extras else ""))
    return "Base solver; uncorrected, each equals a ComfyUI sampler: " + "; ".join(lines) + "."
