"""ComfyUI glue for PAS: the models/pas folder, coordinate files, and training inside ComfyUI's sampler.

Training runs the way comfy_extras/nodes_train.py drives LoRA training: a custom comfy.samplers.Sampler
is handed to a CFGGuider, so ComfyUI loads and patches the model (GPU when there is one, LoRAs, model
patches, CFG) and the Sampler receives the ready denoiser, which train_pas calls for teacher and search.
"""
from __future__ import annotations

import logging
import math
import os
from datetime import datetime, timezone

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import folder_paths
import torch

from .comfyui_pas.coords import PASCoordinates, save_numbered
from .comfyui_pas.denoiser import Denoiser
from .comfyui_pas.pipeline import learn_and_train
from .comfyui_pas.sampler import sample_pas
from .comfyui_pas.search import train_pas
from .comfyui_pas.settings import ScheduleSettings, training_settings

log = logging.getLogger("comfyui_pas")

PAS_FOLDER = "pas"
FILE_SUFFIX = ".safetensors"
NO_FILE = "none"


# ---- models/pas ------------------------------------------------------------------------------------
def register_model_folder() -> None:
    """models/pas (under --base-directory when given), shared by the sampler's dropdown and the trainer."""
    folder_paths.add_model_folder_path(PAS_FOLDER, os.path.join(folder_paths.models_dir, PAS_FOLDER),
                                       is_default=True)


def pas_directory() -> str:
    return folder_paths.get_folder_paths(PAS_FOLDER)[0]


def coordinate_files() -> list[str]:
    """The .safetensors files in every registered models/pas folder (sub-folders included)."""
    return sorted(name for name in folder_paths.get_filename_list(PAS_FOLDER) if name.endswith(FILE_SUFFIX))


def load_coordinates(name: str) -> PASCoordinates:
    path = folder_paths.get_full_path(PAS_FOLDER, name)
    if path is None:
        raise FileNotFoundError(f"PAS coordinates file {name!r} not found in models/{PAS_FOLDER}/ "
                                f"(searched: {', '.join(folder_paths.get_folder_paths(PAS_FOLDER))}).")
    coords = PASCoordinates.load(path)
    coords.metadata.setdefault("file", name)
    return coords


def file_fingerprint(name: str) -> str:
    """Changes when the file behind a dropdown entry is replaced, so ComfyUI re-runs the node."""
    path = folder_paths.get_full_path(PAS_FOLDER, name) if name != NO_FILE else None
    if path is None:
        return name
    status = os.stat(path)
    return f"{name}:{status.st_mtime_ns}:{status.st_size}"


def output_stem(prefix: str) -> str:
    """The absolute path models/pas/<prefix> (sub-folders allowed); refuses prefixes leaving models/pas."""
    root = os.path.abspath(pas_directory())
    cleaned = prefix.strip().replace("\\", "/").strip("/") or "PAS"
    target = os.path.abspath(os.path.join(root, cleaned))
    if os.path.commonpath([root, target]) != root or target == root:
        raise ValueError(f"filename_prefix {prefix!r} points outside models/{PAS_FOLDER}/; use a plain name "
                         "or a sub-folder such as 'sd15/portraits'.")
    return target


def save_output(coords: PASCoordinates, stem_path: str) -> str:
    """Save to <stem_path>_NNNNN.safetensors (stem_path from output_stem), claiming the next free counter
    atomically.

    Two trainers or two ComfyUI instances on one models folder saving with the same prefix get distinct
    files: a name taken meanwhile is skipped, never overwritten (comfyui_pas.coords.save_numbered).
    """
    folder, stem = os.path.split(stem_path)
    return save_numbered(coords, folder, stem)


# ---- training inside ComfyUI's sampler ------------------------------------------------------------
class MultiPromptGuider(comfy.samplers.CFGGuider):
    """CFG over one negative and several positive prompts; `active_prompt` picks the positive in use.

    All positives are prepared together by ComfyUI (keys positive, positive_1, ...), so the model is
    loaded once; the trainer switches prompt per group of trajectories.
    """

    def set_prompts(self, positives: list, negative) -> None:
        conds = {"negative": negative}
        for index, positive in enumerate(positives):
            conds[self.prompt_key(index)] = positive
        self.inner_set_conds(conds)
        self.prompt_count = len(positives)
        self.active_prompt = 0

    @staticmethod
    def prompt_key(index: int) -> str:
        return "positive" if index == 0 else f"positive_{index}"

    def predict_noise(self, x, timestep, model_options={}, seed=None):  # noqa: B006 (ComfyUI's signature)
        return comfy.samplers.sampling_function(
            self.inner_model, x, timestep, self.conds.get("negative"), self.conds[self.prompt_key(self.active_prompt)],
            self.cfg, model_options=model_options, seed=seed)


class PromptDispatcher:
    """The k-diffusion denoiser handed to the library: rows of a chunk go to the guider with their prompt."""

    def __init__(self, model_k, guider):
        self.model_k, self.guider = model_k, guider

    def __call__(self, x, sigma, prompt_index=None, **extra_args):
        if prompt_index is None or getattr(self.guider, "prompt_count", 1) == 1:
            return self.model_k(x, sigma, **extra_args)
        out = torch.empty_like(x)
        prompt_index = prompt_index.to(x.device)
        for prompt in torch.unique(prompt_index).tolist():
            rows = torch.nonzero(prompt_index == prompt).flatten()
            self.guider.active_prompt = int(prompt)
            out[rows] = self.model_k(x[rows], sigma[rows], **extra_args)
        self.guider.active_prompt = 0
        return out


class DenoiserSampler(comfy.samplers.Sampler):
    """A Sampler that hands ComfyUI's prepared denoiser to `job` instead of sampling with it.

    job(denoiser, x, sigmas, extra_args=..., per_sample_args=..., chunk_size=...) gets x already noised
    as KSAMPLER does (model_sampling.noise_scaling); its return value is kept in `self.result`.
    """

    def __init__(self, job, prompt_index: torch.Tensor | None = None, chunk_size: int | None = None):
        self.job, self.prompt_index, self.chunk_size = job, prompt_index, chunk_size
        self.result = None

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        extra_args["denoise_mask"] = None  # training ignores inpainting masks
        model_k = comfy.samplers.KSamplerX0Inpaint(model_wrap, sigmas)
        model_k.latent_image = latent_image
        model_k.noise = noise
        model_sampling = model_wrap.inner_model.model_sampling
        x = model_sampling.noise_scaling(sigmas[0], noise, latent_image, self.max_denoise(model_wrap, sigmas))
        chunk_size = self.chunk_size or chunk_size_for(model_wrap, x)
        per_sample = None if self.prompt_index is None else {"prompt_index": self.prompt_index}
        self.result = self.job(PromptDispatcher(model_k, model_wrap), x, sigmas, extra_args=extra_args,
                               per_sample_args=per_sample, chunk_size=chunk_size)
        return noise


def chunk_size_for(guider, x) -> int:
    """Trajectories per model call so that one call (cond and uncond together) fits in free memory."""
    count = x.shape[0]
    rows_per_trajectory = 1 if math.isclose(guider.cfg, 1.0) else 2
    try:
        need = guider.inner_model.memory_required([rows_per_trajectory] + list(x.shape[1:]))
    except (AttributeError, NotImplementedError):  # a model without a memory estimate: no chunking
        return count
    free = free_memory(guider.model_patcher)
    return int(max(1, min(count, (0.8 * free) // max(1.0, float(need)))))


def free_memory(patcher) -> float:
    """Free memory on the patcher's load device, asked the way the host wants it asked.

    Newer ComfyUI has ModelPatcher.get_free_memory(device), which also counts what dynamic VRAM can give
    back and is what its own samplers call; it warns against model_management.get_free_memory from model
    code. Older hosts (0.3.75) lack the method: there model_management.get_free_memory is the query.
    """
    device = patcher.load_device
    query = getattr(patcher, "get_free_memory", None)
    if callable(query):
        return query(device)
    return comfy.model_management.get_free_memory(device)


def training_start(model, latent: dict, trajectories: int, seed: int):
    """(noise, latent) for the trajectories: ComfyUI's seeded noise; the latent's rows cycled."""
    samples = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    if samples.ndim != 4:
        raise ValueError(f"the PAS Trainer needs an image latent (batch, channels, height, width); got shape "
                         f"{tuple(samples.shape)}")
    rows = torch.arange(trajectories) % samples.shape[0]
    start = samples[rows]
    return comfy.sample.prepare_noise(start, seed), start


def run_with_model(model, positives: list, negative, cfg: float, latent: dict, sigmas: torch.Tensor,
                   trajectories: int, seed: int, job, chunk_size: int | None = None):
    """Run `job` (see DenoiserSampler) on ComfyUI's prepared model; trajectory j uses positives[j % P]."""
    noise, start = training_start(model, latent, trajectories, seed)
    prompt_index = torch.arange(trajectories) % len(positives)
    sampler = DenoiserSampler(job, prompt_index, chunk_size)
    guider = MultiPromptGuider(model)
    guider.set_prompts(positives, negative)
    guider.set_cfg(cfg)
    guider.sample(noise, start, sampler, sigmas, denoise_mask=None, callback=None, disable_pbar=True, seed=seed)
    return sampler.result


def scheduler_grids(model, scheduler: str, step_counts: list[int], denoise: float = 1.0) -> list[torch.Tensor]:
    """One grid per step count, each exactly as BasicScheduler computes it: for denoise < 1 the last
    steps + 1 sigmas of a schedule of int(steps / denoise) steps."""
    if not 0.0 < denoise <= 1.0:
        raise ValueError(f"denoise must lie in (0, 1], got {denoise}")
    model_sampling = model.get_model_object("model_sampling")
    grids = []
    for steps in step_counts:
        total = steps if denoise >= 1.0 else int(steps / denoise)
        grids.append(comfy.samplers.calculate_sigmas(model_sampling, scheduler, total).cpu()[-(steps + 1):])
    return grids


def progress_bar():
    """A progress(done, total) callback drawing one ComfyUI ProgressBar."""
    bar = comfy.utils.ProgressBar(1)
    return lambda done, total: bar.update_absolute(done, total)


def train(model, positives: list, negative, cfg: float, latent: dict, grids: list[torch.Tensor], *,
          trajectories: int, seed: int, learn_steps: int | None = None, solver: str = "euler",
          max_order: int | None = None, metadata: dict | None = None, **options):
    """PAS teacher and search inside ComfyUI on one or several grids (one teacher run), or on a schedule learned
    first from the same teacher (learn_steps: comfyui_pas.learn_and_train). One ProgressBar covers the run.
    options: settings= / teacher= objects or their fields (comfyui_pas.settings.training_settings).
    Returns (coords, report)."""
    progress = progress_bar()
    settings, teacher = training_settings(**options)
    solver_args = {"solver": solver, "max_order": max_order, "settings": settings, "metadata": metadata}

    def job(denoiser, x, sigmas, **model_args):
        denoiser = Denoiser(denoiser, **model_args)
        if not learn_steps:
            return train_pas(denoiser, x, grids if len(grids) > 1 else grids[0], teacher=teacher, progress=progress,
                             **solver_args)
        model_sampling = model.get_model_object("model_sampling")
        span = ScheduleSettings(sigma_min=float(model_sampling.sigma_min), sigma_max=float(model_sampling.sigma_max),
                                append_zero=True)
        return learn_and_train(denoiser, x, learn_steps, schedule=span, progress=progress, **solver_args)

    return run_with_model(model, positives, negative, cfg, latent, grids[0], trajectories, seed, job)


def train_by_start(model, positives: list, negative, cfg: float, latent: dict, grids: list[torch.Tensor], **options):
    """train() once per group of grids that share their first sigma, merged into one file: a teacher run
    starts every trajectory at one sigma, and with denoise < 1 each step count starts at its own."""
    groups: dict[float, list[torch.Tensor]] = {}
    for grid in grids:
        groups.setdefault(float(grid[0]), []).append(grid)
    if len(groups) == 1:
        return train(model, positives, negative, cfg, latent, grids, **options)
    runs = [train(model, positives, negative, cfg, latent, group, **options) for group in groups.values()]
    first, report = runs[0][0], dict(runs[0][1])
    entries = [grid for coords, _ in runs for grid in coords.grids]
    coords = PASCoordinates(entries[0].sigmas, first.solver, first.max_order, first.n_basis, entries[0].steps,
                            entries[0].coordinates, first.parameterization, first.metadata, entries[1:],
                            log_offsets=entries[0].log_offsets)
    report["grids"] = [grid for _, run in runs for grid in run["grids"]]
    for key in ("model_calls", "teacher_seconds", "search_seconds"):
        report[key] = sum(run[key] for _, run in runs)
    return coords, report


def describe_model(model) -> dict:
    """What the file records about the model it was trained with (and the sampler compares)."""
    inner = model.model
    model_type = getattr(inner.model_type, "name", str(inner.model_type))
    return {"model_class": type(inner.model_config).__name__, "model_type": model_type,
            "latent_channels": int(getattr(inner.latent_format, "latent_channels", 0)),
            "model_fingerprint": model_fingerprint(model)}


FINGERPRINT_TENSORS, FINGERPRINT_VALUES = 16, 1024


def model_fingerprint(model) -> str:
    """'w16:<16 hex>': SHA-256 of a fixed subset of the base weights (16 tensors spread over the sorted
    state-dict keys, up to 1,024 evenly strided values of each, as float32), computed once per loaded model
    and kept on it; clones (LoRAs, patches) share it. ComfyUI 0.3.x keeps no hash of a loaded model."""
    inner = model.model
    cached = getattr(inner, "_pas_fingerprint", None)
    if cached:
        return cached
    import hashlib

    weights = inner.state_dict()
    keys = sorted(weights)
    picked = sorted({keys[round(i * (len(keys) - 1) / (FINGERPRINT_TENSORS - 1))]
                     for i in range(FINGERPRINT_TENSORS)}) if keys else []
    digest = hashlib.sha256()
    for key in picked:
        backup = getattr(model, "backup", {}).get(key)  # weights patched in place keep their original here
        values = (backup.weight if backup is not None else weights[key]).detach().flatten()
        stride = max(1, values.numel() // FINGERPRINT_VALUES)
        sample = values[::stride][:FINGERPRINT_VALUES].to("cpu", torch.float32).contiguous()
        digest.update(f"{key}:{tuple(weights[key].shape)}:".encode())
        digest.update(sample.numpy().tobytes())
    inner._pas_fingerprint = f"w{FINGERPRINT_TENSORS}:{digest.hexdigest()[:16]}"
    return inner._pas_fingerprint


# ---- sampling with checks -------------------------------------------------------------------------
UNCOVERED = ("error", "plain solver + warning")


def notify(text: str) -> None:
    """A warning in the log and on the node that is running (ComfyUI's progress text), where a server runs."""
    log.warning("%s", text)
    try:
        from comfy_execution.utils import get_executing_context
        from server import PromptServer

        context, server = get_executing_context(), getattr(PromptServer, "instance", None)
        if context is not None and server is not None:
            server.send_progress_text(text, context.node_id)
    except Exception as error:  # a host without these: the log has it
        log.debug("PAS: no progress text (%s)", error)


def sampled_model(model_k):
    """The ModelPatcher behind KSAMPLER's denoiser (KSamplerX0Inpaint -> guider), or None."""
    return getattr(getattr(model_k, "inner_model", None), "model_patcher", None)


def sample_checked(model, x, sigmas, extra_args=None, callback=None, disable=None, *, coords=None, source="",
                   uncovered=UNCOVERED[0], **options):
    """sample_pas after the PAS Sampler's checks: the model against the one trained on (refused on another
    type or latent channel count, a warning on another fingerprint), and the grid (error or plain solver)."""
    if coords is not None:
        patcher = sampled_model(model)
        try:
            warnings = coords.check_model(describe_model(patcher)) if patcher is not None else []
        except ValueError as error:
            raise ValueError(f"PAS Sampler ({source}): {error}") from None
        for warning in warnings:
            notify(f"PAS Sampler ({source}): {warning}")
        if not coords.covers(sigmas):
            message = coords.uncovered_message(sigmas)
            if uncovered == UNCOVERED[0]:
                raise ValueError(f"PAS Sampler ({source}): {message}")
            notify(f"PAS Sampler ({source}): sampled with plain {options.get('solver')} (no PAS): {message}")
            coords = None
    return sample_pas(model, x, sigmas, extra_args, callback, disable, coords=coords, **options)


def timestamp() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
