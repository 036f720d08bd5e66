"""The bundled Fashion-MNIST demo model as ComfyUI nodes: a real MODEL, its latent, and a decoder to IMAGE.

The demo model (train_tools/edm_unet.py) is an unconditional EDM network on 1x32x32 images in [-1, 1]
(28x28 Fashion-MNIST padded with the background value -1). Its "latent" is the image itself. ComfyUI's
EDM model sampling (comfy/model_sampling.py: EPS.calculate_input, ModelSamplingContinuousEDM.timestep,
EDM.calculate_denoised) applies exactly the preconditioning of edm_unet.EDMDenoiser:
c_in * x in, c_noise = ln(sigma) / 4 as the timestep, c_skip * x + c_out * F out. So the diffusion
model handed to ComfyUI is the raw network F alone, and the preconditioning is applied once.
"""
from __future__ import annotations

import json
import logging
import os

import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.supported_models_base
import torch
from comfy_api.latest import io

from .nodes import CATEGORY as PAS_CATEGORY
from .train_tools import demo_model
from .train_tools.edm_unet import UNet, UNetConfig

log = logging.getLogger("comfyui_pas")

CATEGORY = PAS_CATEGORY + "/demo"
WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_tools", "models")
DEFAULT_WEIGHTS = "fashion_mnist_edm.safetensors"
IMAGE_SIZE, MODEL_SIZE = 28, 32
PAD = (MODEL_SIZE - IMAGE_SIZE) // 2
SIGMA_MIN, SIGMA_MAX, SIGMA_DATA = 0.002, 80.0, 0.5


class DemoLatentFormat(comfy.latent_formats.LatentFormat):
    """One channel, no scaling: the latent is the [-1, 1] image; previews show it in grey."""

    latent_channels = 1
    scale_factor = 1.0
    latent_rgb_factors = [[1.0, 1.0, 1.0]]


class DemoModelConfig(comfy.supported_models_base.BASE):
    """EDM sampling settings of the demo model (Karras et al. 2022: sigma in [0.002, 80], sigma_data 0.5)."""

    unet_config = {}
    unet_extra_config = {}
    latent_format = DemoLatentFormat
    sampling_settings = {"sigma_min": SIGMA_MIN, "sigma_max": SIGMA_MAX, "sigma_data": SIGMA_DATA}
    supported_inference_dtypes = [torch.float32]
    memory_usage_factor = 1.0


class DemoDiffusionModel(torch.nn.Module):
    """ComfyUI's diffusion_model(xc, t, context=..., ...) around the raw network F(c_in x; c_noise).

    BaseModel has already divided x by sqrt(sigma^2 + sigma_data^2) and turned sigma into
    t = ln(sigma) / 4; it applies c_skip and c_out to the returned F itself. The parameter names
    (unet.*) are those of edm_unet.EDMDenoiser, so the demo weights load unchanged.
    """

    def __init__(self, device=None, operations=None, dtype=None, **config):
        super().__init__()
        self.dtype = dtype or torch.float32
        self.unet = UNet(UNetConfig.from_dict(config))
        self.to(device=device, dtype=self.dtype)

    def forward(self, x, timesteps, context=None, control=None, transformer_options=None, **kwargs):
        return self.unet(x, timesteps)


def weight_files() -> list[str]:
    if not os.path.isdir(WEIGHTS_DIR):
        return []
    return sorted(name for name in os.listdir(WEIGHTS_DIR) if name.endswith(".safetensors"))


def weights_path(name: str) -> str:
    path = os.path.join(WEIGHTS_DIR, os.path.basename(name))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Demo model weights {name!r} not found in {WEIGHTS_DIR}; they ship with the "
                                "pack (retrain them with `make train-model`).")
    return path


def read_weights(path: str) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors and the UNet config stored in a demo-model file (train_tools/train_model.py writes them)."""
    tensors, metadata = demo_model.read_weights(path)
    if "model_config" not in metadata:
        raise ValueError(f"{path} has no 'model_config' metadata: not a PAS demo model file.")
    config = json.loads(metadata["model_config"])
    if config.get("img_channels", 1) != 1 or config.get("img_size", MODEL_SIZE) != MODEL_SIZE:
        raise ValueError(f"{path}: the demo nodes expect a 1x{MODEL_SIZE}x{MODEL_SIZE} model, got {config}.")
    if float(config.get("sigma_data", SIGMA_DATA)) != SIGMA_DATA:
        raise ValueError(f"{path}: sigma_data must be {SIGMA_DATA} (got {config['sigma_data']}).")
    return tensors, config


def load_demo_model_patcher(name: str = DEFAULT_WEIGHTS) -> comfy.model_patcher.ModelPatcher:
    """A ComfyUI MODEL: BaseModel(EDM model sampling) whose diffusion_model is the demo network."""
    tensors, config = read_weights(weights_path(name))
    offload = comfy.model_management.unet_offload_device()
    model = comfy.model_base.BaseModel(DemoModelConfig(config), model_type=comfy.model_base.ModelType.EDM,
                                       device=offload, unet_model=DemoDiffusionModel)
    model.diffusion_model.load_state_dict(tensors, strict=True)
    model.diffusion_model.requires_grad_(False)
    log.info("PAS demo model %s: %d parameters", name, sum(p.numel() for p in model.diffusion_model.parameters()))
    return comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(),
                                            offload_device=offload)


def empty_conditioning() -> list:
    """The demo model is unconditional: one empty cross-attention entry satisfies CFGGuider (ignored)."""
    return [[torch.zeros(1, 1, 1), {}]]


class PASDemoModel(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PAS_DemoModel",
            display_name="PAS Demo Model (Fashion-MNIST)",
            category=CATEGORY,
            description="The small unconditional Fashion-MNIST diffusion model bundled with the pack, as a "
                        "ComfyUI MODEL with EDM sampling (sigma 0.002-80). Its latent is the 1x32x32 image: use "
                        "PAS Demo Latent and PAS Demo Decode. Fast on CPU; for trying PAS without a checkpoint.",
            inputs=[io.Combo.Input("weights", options=weight_files(), default=DEFAULT_WEIGHTS,
                                   tooltip="Demo model weights shipped in the pack's train_tools/models/ folder.")],
            outputs=[io.Model.Output(display_name="model", tooltip="The demo model (EDM, 1-channel latent)."),
                     io.Conditioning.Output(display_name="conditioning",
                                            tooltip="Empty conditioning for this unconditional model: connect it "
                                                    "to both positive and negative and use CFG 1.0.")],
        )

    @classmethod
    def fingerprint_inputs(cls, weights, **_):
        path = os.path.join(WEIGHTS_DIR, os.path.basename(weights))
        if not os.path.isfile(path):
            return weights
        status = os.stat(path)
        return f"{weights}:{status.st_mtime_ns}:{status.st_size}"

    @classmethod
    def execute(cls, weights) -> io.NodeOutput:
        return io.NodeOutput(load_demo_model_patcher(weights), empty_conditioning())


class PASDemoLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PAS_DemoLatent",
            display_name="PAS Demo Latent",
            category=CATEGORY,
            description="An empty batch of 1x32x32 latents for the PAS Demo Model (the noise is added by the "
                        "sampler).",
            inputs=[io.Int.Input("batch_size", default=8, min=1, max=256,
                                 tooltip="Number of images sampled at once.")],
            outputs=[io.Latent.Output(display_name="latent")],
        )

    @classmethod
    def execute(cls, batch_size) -> io.NodeOutput:
        samples = torch.zeros(batch_size, 1, MODEL_SIZE, MODEL_SIZE,
                              device=comfy.model_management.intermediate_device())
        return io.NodeOutput({"samples": samples})


class PASDemoDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PAS_DemoDecode",
            display_name="PAS Demo Decode",
            category=CATEGORY,
            description="Turns PAS Demo Model latents (images in [-1, 1]) into RGB IMAGEs for Preview/Save "
                        "Image: crops the 28x28 picture out of the 32x32 padding and enlarges it.",
            inputs=[io.Latent.Input("samples", tooltip="Latents sampled with the PAS Demo Model."),
                    io.Int.Input("zoom", default=4, min=1, max=16,
                                 tooltip="Nearest-neighbour enlargement of the 28x28 images, for viewing.")],
            outputs=[io.Image.Output(display_name="image")],
        )

    @classmethod
    def execute(cls, samples, zoom) -> io.NodeOutput:
        x = samples["samples"]
        if x.ndim != 4 or x.shape[1] != 1 or tuple(x.shape[2:]) != (MODEL_SIZE, MODEL_SIZE):
            raise ValueError(f"PAS Demo Decode expects PAS Demo Model latents of shape (B, 1, {MODEL_SIZE}, "
                             f"{MODEL_SIZE}), got {tuple(x.shape)}.")
        image = x[:, :, PAD:PAD + IMAGE_SIZE, PAD:PAD + IMAGE_SIZE].float().cpu()
        image = ((image.clamp(-1.0, 1.0) + 1.0) / 2.0)
        if zoom > 1:
            image = torch.nn.functional.interpolate(image, scale_factor=zoom, mode="nearest")
        return io.NodeOutput(image.movedim(1, -1).repeat(1, 1, 1, 3).contiguous())


DEMO_NODES = [PASDemoModel, PASDemoLatent, PASDemoDecode]
