"""PAS Trainer inside the real ComfyUI: file -> dropdown -> sampler, sigma checks, interrupts, prompt lists."""
from __future__ import annotations

import comfy.model_management
import comfy.samplers
import comfy.utils
import pytest
import torch
from comfy_extras import nodes_custom_sampler as ncs
from pas_test_pack import tiny

from comfyui_pas.coords import PASCoordinates
from comfyui_pas.grids import refine_sigmas
from comfyui_pas.settings import ACCEPTANCE_RULES, DEFAULT_RULE, default_rule
from comfyui_pas.teacher import Denoiser, teacher_states

CFG = 3.0
STEPS = 5
TRAINING = dict(solver="euler", max_order=3, trajectories=8, seed=5, teacher_nfe=16, n_basis=2, loss="l1",
                tolerance=0.01)


def karras(model, steps=STEPS, denoise=1.0):
    return ncs.BasicScheduler.execute(model, "karras", steps, denoise).result[0]


def train_node(nodes, model, conditioning, sigmas, prefix, **overrides):
    options = dict(TRAINING, **overrides)
    positive, negative = conditioning
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    return nodes.PASTrainer.execute(model, positive, negative, CFG, latent, sigmas, options["solver"],
                                    options["max_order"], options["trajectories"], options["seed"],
                                    options["teacher_nfe"], options["n_basis"], options["loss"],
                                    options["tolerance"], prefix, options.get("clip"), options.get("prompts", ""),
                                    **{key: options[key] for key in ("rule", "time_offsets") if key in options})


@pytest.fixture(scope="module")
def trained(nodes, pas_dir, tiny_models, conditioning):
    """One training run on the EPS model, karras 5 steps: (node output, file name, sigmas)."""
    model = tiny_models("eps")
    sigmas = karras(model)
    before = set(p.name for p in pas_dir.glob("*.safetensors"))
    out = train_node(nodes, model, conditioning, sigmas, "trained")
    new = set(p.name for p in pas_dir.glob("*.safetensors")) - before
    assert new == {"trained_00001.safetensors"}
    return out, "trained_00001.safetensors", sigmas


def sample(model, sampler, sigmas, conditioning, seed=3):
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    out = ncs.SamplerCustom.execute(model, True, seed, CFG, conditioning[0], conditioning[1], sampler, sigmas, latent)
    return out.result[0]["samples"]


def test_trained_file_is_listed_and_complete(nodes, trained, pas_dir):
    out, name, sigmas = trained
    coords = out.result[0]
    assert name in nodes.coordinate_choices()
    schema = nodes.PASSampler.define_schema()
    assert name in next(i for i in schema.inputs if i.id == "coordinates").options
    loaded = PASCoordinates.load(pas_dir / name)
    torch.testing.assert_close(loaded.sigmas, sigmas.double())
    assert loaded.steps == coords.steps and loaded.solver == "euler"
    torch.testing.assert_close(loaded.coordinates, coords.coordinates)
    assert loaded.metadata["cfg"] == CFG
    assert loaded.metadata["model_type"] == "EPS"
    assert loaded.metadata["n_trajectories"] == TRAINING["trajectories"]
    assert loaded.metadata["rule"] == default_rule("euler", CFG) == "paper"  # auto: euler under CFG >= 3
    image = out.result[1]
    assert image.ndim == 4 and image.shape[0] == 1 and image.shape[-1] == 3
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert name in out.ui.as_dict()["text"][0]


@pytest.mark.parametrize("rule", sorted(set(ACCEPTANCE_RULES) - {DEFAULT_RULE}))
def test_rule_option_sets_the_acceptance_rule(nodes, pas_dir, tiny_models, conditioning, rule):
    model = tiny_models("eps")
    coords = train_node(nodes, model, conditioning, karras(model), f"rule_{rule}", rule=rule).result[0]
    for key, value in dict(ACCEPTANCE_RULES[rule], rule=rule).items():
        assert coords.metadata[key] == value
    held_out = 0 if ACCEPTANCE_RULES[rule]["guard"] == "none" else TRAINING["trajectories"] // 4
    assert coords.metadata["n_validation"] == held_out


def test_trained_file_corrects_sampling_on_its_sigmas(nodes, trained, tiny_models, conditioning):
    out, name, sigmas = trained
    coords = out.result[0]
    assert coords.steps, "the search accepted no step on this model; the test cannot tell correction apart"
    model = tiny_models("eps")
    corrected = sample(model, nodes.PASSampler.execute("euler", 3, name).result[0], sigmas, conditioning)
    plain = sample(model, comfy.samplers.sampler_object("euler"), sigmas, conditioning)
    assert (corrected - plain).abs().max() > 1e-4 * plain.abs().max()
    # The file from the dropdown and the node's PAS_COORDS output give the same result.
    direct = sample(model, nodes.PASSampler.execute("euler", 3, "none", coords).result[0], sigmas, conditioning)
    torch.testing.assert_close(corrected, direct)


def test_time_offsets_option_trains_saves_and_samples_them(nodes, pas_dir, tiny_models, conditioning):
    model = tiny_models("eps")
    sigmas = karras(model)
    out = train_node(nodes, model, conditioning, sigmas, "offsets", time_offsets=True)
    coords, summary = out.result[0], out.ui.as_dict()["text"][0]
    assert coords.metadata["time_offsets"] is True
    assert "5 steps: time offsets kept" in summary or "5 steps: time offsets not kept" in summary
    loaded = PASCoordinates.load(pas_dir / "offsets_00001.safetensors")
    if coords.log_offsets is None:
        assert loaded.log_offsets is None and "not kept" in summary
    else:
        assert torch.equal(loaded.log_offsets, coords.log_offsets) and "time offsets kept" in summary
    from_file = sample(model, nodes.PASSampler.execute("euler", 3, "offsets_00001.safetensors").result[0], sigmas,
                       conditioning)
    wired = sample(model, nodes.PASSampler.execute("euler", 3, "none", coords).result[0], sigmas, conditioning)
    torch.testing.assert_close(from_file, wired)


@pytest.mark.parametrize("change", ["steps", "scheduler", "denoise"])
def test_trained_file_rejects_other_sigmas(nodes, trained, tiny_models, conditioning, change):
    _, name, _ = trained
    model = tiny_models("eps")
    other = {"steps": lambda: karras(model, steps=STEPS + 2),
             "scheduler": lambda: ncs.BasicScheduler.execute(model, "normal", STEPS, 1.0).result[0],
             "denoise": lambda: karras(model, denoise=0.6)}[change]()
    sampler = nodes.PASSampler.execute("euler", 3, name).result[0]
    with pytest.raises(ValueError) as error:
        sample(model, sampler, other, conditioning)
    message = str(error.value)
    assert f"trained for {STEPS} steps of euler" in message
    assert "14.6" in message  # the trained sigmas are named
    assert "train" in message.split("trained for")[-1]  # and retraining on this grid is suggested


def test_solver_mismatch_is_reported_by_the_node(nodes, trained):
    _, name, _ = trained
    with pytest.raises(ValueError, match=name):
        nodes.PASSampler.execute("ipndm", 3, name)


def test_interrupt_leaves_no_file(nodes, pas_dir, tiny_models, conditioning):
    """ComfyUI's interrupt, raised from the progress hook as the server does, stops training; no file."""
    model = tiny_models("eps")
    before = sorted(p.name for p in pas_dir.rglob("*"))
    seen = []

    def hook(value, total, preview, node_id=None):
        seen.append((value, total))
        if len(seen) == 3:
            comfy.model_management.interrupt_current_processing(True)
        comfy.model_management.throw_exception_if_processing_interrupted()

    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            train_node(nodes, model, conditioning, karras(model), "interrupted")
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
        comfy.model_management.interrupt_current_processing(False)
    assert len(seen) == 3 and seen[0][1] > 3  # the bar had advanced; training was far from done
    assert sorted(p.name for p in pas_dir.rglob("*")) == before


def test_progress_covers_teacher_and_search(nodes, pas_dir, tiny_models, conditioning):
    model = tiny_models("v_prediction")
    seen = []
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: seen.append((value, total)))
    try:
        train_node(nodes, model, conditioning, karras(model), "progress", solver="ipndm", max_order=2)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
    values = [v for v, _ in seen]
    total = seen[-1][1]
    assert values == sorted(values) and values[-1] == total
    # teacher: trajectories x teacher model calls; search: at least one call per trajectory and step
    assert total > TRAINING["trajectories"] * (16 + STEPS)
    assert (pas_dir / "progress_00001.safetensors").is_file()


def test_prompt_list_dispatches_rows_to_their_prompt(bridge, tiny_models, conditioning):
    """Teacher targets of a 2-prompt run equal those of ComfyUI's own CFGGuider with each single prompt.

    chunk_size 3 over 4 trajectories makes chunks that mix both prompts.
    """
    model = tiny_models("eps")
    sigmas = karras(model, steps=3)
    prompts = [tiny.random_conditioning(21), tiny.random_conditioning(22)]
    latent = {"samples": torch.zeros(1, 4, 8, 8)}

    def teacher(denoiser, x, sigmas, **model_args):
        return teacher_states(Denoiser(denoiser, **model_args), x, sigmas, teacher_nfe=8)[0]

    mixed = bridge.run_with_model(model, prompts, conditioning[1], CFG, latent, sigmas, 4, 9, teacher, chunk_size=3)

    noise, start = bridge.training_start(model, latent, 4, 9)
    for index, positive in enumerate(prompts):
        guider = comfy.samplers.CFGGuider(model)  # ComfyUI's own guider: the reference
        guider.set_conds(positive, conditioning[1])
        guider.set_cfg(CFG)
        sampler = bridge.DenoiserSampler(teacher, prompt_index=None, chunk_size=3)
        guider.sample(noise, start, sampler, sigmas, disable_pbar=True, seed=9)
        single = sampler.result
        torch.testing.assert_close(mixed[:, index::2], single[:, index::2], rtol=1e-5, atol=1e-4)
        assert (mixed[-1, 1 - index::2] - single[-1, 1 - index::2]).abs().max() > 1e-3


def test_trainer_with_clip_prompts(nodes, pas_dir, tiny_models, conditioning):
    """A real (tiny) CLIP encodes a prompt list; the prompts are recorded in the file."""
    clip = tiny.make_clip()
    model = tiny_models("flow")
    sigmas = ncs.BasicScheduler.execute(model, "simple", 4, 1.0).result[0]
    out = train_node(nodes, model, conditioning, sigmas, "prompts/flow", clip=clip, trajectories=6,
                     prompts="a red fox\n\n  a blue bird  \n")
    loaded = PASCoordinates.load(pas_dir / "prompts" / "flow_00001.safetensors")
    assert loaded.metadata["prompts"] == ["a red fox", "a blue bird"]
    assert loaded.metadata["model_type"] == "FLOW"
    assert out.result[0].steps == loaded.steps


def test_prompt_list_needs_clip(nodes, tiny_models, conditioning):
    model = tiny_models("eps")
    with pytest.raises(ValueError, match="CLIP"):
        train_node(nodes, model, conditioning, karras(model), "noclip", prompts="a cat")


def test_load_coordinates_node(nodes, trained):
    out, name, _ = trained
    assert name in next(i for i in nodes.PASLoadCoordinates.define_schema().inputs).options
    loaded = nodes.PASLoadCoordinates.execute(name)
    coords = loaded.result[0]
    assert coords.steps == out.result[0].steps
    torch.testing.assert_close(coords.coordinates, out.result[0].coordinates)
    text = loaded.ui.as_dict()["text"][0]
    assert text.startswith(name) and f"cfg: {CFG}" in text and "model_type: EPS" in text


def test_training_model_is_comfyuis_patched_model(bridge, tiny_models, conditioning):
    """What the trainer's teacher sees is the model ComfyUI samples with: weight patches (as a LoRA adds)
    and CFG apply. Its Heun trajectory's end equals ComfyUI's own `heun` sampler on the same grid."""
    base = tiny_models("eps")
    patched = base.clone()
    key = "diffusion_model.out.2.weight"
    weight = base.model.state_dict()[key]
    patched.add_patches({key: (torch.full_like(weight, 0.05),)}, 1.0)  # a "diff" patch, as LoRAs apply
    sigmas = karras(base, steps=3)
    latent = {"samples": torch.zeros(2, 4, 8, 8)}

    def teacher(denoiser, x, sigmas, **model_args):
        return teacher_states(Denoiser(denoiser, **model_args), x, sigmas, substeps=2)[0][-1]

    def teacher_end(model):
        return bridge.run_with_model(model, [conditioning[0]], conditioning[1], CFG, latent, sigmas, 2, 13, teacher)

    reference = ncs.SamplerCustom.execute(patched, True, 13, CFG, conditioning[0], conditioning[1],
                                          comfy.samplers.sampler_object("heun"),
                                          refine_sigmas(sigmas, 2), latent).result[0]["samples"]
    reference = patched.model.process_latent_in(reference)  # SamplerCustom returns unscaled latents
    end = teacher_end(patched)
    torch.testing.assert_close(end, reference, rtol=1e-4, atol=1e-4 * reference.abs().max().item())
    assert (teacher_end(base) - end).abs().max() > 1e-3 * reference.abs().max()


@pytest.mark.parametrize("grid", ["denoise", "split"])
def test_trains_on_img2img_and_split_grids(nodes, pas_dir, tiny_models, conditioning, grid):
    """Any SIGMAS can be trained on: denoise < 1 with a non-empty latent, or the first half of a split."""
    model = tiny_models("eps")
    if grid == "denoise":
        sigmas = karras(model, steps=4, denoise=0.5)
    else:
        sigmas = ncs.SplitSigmas.execute(karras(model, steps=6), 3).result[0]
        assert float(sigmas[-1]) > 0
    latent = {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))}
    positive, negative = conditioning
    out = nodes.PASTrainer.execute(model, positive, negative, CFG, latent, sigmas, "ipndm", 2, 4, 1, 8, 2, "l2",
                                   0.0, f"grids/{grid}")
    name = f"grids/{grid}_00001.safetensors"
    assert (pas_dir / name).is_file()
    sampler = nodes.PASSampler.execute("ipndm", 2, name).result[0]
    result = ncs.SamplerCustom.execute(model, True, 3, CFG, positive, negative, sampler, sigmas, latent).result[0]
    assert torch.isfinite(result["samples"]).all()
    torch.testing.assert_close(PASCoordinates.load(pas_dir / name).sigmas, sigmas.double())
    assert out.result[0].n_steps == len(sigmas) - 1


def test_scheduler_mode_trains_one_file_for_every_step_count(nodes, pas_dir, tiny_models, conditioning):
    """grid 'scheduler': one teacher run, one file, each grid exactly BasicScheduler's; the loader's SIGMAS pick
    a grid and the sampler corrects on it."""
    model = tiny_models("eps")
    positive, negative = conditioning
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    out = nodes.PASTrainer.execute(model, positive, negative, CFG, latent, None, "deis", 0, 8, 2, 16, 2, "l1", 0.0,
                                   "multi", grid="scheduler", scheduler="simple", steps="4-5,7")
    coords, _, trained_sigmas, text = out.result
    assert coords.step_counts == [4, 5, 7]
    for grid, steps in zip(coords.grids, (4, 5, 7), strict=True):
        torch.testing.assert_close(grid.sigmas, ncs.BasicScheduler.execute(model, "simple", steps, 1.0).result[0].double())
    torch.testing.assert_close(trained_sigmas, coords.sigmas.float())
    loaded, sigmas, _ = nodes.PASLoadCoordinates.execute("multi_00001.safetensors", 5).result
    assert len(sigmas) == 6 and loaded.step_counts == [4, 5, 7]
    sampler = nodes.PASSampler.execute("deis", 0, "multi_00001.safetensors").result[0]
    assert torch.isfinite(sample(model, sampler, sigmas, conditioning)).all()
    with pytest.raises(ValueError, match="covers 4, 5, 7 steps"):
        nodes.PASLoadCoordinates.execute("multi_00001.safetensors", 6)
    with pytest.raises(ValueError, match="covers 4, 5, 7 steps"):
        sample(model, sampler, karras(model, 6), conditioning)


def test_learned_mode_outputs_the_grid_it_trained_on(nodes, pas_dir, tiny_models, conditioning):
    model = tiny_models("flow")
    positive, negative = conditioning
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    updates = []
    original = comfy.utils.ProgressBar.update_absolute

    def record(self, value, total=None, preview=None):
        updates.append((value, total if total is not None else self.total))
        return original(self, value, total, preview)

    comfy.utils.ProgressBar.update_absolute = record
    try:
        out = nodes.PASTrainer.execute(model, positive, negative, CFG, latent, None, "euler", 0, 8, 3, 16, 2,
                                       "l1", 0.0, "learned", grid="learned", steps="5",
                                       rule="sharpness")  # a held-out rule: its error shows in the summary
    finally:
        comfy.utils.ProgressBar.update_absolute = original
    coords, _, sigmas, _ = out.result
    model_sampling = model.get_model_object("model_sampling")
    assert len(sigmas) == 6 and float(sigmas[-1]) == 0.0
    assert abs(float(sigmas[0]) - float(model_sampling.sigma_max)) < 1e-6
    assert coords.metadata["schedule"]["objective"] == "end_to_end" and coords.metadata["scheduler"] == "learned"
    summary = out.ui.as_dict()["text"][0]
    assert "learned schedule" in summary and "None" not in summary and "5 steps: held-out error" in summary
    assert updates[-1][0] == updates[-1][1] and all(v <= t for v, t in updates)
    assert [v / t for v, t in updates] == sorted(v / t for v, t in updates)  # one bar, never going back
    sampler = nodes.PASSampler.execute("euler", 0, "learned_00001.safetensors").result[0]
    assert torch.isfinite(sample(model, sampler, sigmas, conditioning)).all()


def test_sigmas_mode_needs_sigmas(nodes, tiny_models, conditioning):
    model = tiny_models("eps")
    with pytest.raises(ValueError, match="no SIGMAS are connected"):
        train_node(nodes, model, conditioning, None, "nosigmas")
