"""Coordinates that travel with the workflow, img2img grids and model checks, in the real ComfyUI.

* the trainer's text output in a PAS Coordinates (text) node samples bit-for-bit as the file does, also
  after the file is gone;
* grid 'scheduler' with denoise 0.5 trains exactly the grids BasicScheduler gives with denoise 0.5;
* an uncovered grid stops the queue (default) or samples with the plain solver and a warning;
* another model fingerprint warns, another model type or latent channel count is refused naming both;
* a tiny Flux-style model (guidance in the conditioning, cfg 1) through the trainer and the sampler.
"""
from __future__ import annotations

import logging

import comfy.latent_formats
import comfy.samplers
import node_helpers
import pytest
import torch
from comfy_extras import nodes_custom_sampler as ncs
from pas_test_pack import tiny

from comfyui_pas.coords import PASCoordinates
from comfyui_pas.denoiser import Denoiser
from comfyui_pas.teacher import teacher_states

CFG = 3.0
STEPS = 5
PLAIN = "plain solver + warning"


def karras(model, steps=STEPS, denoise=1.0, scheduler="karras"):
    return ncs.BasicScheduler.execute(model, scheduler, steps, denoise).result[0]


def train(nodes, model, conditioning, prefix, sigmas=None, cfg=CFG, latent=None, **options):
    positive, negative = conditioning
    latent = latent or {"samples": torch.zeros(1, 4, 8, 8)}
    settings = dict(solver="euler", max_order=0, trajectories=8, seed=5, teacher_nfe=16, n_basis=2, loss="l1",
                    tolerance=0.0, filename_prefix=prefix)
    settings.update(options)
    return nodes.PASTrainer.execute(model, positive, negative, cfg, latent, sigmas, **settings)


def sample(model, sampler, sigmas, conditioning, cfg=CFG, latent=None, seed=3):
    latent = latent or {"samples": torch.zeros(1, 4, 8, 8)}
    positive, negative = conditioning
    return ncs.SamplerCustom.execute(model, True, seed, cfg, positive, negative, sampler, sigmas, latent).result[0]["samples"]


@pytest.fixture(scope="module")
def model(tiny_models):
    """The tiny EPS model most tests train and sample."""
    return tiny_models("eps")


@pytest.fixture(scope="module")
def trained(nodes, pas_dir, model, conditioning):
    """(coords, text, file name): one training on the EPS model, karras 5 steps."""
    out = train(nodes, model, conditioning, "travel", sigmas=karras(model))
    coords, _, _, text = out.result
    assert coords.steps, "no step was corrected on this model; the tests below could not tell PAS apart"
    return coords, text, "travel_00001.safetensors"


def test_text_node_samples_bit_for_bit_as_the_file_also_without_it(nodes, pas_dir, trained, model, conditioning):
    coords, text, name = trained
    sigmas = karras(model)
    from_file = sample(model, nodes.PASSampler.execute("euler", 0, name).result[0], sigmas, conditioning)
    plain = sample(model, nodes.PASSampler.execute("euler", 0, "none").result[0], sigmas, conditioning)
    assert (from_file - plain).abs().max() > 1e-4 * plain.abs().max()
    saved = (pas_dir / name).read_bytes()
    (pas_dir / name).unlink()
    try:
        text_coords, text_sigmas = nodes.PASCoordinatesText.execute(text).result
        from_text = sample(model, nodes.PASSampler.execute("euler", 0, "none", text_coords).result[0], text_sigmas,
                           conditioning)
    finally:
        (pas_dir / name).write_bytes(saved)
    assert torch.equal(text_sigmas, sigmas)
    assert torch.equal(from_text, from_file)


def test_loader_text_output_equals_the_trainers(nodes, trained):
    _, text, name = trained
    assert nodes.PASLoadCoordinates.execute(name).result[2] == text
    assert PASCoordinates.from_text(text).metadata["model_fingerprint"].startswith("w16:")


@pytest.mark.parametrize("text", ["", "PAS_00001.safetensors", "comfyui-pas-coordinates v2 0000 {}"])
def test_text_node_refuses_bad_text_naming_itself(nodes, text):
    with pytest.raises(ValueError, match=r"^PAS Coordinates \(text\): "):
        nodes.PASCoordinatesText.execute(text)


@pytest.mark.parametrize("scheduler", ["karras", "normal"])
def test_scheduler_mode_with_denoise_trains_basic_schedulers_grids(nodes, pas_dir, model, conditioning, scheduler):
    latent = {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))}
    prefix = f"img2img/{scheduler}"
    out = train(nodes, model, conditioning, prefix, latent=latent, trajectories=4, teacher_nfe=8, grid="scheduler",
                scheduler=scheduler, steps="3-5", denoise=0.5)
    loaded = PASCoordinates.load(pas_dir / f"{prefix}_00001.safetensors")
    assert loaded.step_counts == [3, 4, 5] and loaded.metadata["denoise"] == 0.5
    for grid in loaded.grids:
        reference = karras(model, grid.n_steps, 0.5, scheduler)  # ComfyUI's BasicScheduler, denoise 0.5
        assert torch.equal(grid.sigmas.float(), reference)
        assert float(grid.sigmas[0]) < float(karras(model, grid.n_steps, 1.0, scheduler)[0])
    sampler = nodes.PASSampler.execute("euler", 0, "none", out.result[0]).result[0]
    assert torch.isfinite(sample(model, sampler, karras(model, 4, 0.5, scheduler), conditioning, latent=latent)).all()
    with pytest.raises(ValueError, match=rf"covers 3, 4, 5 steps \({scheduler}, denoise 0.5\)"):
        sample(model, sampler, karras(model, 4, 1.0, scheduler), conditioning)


def test_denoise_is_refused_outside_grid_scheduler(nodes, model, conditioning):
    with pytest.raises(ValueError, match="grid 'scheduler' only"):
        train(nodes, model, conditioning, "nodenoise", sigmas=karras(model), denoise=0.5)


def test_uncovered_grid_is_an_error_by_default(nodes, trained, model, conditioning):
    _, _, name = trained
    with pytest.raises(ValueError, match=rf"PAS Sampler \({name}\): .*covers 5 steps"):
        sample(model, nodes.PASSampler.execute("euler", 0, name).result[0], karras(model, 7), conditioning)


def test_uncovered_grid_can_sample_with_the_plain_solver_and_a_warning(nodes, trained, model, conditioning, caplog):
    _, _, name = trained
    sigmas = karras(model, 7)
    with caplog.at_level(logging.WARNING, logger="comfyui_pas"):
        fallback = sample(model, nodes.PASSampler.execute("euler", 0, name, None, PLAIN).result[0], sigmas, conditioning)
    plain = sample(model, nodes.PASSampler.execute("euler", 0, "none").result[0], sigmas, conditioning)
    assert torch.equal(fallback, plain)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("sampled with plain euler (no PAS)" in w and "covers 5 steps" in w and name in w for w in warnings)
    # on a covered grid the same setting still corrects
    corrected = sample(model, nodes.PASSampler.execute("euler", 0, name, None, PLAIN).result[0], karras(model),
                       conditioning)
    assert not torch.equal(corrected, sample(model, nodes.PASSampler.execute("euler", 0, "none").result[0],
                                             karras(model), conditioning))


def test_fingerprint_is_of_the_base_weights_and_kept_per_loaded_model(bridge, model):
    first = bridge.model_fingerprint(model)
    assert first == bridge.model_fingerprint(tiny.make_model("eps"))  # the same weights, loaded again
    assert first != bridge.model_fingerprint(tiny.make_model("eps", seed=999))  # a "fine-tune"
    patched = model.clone()
    key = "diffusion_model.out.2.weight"
    patched.add_patches({key: (torch.full_like(model.model.state_dict()[key], 0.05),)}, 1.0)
    fresh = tiny.make_model("eps")
    fresh_patched = fresh.clone()
    fresh_patched.add_patches({key: (torch.full_like(fresh.model.state_dict()[key], 0.05),)}, 1.0)
    fresh_patched.patch_model()  # ComfyUI patches the weights in place when it loads a model
    try:
        assert bridge.model_fingerprint(fresh_patched) == first  # the original weights, from ComfyUI's backup
    finally:
        fresh_patched.unpatch_model()
    assert bridge.model_fingerprint(patched) == first and fresh.model._pas_fingerprint == first


def test_another_fingerprint_samples_with_a_warning(nodes, trained, conditioning, caplog):
    coords, _, name = trained
    other = tiny.make_model("eps", seed=999)
    sigmas = karras(other)
    with caplog.at_level(logging.WARNING, logger="comfyui_pas"):
        corrected = sample(other, nodes.PASSampler.execute("euler", 0, name).result[0], sigmas, conditioning)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("trained on another model" in w and coords.metadata["model_fingerprint"] in w for w in warnings)
    plain = sample(other, nodes.PASSampler.execute("euler", 0, "none").result[0], sigmas, conditioning)
    assert not torch.equal(corrected, plain)  # it still corrects


def test_another_model_type_is_refused_naming_both(nodes, trained, tiny_models, conditioning):
    _, _, name = trained
    model = tiny_models("flow")
    with pytest.raises(ValueError, match=r"model type EPS \(SD15\).*has model type FLOW \(SD15\)"):
        sample(model, nodes.PASSampler.execute("euler", 0, name).result[0], karras(model), conditioning)


def test_another_latent_channel_count_is_refused_naming_both(nodes, trained, conditioning):
    _, _, name = trained
    config = dict(tiny.TINY_UNET, in_channels=16, out_channels=16)
    model = tiny.make_model("eps", unet_config=config, latent_format=comfy.latent_formats.SD3())
    latent = {"samples": torch.zeros(1, 16, 8, 8)}
    with pytest.raises(ValueError, match="latent channel count 4 .*latent channel count 16"):
        sample(model, nodes.PASSampler.execute("euler", 0, name).result[0], karras(model), conditioning, latent=latent)


# ---- a guidance-distilled flow model -------------------------------------------------------------------
@pytest.fixture(scope="module")
def flux():
    return tiny.make_flux()


def flux_conditioning(guidance):
    """What a Flux workflow feeds the sampler: the text encoding with a guidance value set as ComfyUI's
    FluxGuidance node sets it (its module cannot be imported here: `nodes` is this pack's nodes.py)."""
    encoded = tiny.flux_conditioning(11, guidance=None)
    return node_helpers.conditioning_set_values(encoded, {"guidance": guidance})


FLUX_LATENT = {"samples": torch.zeros(1, 16, 8, 8)}


def test_flux_teacher_is_comfyuis_guided_model_at_cfg_1(bridge, flux):
    """The trainer's denoiser at cfg 1 is ComfyUI's: its Heun teacher ends where ComfyUI's heun does on the
    same grid, and the guidance value in the conditioning changes it."""
    sigmas = karras(flux, 3, scheduler="simple")

    def teacher(denoiser, x, sigmas, **model_args):
        return teacher_states(Denoiser(denoiser, **model_args), x, sigmas, substeps=1)[0][-1]

    def end(guidance):
        positive = flux_conditioning(guidance)
        return bridge.run_with_model(flux, [positive], positive, 1.0, FLUX_LATENT, sigmas, 2, 13, teacher)

    from comfyui_pas.grids import refine_sigmas

    positive = flux_conditioning(3.5)
    reference = ncs.SamplerCustom.execute(flux, True, 13, 1.0, positive, positive, comfy.samplers.sampler_object("heun"),
                                          refine_sigmas(sigmas, 1), {"samples": torch.zeros(2, 16, 8, 8)}).result[0]
    reference = flux.model.process_latent_in(reference["samples"])
    guided = end(3.5)
    torch.testing.assert_close(guided, reference, rtol=1e-4, atol=1e-4 * reference.abs().max().item())
    assert (end(1.0) - guided).abs().max() > 1e-3 * reference.abs().max()


def test_flux_trains_and_samples_with_guidance_at_cfg_1(nodes, pas_dir, flux):
    positive = flux_conditioning(3.5)
    sigmas = karras(flux, 4, scheduler="simple")
    out = train(nodes, flux, (positive, positive), "flux/tiny", sigmas=sigmas, cfg=1.0, latent=FLUX_LATENT,
                solver="dpmpp_2m")
    coords, _, trained_sigmas, text = out.result
    loaded = PASCoordinates.load(pas_dir / "flux" / "tiny_00001.safetensors")
    assert (loaded.metadata["model_type"], loaded.metadata["latent_channels"], loaded.metadata["model_class"]) == \
        ("FLUX", 16, "Flux")
    assert torch.equal(trained_sigmas, sigmas)
    assert coords.steps, "no step was corrected on the Flux-style model"
    text_coords, text_sigmas = nodes.PASCoordinatesText.execute(text).result
    corrected = sample(flux, nodes.PASSampler.execute("dpmpp_2m", 0, "none", text_coords).result[0], text_sigmas,
                       (positive, positive), cfg=1.0, latent=FLUX_LATENT)
    plain_pas = sample(flux, nodes.PASSampler.execute("dpmpp_2m", 0, "none").result[0], sigmas, (positive, positive),
                       cfg=1.0, latent=FLUX_LATENT)
    comfy_own = sample(flux, comfy.samplers.sampler_object("dpmpp_2m"), sigmas, (positive, positive), cfg=1.0,
                       latent=FLUX_LATENT)
    torch.testing.assert_close(plain_pas, comfy_own, rtol=1e-5, atol=1e-5 * comfy_own.abs().max().item())
    assert torch.isfinite(corrected).all()
    assert (corrected - plain_pas).abs().max() > 1e-4 * plain_pas.abs().max()


def test_prompt_list_keeps_the_positives_flux_guidance(nodes):
    """With a CLIP and a prompt list, each prompt is encoded anew; the guidance set on 'positive' stays."""
    clip = tiny.make_clip()
    guided = nodes.encode(clip, "a red fox", flux_conditioning(2.5))
    assert [extra["guidance"] for _, extra in guided] == [2.5]
    assert "guidance" not in nodes.encode(clip, "a red fox", tiny.random_conditioning(1))[0][1]
