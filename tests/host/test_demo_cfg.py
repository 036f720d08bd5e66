"""The class-conditional demo model under CFG, through ComfyUI's own nodes and samplers.

References are computed outside ComfyUI: demo_model's EDMDenoiser called once with the class label and
once unconditionally, combined by hand as uncond + w (cond - uncond), integrated by a hand Euler loop or
by k-diffusion's own solver functions.
"""
from __future__ import annotations

import comfy.sample
import comfy.samplers
import pytest
import torch
from comfy.k_diffusion import sampling as k_sampling
from comfy_extras import nodes_custom_sampler as ncs

from comfyui_pas.coords import PASCoordinates
from comfyui_pas.denoiser import Denoiser
from comfyui_pas.teacher import teacher_states

COND_WEIGHTS = "fashion_mnist_edm_cond.safetensors"
UNCOND_WEIGHTS = "fashion_mnist_edm.safetensors"
CFG = 3.5
SNEAKER, BAG = 7, 8


@pytest.fixture(scope="module")
def cond_demo(demo_nodes):
    """(model, unconditional conditioning, clip) of the default (conditional) weights."""
    return demo_nodes.PASDemoModel.execute(COND_WEIGHTS).result


@pytest.fixture(scope="module")
def reference():
    from demo_model import CONDITIONAL_WEIGHTS, load_demo_model

    return load_demo_model(CONDITIONAL_WEIGHTS)


def prompt(demo_nodes, text):
    return demo_nodes.PASDemoPrompt.execute(text).result[0]


def hand_cfg(reference, label, cfg):
    """D(x, sigma) = uncond + cfg (cond - uncond), each from its own EDMDenoiser call."""
    def denoise(x, sigma, **_):
        cond = reference(x, sigma, class_labels=torch.tensor(label))
        uncond = reference(x, sigma, class_labels=torch.tensor(-1))
        return uncond + cfg * (cond - uncond)
    return denoise


def hand_euler(denoise, x, sigmas):
    for sigma, following in zip(sigmas[:-1], sigmas[1:], strict=True):
        denoised = denoise(x, sigma.expand(x.shape[0]))
        x = x + (x - denoised) / sigma * (following - sigma)
    return x


def start_noise(latent, seed, sigmas):
    """ComfyUI's seeded noise, scaled as EPS.noise_scaling does from sigma_max."""
    return comfy.sample.prepare_noise(latent, seed) * (1.0 + sigmas[0] ** 2).sqrt()


def karras(model, steps):
    return ncs.BasicScheduler.execute(model, "karras", steps, 1.0).result[0]


def test_default_weights_are_conditional(demo_nodes, cond_demo):
    schema = demo_nodes.PASDemoModel.define_schema()
    assert schema.inputs[0].default == COND_WEIGHTS
    assert cond_demo[0].model.num_classes == 10


def test_prompt_node_reads_names_and_indices(demo_nodes):
    key = demo_nodes.CLASS_KEY
    assert prompt(demo_nodes, "Sneaker")[0][1][key] == SNEAKER
    assert prompt(demo_nodes, "  bag ")[0][1][key] == BAG
    assert prompt(demo_nodes, "9")[0][1][key] == 9
    assert prompt(demo_nodes, "")[0][1][key] == -1
    with pytest.raises(ValueError, match=r"PAS Demo Prompt: unknown Fashion-MNIST class 'Sneakr'.*7 Sneaker"):
        prompt(demo_nodes, "Sneakr")


def test_ksampler_cfg_equals_hand_cfg_euler(demo_nodes, host_nodes, cond_demo, reference):
    model, _, _ = cond_demo
    latent = demo_nodes.PASDemoLatent.execute(3).result[0]
    ours = host_nodes.KSampler().sample(model, 11, 5, CFG, "euler", "karras", prompt(demo_nodes, "Sneaker"),
                                        prompt(demo_nodes, ""), latent)[0]["samples"]
    sigmas = karras(model, 5)
    x = start_noise(latent["samples"], 11, sigmas)
    expected = hand_euler(hand_cfg(reference, SNEAKER, CFG), x, sigmas)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)
    unguided = hand_euler(hand_cfg(reference, SNEAKER, 1.0), x, sigmas)
    assert (ours - unguided).abs().max() > 1e-2  # the guidance scale is applied, not dropped


def test_cfgguider_samplercustomadvanced_with_clip_text_encode(demo_nodes, host_nodes, cond_demo, reference):
    """CLIPTextEncode on the model's class-name encoder, CFGGuider, dpmpp_2m: k-diffusion's own dpmpp_2m on
    the hand-combined denoiser."""
    model, _, clip = cond_demo
    positive = host_nodes.CLIPTextEncode().encode(clip, "Bag")[0]
    negative = host_nodes.CLIPTextEncode().encode(clip, "")[0]
    latent = demo_nodes.PASDemoLatent.execute(2).result[0]
    sigmas = karras(model, 6)
    guider = ncs.CFGGuider.execute(model, positive, negative, 4.0).result[0]
    noise = ncs.RandomNoise.execute(5).result[0]
    sampler = ncs.KSamplerSelect.execute("dpmpp_2m").result[0]
    ours = ncs.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas, latent).result[0]["samples"]
    x = start_noise(latent["samples"], 5, sigmas)
    expected = k_sampling.sample_dpmpp_2m(hand_cfg(reference, BAG, 4.0), x, sigmas, disable=True)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)


def test_samplercustom_cfg_and_empty_prompt(demo_nodes, cond_demo, reference):
    """SamplerCustom at CFG 2.5; the empty prompt at CFG 1 is the unconditional branch (label -1), the same as
    the model node's own conditioning output."""
    model, unconditional, _ = cond_demo
    latent = demo_nodes.PASDemoLatent.execute(2).result[0]
    sigmas = karras(model, 4)
    euler = comfy.samplers.sampler_object("euler")

    def sample(positive, negative, cfg):
        return ncs.SamplerCustom.execute(model, True, 3, cfg, positive, negative, euler, sigmas,
                                         latent).result[0]["samples"]

    x = start_noise(latent["samples"], 3, sigmas)
    guided = sample(prompt(demo_nodes, "Trouser"), unconditional, 2.5)
    torch.testing.assert_close(guided, hand_euler(hand_cfg(reference, 1, 2.5), x, sigmas), rtol=1e-4, atol=1e-4)
    empty = sample(prompt(demo_nodes, ""), prompt(demo_nodes, ""), 1.0)
    expected = hand_euler(lambda x, s: reference(x, s, class_labels=torch.tensor(-1)), x, sigmas)
    torch.testing.assert_close(empty, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(sample(unconditional, unconditional, 1.0), empty)
    assert (empty - guided).abs().max() > 1e-2


def test_cond_and_uncond_rows_share_one_model_call(demo_nodes, cond_demo):
    """ComfyUI batches the positive and negative rows into one call, each row with its own label."""
    model, _, _ = cond_demo
    calls = []

    def record(apply_model, args):
        calls.append((args["input"].shape[0], args["c"]["class_labels"].tolist()))
        return apply_model(args["input"], args["timestep"], **args["c"])

    patched = model.clone()
    patched.set_model_unet_function_wrapper(record)
    latent = demo_nodes.PASDemoLatent.execute(2).result[0]
    ncs.SamplerCustom.execute(patched, True, 1, CFG, prompt(demo_nodes, "Coat"), prompt(demo_nodes, ""),
                              comfy.samplers.sampler_object("euler"), karras(model, 3), latent)
    assert len(calls) == 3
    for rows, labels in calls:
        assert rows == 4 and sorted(labels) == [-1, -1, 4, 4]


def test_clip_text_encode_refuses_unknown_class(host_nodes, cond_demo):
    with pytest.raises(ValueError, match=r"PAS demo text encoder: unknown Fashion-MNIST class 'cat'.*"
                                         r"0 T-shirt/top, 1 Trouser.*9 Ankle boot"):
        host_nodes.CLIPTextEncode().encode(cond_demo[2], "cat")


def test_unconditional_weights_take_empty_prompts_and_refuse_classes(demo_nodes, host_nodes):
    model, unconditional, clip = demo_nodes.PASDemoModel.execute(UNCOND_WEIGHTS).result
    assert model.model.num_classes == 0
    latent = demo_nodes.PASDemoLatent.execute(1).result[0]
    empty = host_nodes.CLIPTextEncode().encode(clip, "")[0]
    out = host_nodes.KSampler().sample(model, 2, 3, 1.0, "euler", "karras", empty, unconditional, latent)[0]
    assert out["samples"].abs().mean() > 0.3
    with pytest.raises(ValueError, match="unconditional demo model takes no class prompt"):
        host_nodes.CLIPTextEncode().encode(clip, "Sneaker")
    with pytest.raises(ValueError, match=r"PAS Demo Model: fashion_mnist_edm.safetensors is the unconditional "
                                         r"model and takes no class prompt \(got 'Sneaker'\)"):
        host_nodes.KSampler().sample(model, 2, 3, 3.0, "euler", "karras", prompt(demo_nodes, "Sneaker"),
                                     unconditional, latent)


def test_trainer_prompt_rows_follow_their_class(nodes, bridge, demo_nodes, cond_demo, reference):
    """The Trainer's prompt list, encoded as the Trainer encodes it: trajectory j is guided by class j % 2, and
    its teacher matches the hand CFG."""
    model, unconditional, clip = cond_demo
    positives = [nodes.encode(clip, "Sneaker"), nodes.encode(clip, "Bag")]
    latent = demo_nodes.PASDemoLatent.execute(1).result[0]
    sigmas = karras(model, 3)

    def teacher(denoiser, x, sigmas, **model_args):
        return teacher_states(Denoiser(denoiser, **model_args), x, sigmas, teacher_nfe=6)[0], x

    states, x = bridge.run_with_model(model, positives, unconditional, CFG, latent, sigmas, 4, 8, teacher,
                                      chunk_size=3)
    for index, label in enumerate((SNEAKER, BAG)):
        expected = teacher_states(hand_cfg(reference, label, CFG), x[index::2], sigmas, teacher_nfe=6)[0]
        torch.testing.assert_close(states[:, index::2], expected, rtol=1e-4, atol=1e-4)


def test_trainer_node_with_class_prompt_list(nodes, pas_dir, demo_nodes, cond_demo):
    model, unconditional, clip = cond_demo
    latent = demo_nodes.PASDemoLatent.execute(1).result[0]

    def train(prefix, prompts):
        return nodes.PASTrainer.execute(model, unconditional, unconditional, CFG, latent, karras(model, 3),
                                        "euler", 0, 4, 0, 6, 2, "l1", 0.01, prefix, clip, prompts)

    with pytest.raises(ValueError, match=r"unknown Fashion-MNIST class 'Sneakr'.*7 Sneaker"):
        train("demo_cfg/bad", "Sneaker\nSneakr")
    assert not (pas_dir / "demo_cfg").exists() or not list((pas_dir / "demo_cfg").glob("bad_*"))
    train("demo_cfg/classes", "Sneaker\n\n  Bag \n")
    saved = PASCoordinates.load(pas_dir / "demo_cfg" / "classes_00001.safetensors")
    assert saved.metadata["prompts"] == ["Sneaker", "Bag"]
    assert saved.metadata["cfg"] == CFG
