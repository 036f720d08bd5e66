"""The PAS nodes (V3 schema): thin adapters from ComfyUI types to the comfyui_pas library."""
from __future__ import annotations

import logging
import os

import comfy.samplers
import torch
from comfy_api.latest import io, ui

from . import comfy_bridge as bridge
from .comfyui_pas.coords import MAX_BASIS, PASCoordinates
from .comfyui_pas.grids import parse_step_counts
from .comfyui_pas.search import DEFAULT_N_BASIS, DEFAULT_TOLERANCE, LOSSES
from .comfyui_pas.settings import (
    AUTO_RULE,
    RULE_CHOICES,
    TRAINER_TEACHER_NFE,
    TRAINER_TRAJECTORIES,
    SearchSettings,
    describe_rule,
)
from .comfyui_pas.solvers import ORDER, SOLVER_CLASSES, SOLVERS, canonical_solver, solver_tooltip

log = logging.getLogger("comfyui_pas")

GRID_MODES = ("sigmas", "scheduler", "learned")
# The PAS Trainer's budget defaults: at most 1,000 model calls per grid at 3-10 steps (docs/ab-study.md)


def sampling_category() -> str:
    """The PAS folder beside the host's own sampler folders, read from its KSamplerSelect node:
    sampling/custom_sampling/pas on ComfyUI 0.3.x, model/sampling/pas on hosts (current ComfyUI) that file
    their samplers, schedulers and guiders under model/sampling/."""
    try:
        from comfy_extras.nodes_custom_sampler import KSamplerSelect

        samplers = KSamplerSelect.define_schema().category
    except Exception:  # a host without that node or schema: the 0.3.x place
        return "sampling/custom_sampling/pas"
    return samplers.rsplit("/", 1)[0] + "/pas" if "/" in samplers else "sampling/custom_sampling/pas"


def schema(**fields) -> io.Schema:
    """io.Schema; search_aliases is passed only to hosts whose Schema has it (ComfyUI 0.3.75 does not)."""
    if "search_aliases" not in getattr(io.Schema, "__dataclass_fields__", {}):
        fields.pop("search_aliases", None)
    return io.Schema(**fields)


CATEGORY = sampling_category()
PASCoords = io.Custom("PAS_COORDS")
SOLVER_TOOLTIP = solver_tooltip() + " euler is DDIM in ComfyUI's sigma form."
ORDERED = [cls for cls in SOLVER_CLASSES.values() if any(o.name == ORDER for o in cls.options)]
ORDER_LIMIT = max(o.high for cls in ORDERED for o in cls.options if o.name == ORDER)
ORDER_TOOLTIP = ("Highest order of the multistep solvers (" + ", ".join(
    f"{cls.name} 1-{o.high}, default {o.default}" for cls in ORDERED for o in cls.options if o.name == ORDER)
    + "); the first steps warm up with lower orders. 0 = ComfyUI's default for the solver, or the order a "
      "connected coordinates file was trained with. Ignored by the other solvers.")


UNCOVERED_TOOLTIP = (
    "When the workflow's sigmas are not a grid the coordinates were trained on (other steps, scheduler or "
    "denoise): 'error' stops the queue with a message naming the step counts and denoise the coordinates "
    "cover; 'plain solver + warning' samples without PAS and shows a warning on the sampling node and in "
    "the log. Another model type or latent channel count is always an error.")
RULE_TOOLTIP = ("Which fitted steps are kept (docs/objective-study.md). " + describe_rule(AUTO_RULE) +
                ": the solver's measured rule. sharpness: a quarter of the trajectories is held out, and their "
                "error must not grow nor their contrast and fine detail drop; paper: the training loss alone "
                "(often best under strong CFG); fid-safe: the held-out error must drop 5%, the last step is never "
                "corrected; texture: the held-out contrast and detail gaps to the teacher must not grow; patches: "
                "sharpness, and the held-out samples' 4x4-patch distribution must not move away from the teacher's.")
TIME_OFFSETS_TOOLTIP = ("Also learn one time offset per step: step i asks the model at its sigma times exp(offset), "
                        "fitted against the teacher, kept only if held-out trajectories confirm it and PAS on top "
                        "beats PAS alone there, in error and in contrast. Costs up to about 48 roll-outs of the "
                        "trajectories per grid (3-4x a training without them); sampling adds no model call. Off by "
                        "default: not yet adopted (docs/objective-study.md, 'Per-step time offsets').")
TEXT_TOOLTIP = "The coordinates as one line of text, to paste into a PAS Coordinates (text) node's widget."


def coordinate_choices() -> list[str]:
    return [bridge.NO_FILE] + bridge.coordinate_files()


class PASSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="PAS_Sampler",
            search_aliases=["pas", "pas sampler", "ddim correction", "euler correction", "ipndm correction",
                            "few step sampler"],
            display_name="PAS Sampler",
            category=CATEGORY,
            description=f"A base solver ({', '.join(SOLVERS)}; euler = DDIM) with PAS corrections, for "
                        "SamplerCustom / SamplerCustomAdvanced. Without coordinates it is exactly ComfyUI's "
                        "sampler of the same name.",
            inputs=[
                io.Combo.Input("solver", options=list(SOLVERS), default="euler", tooltip=SOLVER_TOOLTIP),
                io.Int.Input("max_order", default=0, min=0, max=ORDER_LIMIT, tooltip=ORDER_TOOLTIP),
                io.Combo.Input("coordinates", options=coordinate_choices(), default=bridge.NO_FILE,
                               tooltip="A trained file from models/pas/; 'none' samples without correction. It "
                                       "only fits the sigmas (scheduler, steps, denoise) it was trained on."),
                PASCoords.Input("pas_coords", optional=True,
                                tooltip="Coordinates from a PAS Trainer, PAS Load Coordinates or PAS Coordinates "
                                        "(text) node; overrides the dropdown."),
                io.Combo.Input("if_uncovered", options=list(bridge.UNCOVERED), default=bridge.UNCOVERED[0],
                               optional=True, tooltip=UNCOVERED_TOOLTIP),
            ],
            outputs=[io.Sampler.Output()],
        )

    @classmethod
    def fingerprint_inputs(cls, coordinates=bridge.NO_FILE, **_):
        return bridge.file_fingerprint(coordinates)

    @classmethod
    def execute(cls, solver, max_order, coordinates, pas_coords=None, if_uncovered=bridge.UNCOVERED[0]) -> io.NodeOutput:
        coords, source = pas_coords, "the connected PAS coordinates"
        if coords is None and coordinates != bridge.NO_FILE:
            coords, source = bridge.load_coordinates(coordinates), coordinates
        solver = canonical_solver(solver)
        if coords is not None:
            if not max_order and coords.solver == solver:
                max_order = coords.max_order
            try:  # solver and order are known now; the sigmas are checked when sampling starts
                coords.check_solver(solver, {ORDER: max_order})
            except ValueError as error:
                raise ValueError(f"{source}: {error}") from None
        if if_uncovered not in bridge.UNCOVERED:
            raise ValueError(f"PAS Sampler: if_uncovered must be one of {', '.join(bridge.UNCOVERED)}, not "
                             f"{if_uncovered!r}")
        options = {"solver": solver, "max_order": max_order or None, "coords": coords, "source": source,
                   "uncovered": if_uncovered}
        return io.NodeOutput(comfy.samplers.KSAMPLER(bridge.sample_checked, extra_options=options))


class PASTrainer(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="PAS_Trainer",
            search_aliases=["pas", "pas trainer", "sampler training", "train sampler", "ddim correction",
                            "learn sampling coordinates"],
            display_name="PAS Trainer",
            category=CATEGORY,
            description="Learns PAS coordinates for this model, CFG and sigma grid from teacher trajectories, "
                        "and saves them to models/pas/<prefix>_NNNNN.safetensors.",
            is_output_node=True,
            inputs=[
                io.Model.Input("model", tooltip="The model to learn corrections for (LoRAs and patches apply)."),
                io.Conditioning.Input("positive", tooltip="Positive prompt used for every trajectory, unless a "
                                                          "CLIP and a prompt list are connected below."),
                io.Conditioning.Input("negative", tooltip="Negative prompt (the CFG unconditional)."),
                io.Float.Input("cfg", default=5.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="CFG scale; use the one you will sample with."),
                io.Latent.Input("latent", tooltip="Its size sets the trajectory shape; a non-empty latent is "
                                                  "noised as in img2img (rows cycled over the trajectories)."),
                io.Sigmas.Input("sigmas", optional=True,
                                tooltip="grid 'sigmas': the student grid from any scheduler node, the exact sigmas "
                                        "you will sample with (steps, scheduler, denoise, splits)."),
                io.Combo.Input("solver", options=list(SOLVERS), default="euler", tooltip=SOLVER_TOOLTIP),
                io.Int.Input("max_order", default=0, min=0, max=ORDER_LIMIT, tooltip=ORDER_TOOLTIP),
                io.Int.Input("trajectories", default=TRAINER_TRAJECTORIES, min=4, max=4096,
                             tooltip="Number of teacher trajectories (noise samples); with a held-out rule a quarter "
                                     "is held out. Budget per grid with the defaults (48 trajectories, teacher_nfe "
                                     "48): trajectories x (teacher NFE + steps) plus held-out roll-outs, about "
                                     "2,600-3,900 model calls at 4-10 steps; 12 trajectories cost about 700-830 but "
                                     "made 4-step images worse (docs/objective-study.md). grid 'learned' adds its own "
                                     "teacher on ~70 candidate sigmas and roll-outs: about trajectories x 300 calls "
                                     "at 5 steps."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the trajectories' noise."),
                io.Int.Input("teacher_nfe", default=TRAINER_TEACHER_NFE, min=4, max=2000,
                             tooltip="Model calls per trajectory for the Heun teacher (more is more accurate; 48 "
                                     "kept >= 90% of the best gain in docs/ab-study.md; ~100 is safer for ipndm)."),
                io.Int.Input("n_basis", default=DEFAULT_N_BASIS, min=1, max=MAX_BASIS,
                             tooltip="Basis vectors per corrected step (the paper uses 4; 3 did as well or better "
                                     "in docs/ab-study.md)."),
                io.Combo.Input("loss", options=list(LOSSES), default=LOSSES[0],
                               tooltip="Distance to the teacher that the search minimises (the paper uses L1)."),
                io.Float.Input("tolerance", default=DEFAULT_TOLERANCE["relative"], min=0.0, max=1.0, step=0.001,
                               round=0.0001,
                               tooltip="A step is corrected only if it lowers the loss by more than this "
                                       "fraction."),
                io.String.Input("filename_prefix", default="PAS",
                                tooltip="File name (and optional sub-folder) under models/pas/."),
                io.Clip.Input("clip", optional=True,
                              tooltip="Text encoder for the prompt list; with it, the prompts replace "
                                      "'positive'."),
                io.String.Input("prompts", optional=True, multiline=True, default="",
                                tooltip="One prompt per line, cycled over the trajectories (needs a CLIP)."),
                io.Combo.Input("grid", options=list(GRID_MODES), default=GRID_MODES[0], optional=True,
                               tooltip="sigmas: train on the connected SIGMAS. scheduler: one file for every step "
                                       "count in 'steps', each grid as BasicScheduler computes it with 'scheduler' "
                                       "(one teacher run serves them all). learned: learn a schedule with the "
                                       "first count in 'steps' from the teacher (GITS-style dynamic programme, "
                                       "kept only if the solver rolls out better on it than on EDM grids of "
                                       "several rho), then train on it."),
                io.Combo.Input("scheduler", options=list(comfy.samplers.SCHEDULER_NAMES), default="karras",
                               optional=True, tooltip="The ComfyUI scheduler for grid 'scheduler'."),
                io.String.Input("steps", default="4-8", optional=True,
                                tooltip="Step counts for grid 'scheduler' ('4-12', '5,6,8') or the one count for "
                                        "grid 'learned'."),
                io.Float.Input("denoise", default=1.0, min=0.01, max=1.0, step=0.01, optional=True,
                               tooltip="grid 'scheduler': the denoise of img2img / hires fix, as BasicScheduler "
                                       "takes it (each grid is the last steps + 1 sigmas of int(steps / denoise) "
                                       "steps). Must be 1 for the other grid modes."),
                io.Combo.Input("rule", options=list(RULE_CHOICES), default=AUTO_RULE, optional=True,
                               tooltip=RULE_TOOLTIP),
                io.Boolean.Input("time_offsets", default=SearchSettings.time_offsets, optional=True,
                                 tooltip=TIME_OFFSETS_TOOLTIP),
            ],
            outputs=[
                PASCoords.Output(display_name="pas_coords"),
                io.Image.Output(display_name="error_curve"),
                io.Sigmas.Output(display_name="sigmas",
                                 tooltip="The grid it trained on (the first of several): wire it to the sampler."),
                io.String.Output(display_name="text", tooltip=TEXT_TOOLTIP),
            ],
        )

    @classmethod
    def execute(cls, model, positive, negative, cfg, latent, sigmas=None, solver="euler", max_order=0,
                trajectories=TRAINER_TRAJECTORIES, seed=0, teacher_nfe=TRAINER_TEACHER_NFE, n_basis=DEFAULT_N_BASIS, loss=LOSSES[0],
                tolerance=DEFAULT_TOLERANCE["relative"], filename_prefix="PAS",
                clip=None, prompts="", grid=None, scheduler="karras", steps="4-8", denoise=1.0,
                rule=AUTO_RULE, time_offsets=SearchSettings.time_offsets) -> io.NodeOutput:
        prompt_list = [line.strip() for line in (prompts or "").splitlines() if line.strip()]
        if prompt_list and clip is None:
            raise ValueError("The PAS Trainer got a prompt list but no CLIP: connect a CLIP (text encoder) "
                             "or clear the prompts to use 'positive'.")
        positives = [encode(clip, text, positive) for text in prompt_list] if prompt_list else [positive]
        stem = bridge.output_stem(filename_prefix)  # a bad prefix fails before training, not after
        grids, learn_steps = student_grids(model, grid or GRID_MODES[0], sigmas, scheduler, steps, denoise)
        metadata = {"cfg": cfg, "seed": seed, "prompts": prompt_list, "trained_at": bridge.timestamp(),
                    "grid_mode": grid or GRID_MODES[0], **bridge.describe_model(model)}
        if grid in ("scheduler", "learned"):
            metadata["scheduler"] = scheduler if grid == "scheduler" else "learned"
            metadata["denoise"] = denoise
        coords, report = bridge.train_by_start(
            model, positives, negative, cfg, latent, grids, trajectories=trajectories, seed=seed,
            learn_steps=learn_steps, metadata=metadata, solver=solver, max_order=max_order or None,
            settings=SearchSettings.for_rule(rule or AUTO_RULE, canonical_solver(solver), cfg), n_basis=n_basis, loss=loss, tolerance=tolerance,
            teacher_nfe=teacher_nfe, time_offsets=bool(time_offsets))
        path = bridge.save_output(coords, stem)
        name = os.path.relpath(path, bridge.pas_directory())
        summary = f"Saved {name}: {coords.describe()}\n{training_summary(report)}"
        log.info("PAS Trainer: %s", summary)
        from .comfyui_pas.plot import error_curve_image  # matplotlib: imported only when a training ran

        image = torch.from_numpy(error_curve_image(report)).float().div(255.0).unsqueeze(0)
        return io.NodeOutput(coords, image, coords.sigmas.float(), coords.to_text(), ui=ui.PreviewText(summary))


def student_grids(model, mode: str, sigmas, scheduler: str, steps: str, denoise: float = 1.0):
    """(grids, learn_steps) for the PAS Trainer's grid mode; learn_steps is None unless mode is 'learned'."""
    if mode != "scheduler" and denoise != 1.0:
        raise ValueError(f"The PAS Trainer's denoise ({denoise}) applies to grid 'scheduler' only: set it to 1, or "
                         "connect SIGMAS from a BasicScheduler with that denoise (grid 'sigmas').")
    if mode == "sigmas":
        if sigmas is None:
            raise ValueError("The PAS Trainer's grid is 'sigmas' but no SIGMAS are connected: connect a scheduler "
                             "node, or set grid to 'scheduler' (step counts) or 'learned'.")
        return [sigmas], None
    counts = parse_step_counts(steps)
    if mode == "learned":
        if len(counts) != 1:
            raise ValueError(f"grid 'learned' learns one schedule: give one step count, not {steps!r}")
        return bridge.scheduler_grids(model, "karras", counts), counts[0]
    return bridge.scheduler_grids(model, scheduler, counts, denoise), None


def training_summary(report: dict) -> str:
    settings = report["settings"]
    schedule = report.get("schedule")  # grid 'learned': its teacher ran inside learn_schedule
    calls = report["model_calls"] + (schedule["model_calls"] if schedule else 0)
    seconds = report["teacher_seconds"] + report["search_seconds"] + (schedule["seconds"] if schedule else 0)
    parts = [f"{settings['n_trajectories']} trajectories ({settings['n_validation']} held out)",
             f"{calls} model calls in all", f"{seconds:.1f} s"]
    if schedule:
        parts.append(f"learned schedule ({schedule['objective']} objective)")
    for grid in report["grids"]:
        if grid.get("val_final_plain") is not None:
            parts.append(f"{len(grid['sigmas']) - 1} steps: held-out error {grid['val_final_plain']:.4g} -> "
                         f"{grid['val_final_pas']:.4g}")
        if grid.get("time_offsets") is not None:
            parts.append(f"{len(grid['sigmas']) - 1} steps: time offsets "
                         f"{'kept' if grid['time_offsets']['kept'] else 'not kept'}")
    return "; ".join(parts)


def encode(clip, text: str, like=None):
    """A prompt's CONDITIONING; the guidance value of `like` (FluxGuidance on 'positive') carries over."""
    conditioning = clip.encode_from_tokens_scheduled(clip.tokenize(text))
    guidance = like[0][1].get("guidance") if like else None
    if guidance is None:
        return conditioning
    return [[tokens, dict(extra, guidance=guidance)] for tokens, extra in conditioning]


class PASLoadCoordinates(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="PAS_LoadCoordinates",
            search_aliases=["pas", "load pas", "pas coordinates", "sampler correction file"],
            display_name="PAS Load Coordinates",
            category=CATEGORY,
            description="Loads a PAS coordinates file from models/pas/ and shows what it was trained for.",
            is_output_node=True,
            inputs=[io.Combo.Input("coordinates", options=bridge.coordinate_files(),
                                   tooltip="A trained file from models/pas/."),
                    io.Int.Input("steps", default=0, min=0, max=1000, optional=True,
                                 tooltip="Which grid of a file that covers several step counts: its step count; "
                                         "0 = the first grid.")],
            outputs=[PASCoords.Output(display_name="pas_coords"),
                     io.Sigmas.Output(display_name="sigmas",
                                      tooltip="The sigmas stored in the file for that grid: wire them to the "
                                              "sampler so grid and coordinates always match."),
                     io.String.Output(display_name="text", tooltip=TEXT_TOOLTIP)],
        )

    @classmethod
    def fingerprint_inputs(cls, coordinates, **_):
        return bridge.file_fingerprint(coordinates)

    @classmethod
    def execute(cls, coordinates, steps=0) -> io.NodeOutput:
        coords = bridge.load_coordinates(coordinates)
        sigmas = grid_sigmas(coords, steps, coordinates)
        return io.NodeOutput(coords, sigmas, coords.to_text(), ui=ui.PreviewText(describe_file(coordinates, coords)))


def grid_sigmas(coords: PASCoordinates, steps: int, name: str) -> torch.Tensor:
    """The sigmas of the grid with `steps` steps (0: the first grid), as float32 like ComfyUI's SIGMAS."""
    chosen = [grid for grid in coords.grids if not steps or grid.n_steps == steps]
    if not chosen:
        raise ValueError(f"{name} covers {', '.join(map(str, coords.step_counts))} steps, not {steps}: "
                         "set steps to one of them (or 0 for the first).")
    return chosen[0].sigmas.float()


TEXT_NODE = "PAS Coordinates (text)"


class PASCoordinatesText(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="PAS_CoordinatesText",
            search_aliases=["pas", "pas text", "pas coordinates text", "paste pas coordinates"],
            display_name=TEXT_NODE,
            category=CATEGORY,
            description="PAS coordinates carried in the workflow: paste the text output of a PAS Trainer or PAS "
                        "Load Coordinates. The saved workflow and the PNG's embedded workflow then sample "
                        "without the file in models/pas/.",
            is_output_node=True,
            inputs=[io.String.Input("text", multiline=True, default="",
                                    tooltip="One line starting with 'comfyui-pas-coordinates v2', from the text "
                                            "output of a PAS Trainer or PAS Load Coordinates (Preview as Text "
                                            "shows it for copying)."),
                    io.Int.Input("steps", default=0, min=0, max=1000, optional=True,
                                 tooltip="Which grid's sigmas to output when the coordinates cover several step "
                                         "counts; 0 = the first grid.")],
            outputs=[PASCoords.Output(display_name="pas_coords"),
                     io.Sigmas.Output(display_name="sigmas",
                                      tooltip="The sigmas of that grid: wire them to the sampler.")],
        )

    @classmethod
    def execute(cls, text, steps=0) -> io.NodeOutput:
        coords = PASCoordinates.from_text(text, source=TEXT_NODE)
        sigmas = grid_sigmas(coords, steps, f"{TEXT_NODE}: the coordinates")
        return io.NodeOutput(coords, sigmas, ui=ui.PreviewText(describe_file("text", coords)))


def describe_file(name: str, coords: PASCoordinates) -> str:
    lines = [f"{name}: {coords.describe()}"]
    for key, value in sorted(coords.metadata.items()):
        if key == "prompts" or not isinstance(value, (dict, list)):
            lines.append(f"{key}: {value}")
    return "\n".join(lines)


NODES = [PASSampler, PASTrainer, PASLoadCoordinates, PASCoordinatesText]
