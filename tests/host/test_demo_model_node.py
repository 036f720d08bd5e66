"""The PAS Demo Model node is a real ComfyUI MODEL whose EDM preconditioning is applied exactly once.

Reference: demo_model's EDMDenoiser (the network with its own preconditioning) sampled by the
library's sample_pas; under test: ComfyUI's own `euler` sampler through SamplerCustom on the node's MODEL.
"""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def demo(demo_nodes):
    from comfy_extras import nodes_custom_sampler as ncs

    model, conditioning, _ = demo_nodes.PASDemoModel.execute("fashion_mnist_edm.safetensors").result
    return demo_nodes, ncs, model, conditioning


@pytest.fixture(scope="module")
def reference_denoiser():
    from demo_model import load_demo_model

    return load_demo_model()


def test_model_sampling_is_edm_with_the_demo_models_sigmas(demo):
    demo_nodes, _, model, _ = demo
    import comfy.model_base

    sampling = model.get_model_object("model_sampling")
    assert model.model.model_type == comfy.model_base.ModelType.EDM
    assert float(sampling.sigma_min) == pytest.approx(0.002)
    assert float(sampling.sigma_max) == pytest.approx(80.0)
    assert sampling.sigma_data == 0.5
    assert model.model.latent_format.latent_channels == 1


def test_apply_model_equals_the_edm_denoiser(demo, reference_denoiser):
    """One model call: ComfyUI's c_in / timestep / c_skip, c_out around F equal EDMDenoiser.forward."""
    _, _, model, _ = demo
    x = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(5)) * 4.0
    sigma = torch.tensor([25.0, 1.3, 0.04])
    with torch.inference_mode():
        ours = model.model.apply_model(x, sigma, c_crossattn=torch.zeros(3, 1, 1))
        reference = reference_denoiser(x, sigma)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    # The preconditioning matters: applying it twice (or not at all) would be far off.
    assert (ours - x).abs().mean() > 0.1


def test_samplercustom_euler_equals_sample_pas_on_the_denoiser(demo, reference_denoiser):
    demo_nodes, ncs, model, conditioning = demo
    import comfy.sample
    import comfy.samplers

    from comfyui_pas import edm_sigmas, sample_pas

    latent = demo_nodes.PASDemoLatent.execute(4).result[0]
    assert latent["samples"].shape == (4, 1, 32, 32)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "karras", 5).cpu()
    torch.testing.assert_close(sigmas, edm_sigmas(5, 0.002, 80.0, append_zero=True).float())
    seed = 42
    with torch.inference_mode():
        ours = ncs.SamplerCustom.execute(model, True, seed, 1.0, conditioning, conditioning,
                                         comfy.samplers.sampler_object("euler"), sigmas, latent).result[0]
        noise = comfy.sample.prepare_noise(latent["samples"], seed)
        # ComfyUI scales the first noise by sqrt(1 + sigma_max^2) when sampling from sigma_max (EPS.noise_scaling).
        x = noise * (1.0 + sigmas[0] ** 2).sqrt()
        reference = sample_pas(reference_denoiser, x, sigmas, solver="euler")
    torch.testing.assert_close(ours["samples"], reference, rtol=1e-4, atol=1e-4)
    assert ours["samples"].abs().mean() > 0.3  # real images in [-1, 1], not zeros


def test_decode_crops_scales_and_makes_rgb(demo_nodes):
    x = torch.full((2, 1, 32, 32), -1.0)
    x[:, :, 2:30, 2:30] = torch.linspace(-1.0, 1.0, 28).view(1, 1, 1, 28)
    image = demo_nodes.PASDemoDecode.execute({"samples": x}, 2).result[0]
    assert image.shape == (2, 56, 56, 3)
    assert float(image.min()) == 0.0 and float(image.max()) == 1.0
    torch.testing.assert_close(image[..., 0], image[..., 2])
    torch.testing.assert_close(image[0, 0, ::2, 0], torch.linspace(0.0, 1.0, 28))
    with pytest.raises(ValueError, match="PAS Demo Model latents"):
        demo_nodes.PASDemoDecode.execute({"samples": torch.zeros(1, 4, 8, 8)}, 1)


def test_nodes_have_prefixed_ids_category_and_tooltips(demo_nodes):
    for node in demo_nodes.DEMO_NODES:
        schema = node.define_schema()
        assert schema.node_id.startswith("PAS_Demo")
        assert schema.category.endswith("/demo")
        assert schema.description
        for item in schema.inputs:
            assert item.tooltip, f"{schema.node_id}.{item.id} has no tooltip"
