"""PAS Sampler without coordinates reproduces ComfyUI's own samplers through SamplerCustom.

Real ModelPatchers (tiny SD1.x-topology UNets) for EPS, v-prediction and flow (CONST, shift 3); the
reference is ComfyUI's built-in sampler on the same sigmas, noise and conditioning.
"""
from __future__ import annotations

import comfy.samplers
import pytest
import torch
from comfy_extras import nodes_custom_sampler as ncs

CFG = 4.0
STEPS = 5
# (PAS solver, PAS max_order, ComfyUI's reference sampler)
SOLVERS = {
    "euler": ("euler", 3, lambda: comfy.samplers.sampler_object("euler")),
    "ipndm4": ("ipndm", 4, lambda: comfy.samplers.sampler_object("ipndm")),
    "ipndm2": ("ipndm", 2, lambda: comfy.samplers.ksampler("ipndm", {"max_order": 2})),
}
# Every registered solver against ComfyUI's own function: default options (ComfyUI's) and a lower order.
EVERY_SOLVER = {
    "euler": ("euler", 0, "euler", {}),
    "ipndm": ("ipndm", 0, "ipndm", {}),
    "ipndm_v": ("ipndm_v", 0, "ipndm_v", {}),
    "ipndm_v2": ("ipndm_v", 2, "ipndm_v", {"max_order": 2}),
    "deis": ("deis", 0, "deis", {}),
    "deis2": ("deis", 2, "deis", {"max_order": 2}),
    "dpmpp_2m": ("dpmpp_2m", 0, "dpmpp_2m", {}),
    "res_multistep": ("res_multistep", 0, "res_multistep", {}),
}
# (scheduler, steps, keep the trailing sigma = 0)
GRIDS = {"karras5": ("karras", 5, True), "simple8": ("simple", 8, True), "karras6_no_zero": ("karras", 6, False),
         "normal4_no_zero": ("normal", 4, False)}
# (batch, latent height, latent width): batch 1 square and batch 3 non-square
SHAPES = {"b1_square": (1, 8, 8), "b3_wide": (3, 8, 12)}


def sample_custom(model, sampler, sigmas, latent, conditioning, seed=7):
    positive, negative = conditioning
    out = ncs.SamplerCustom.execute(model, True, seed, CFG, positive, negative, sampler, sigmas, latent)
    return out.result[0]["samples"]


def assert_same_samples(actual, expected):
    scale = expected.abs().max().item()
    assert actual.shape == expected.shape
    assert torch.isfinite(actual).all()
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("scheduler", ["karras", "normal", "simple"])
@pytest.mark.parametrize("solver_case", list(SOLVERS))
def test_uncorrected_matches_comfyui(nodes, tiny_models, model_kind, conditioning, solver_case, scheduler, shape):
    model = tiny_models(model_kind)
    batch, height, width = SHAPES[shape]
    latent = {"samples": torch.zeros(batch, 4, height, width)}
    sigmas = ncs.BasicScheduler.execute(model, scheduler, STEPS, 1.0).result[0]
    solver, order, reference = SOLVERS[solver_case]

    pas_sampler = nodes.PASSampler.execute(solver, order, "none").result[0]
    actual = sample_custom(model, pas_sampler, sigmas, latent, conditioning)
    expected = sample_custom(model, reference(), sigmas, latent, conditioning)

    assert_same_samples(actual, expected)
    # The solvers differ from each other on this model, so the comparison above can tell them apart.
    other = sample_custom(model, comfy.samplers.sampler_object("ipndm" if solver == "euler" else "euler"),
                          sigmas, latent, conditioning)
    assert (other - expected).abs().max() > 1e-3 * expected.abs().max()


@pytest.mark.parametrize("grid", list(GRIDS))
@pytest.mark.parametrize("solver_case", list(EVERY_SOLVER))
def test_every_solver_matches_comfyui(nodes, tiny_models, model_kind, conditioning, solver_case, grid):
    """EPS, v-prediction and flow models; grids with and without the trailing 0; 4-8 steps."""
    model = tiny_models(model_kind)
    latent = {"samples": torch.zeros(2, 4, 8, 12)}
    scheduler, steps, keep_zero = GRIDS[grid]
    sigmas = ncs.BasicScheduler.execute(model, scheduler, steps, 1.0).result[0]
    sigmas = sigmas if keep_zero else sigmas[:-1]
    solver, order, comfy_name, comfy_options = EVERY_SOLVER[solver_case]

    actual = sample_custom(model, nodes.PASSampler.execute(solver, order, "none").result[0], sigmas, latent,
                           conditioning)
    expected = sample_custom(model, comfy.samplers.ksampler(comfy_name, comfy_options), sigmas.clone(), latent,
                             conditioning)
    assert_same_samples(actual, expected)
    if solver != "euler":  # the comparison can tell the solver apart from plain euler
        euler = sample_custom(model, comfy.samplers.sampler_object("euler"), sigmas, latent, conditioning)
        assert (euler - expected).abs().max() > 1e-4 * expected.abs().max()


def test_uncorrected_matches_comfyui_advanced(nodes, tiny_models, conditioning):
    """The same through SamplerCustomAdvanced (NOISE + GUIDER inputs), flow model, non-square latent."""
    model = tiny_models("flow")
    latent = {"samples": torch.zeros(2, 4, 12, 8)}
    sigmas = ncs.BasicScheduler.execute(model, "simple", 6, 1.0).result[0]
    noise = ncs.RandomNoise.execute(11).result[0]
    guider = ncs.CFGGuider.execute(model, conditioning[0], conditioning[1], CFG).result[0]

    def run(sampler):
        return ncs.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas, latent).result[0]["samples"]

    actual = run(nodes.PASSampler.execute("ipndm", 4, "none").result[0])
    assert_same_samples(actual, run(comfy.samplers.sampler_object("ipndm")))


def test_node_schema(nodes):
    """Stable ids, the category, and a tooltip on every input."""
    ids = {}
    for node in nodes.NODES:
        schema = node.define_schema()
        ids[schema.node_id] = schema.display_name
        assert schema.category == nodes.CATEGORY and nodes.CATEGORY.endswith("/pas")
        for item in schema.inputs:
            assert item.tooltip, f"{schema.node_id}.{item.id} has no tooltip"
    assert ids == {"PAS_Sampler": "PAS Sampler", "PAS_Trainer": "PAS Trainer",
                   "PAS_LoadCoordinates": "PAS Load Coordinates", "PAS_CoordinatesText": "PAS Coordinates (text)"}


@pytest.mark.parametrize("solver_case", ["euler", "dpmpp_2m"])
def test_time_offsets_ask_the_model_at_the_shifted_sigmas_like_comfyuis_solver_on_a_shifted_model(
        nodes, tiny_models, model_kind, conditioning, solver_case):
    """Coordinates with time offsets only, wired in as PAS_COORDS: the reference is ComfyUI's own sampler
    function whose model is asked at sigma_i * exp(d_i) at step i."""
    from comfy.k_diffusion import sampling as k_sampling

    from comfyui_pas import PASCoordinates

    model = tiny_models(model_kind)
    latent = {"samples": torch.zeros(2, 4, 8, 12)}
    sigmas = ncs.BasicScheduler.execute(model, "karras", 5, 1.0).result[0]
    offsets = torch.tensor([0.1, -0.4, -0.2, 0.15, 0.0], dtype=torch.float64)
    coords = PASCoordinates(sigmas, solver_case, None, 3, [], torch.zeros(0, 3), "relative", log_offsets=offsets)
    actual = sample_custom(model, nodes.PASSampler.execute(solver_case, 0, "none", pas_coords=coords).result[0],
                           sigmas, latent, conditioning)

    def shifted_reference(inner, x, grid, extra_args=None, callback=None, disable=None):
        def shifted(points, sigma, **kwargs):
            index = int((grid[:-1] - sigma[0]).abs().argmin())
            return inner(points, sigma * float(offsets[index].exp()), **kwargs)

        function = {"euler": k_sampling.sample_euler, "dpmpp_2m": k_sampling.sample_dpmpp_2m}[solver_case]
        return function(shifted, x, grid, extra_args=extra_args, disable=True)

    expected = sample_custom(model, comfy.samplers.KSAMPLER(shifted_reference), sigmas.clone(), latent, conditioning)
    assert_same_samples(actual, expected)
    plain = sample_custom(model, nodes.PASSampler.execute(solver_case, 0, "none").result[0], sigmas, latent,
                          conditioning)
    assert (plain - expected).abs().max() > 1e-3 * expected.abs().max()  # the offsets change the samples
