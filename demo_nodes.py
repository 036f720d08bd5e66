"""The bundled Fashion-MNIST demo model as ComfyUI nodes: a real MODEL, its latent, and a decoder to IMAGE.

The demo model (demo_model/edm_unet.py) is an unconditional EDM network on 1x32x32 images in [-1, 1]
(28x28 Fashion-MNIST padded with the background value -1). Its "latent" is the image itself. ComfyUI's
EDM model sampling (comfy/model_sampling.py: EPS.calculate_input, ModelSamplingContinuousEDM.timestep,
EDM.calculate_denoised) applies exactly the preconditioning of edm_unet.EDMDenoiser:
c_in * x in, c_noise = ln(sigma) / 4 as the timestep, c_skip * x + c_out * F out. So the diffusion
model handed to ComfyUI is the raw network F alone, and the preconditioning is applied once.

The class-conditional model takes its class the way SD models take text: a conditioning entry carries the
label under CLASS_KEY (from PAS Demo Prompt, or CLIPTextEncode with the model's class-name encoder), and
DemoModel.extra_conds turns it into a CONDRegular `class_labels` tensor. ComfyUI then batches cond and
uncond rows into one network call with their own labels, as it batches SD's cross-attention.
"""
from __future__ import annotations

import json
import logging
import os

import comfy.conds
import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.supported_models_base
import torch
from comfy_api.latest import io

from . import demo_model
from .demo_model import CLASS_NAMES, WEIGHTS_DIR, UNet, UNetConfig, class_label, weight_files, weights_path
from .nodes import CATEGORY as PAS_CATEGORY

log = logging.getLogger("comfyui_pas")

CATEGORY = PAS_CATEGORY + "/demo"
DEFAULT_WEIGHTS = demo_model.CONDITIONAL_WEIGHTS.name
UNCONDITIONAL_WEIGHTS = demo_model.DEFAULT_WEIGHTS.name
CLASS_KEY = "pas_demo_class"  # the conditioning entry's class label: 0-9, or -1 for unconditional
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

    def forward(self, x, timesteps, context=None, control=None, transformer_options=None, class_labels=None,
                **kwargs):
        return self.unet(x, timesteps, class_labels)


class DemoModel(comfy.model_base.BaseModel):
    """BaseModel whose conditionings carry a class label (CLASS_KEY) instead of cross-attention."""

    def __init__(self, model_config, weights: str, **kwargs):
        super().__init__(model_config, **kwargs)
        self.weights = weights
        self.num_classes = int(model_config.unet_config.get("num_classes", 0))

    def extra_conds(self, **kwargs):
        """ComfyUI's conds plus `class_labels` (CONDRegular, one label per row) for the conditional net."""
        out = super().extra_conds(**kwargs)
        label = int(kwargs.get(CLASS_KEY, -1))
        if not self.num_classes:
            if label >= 0:
                raise ValueError(f"PAS Demo Model: {self.weights} is the unconditional model and takes no class "
                                 f"prompt (got {class_name(label)!r}); use an empty prompt, or the conditional "
                                 f"weights {DEFAULT_WEIGHTS}.")
            return out
        if not -1 <= label < self.num_classes:
            raise ValueError(f"PAS Demo Model: class label {label} is outside 0-{self.num_classes - 1}.")
        out["class_labels"] = comfy.conds.CONDRegular(torch.tensor([label], dtype=torch.long))
        return out


def read_weights(path: str) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors and the UNet config stored in a demo-model file (train_tools/training/train_model.py writes them)."""
    tensors, metadata = demo_model.read_weights(path)
    if "model_config" not in metadata:
        raise ValueError(f"{path} has no 'model_config' metadata: not a PAS demo model file.")
    config = json.loads(metadata["model_config"])
    if config.get("img_channels", 1) != 1 or config.get("img_size", MODEL_SIZE) != MODEL_SIZE:
        raise ValueError(f"{path}: the demo nodes expect a 1x{MODEL_SIZE}x{MODEL_SIZE} model, got {config}.")
    if float(config.get("sigma_data", SIGMA_DATA)) != SIGMA_DATA:
        raise ValueError(f"{path}: sigma_data must be {SIGMA_DATA} (got {config['sigma_data']}).")
    if int(config.get("num_classes", 0)) not in (0, len(CLASS_NAMES)):
        raise ValueError(f"{path}: a conditional demo model has the {len(CLASS_NAMES)} Fashion-MNIST classes, "
                         f"not {config['num_classes']}.")
    return tensors, config


def load_demo_model_patcher(name: str = DEFAULT_WEIGHTS) -> comfy.model_patcher.ModelPatcher:
    """A ComfyUI MODEL: BaseModel(EDM model sampling) whose diffusion_model is the demo network."""
    tensors, config = read_weights(weights_path(name))
    offload = comfy.model_management.unet_offload_device()
    model = DemoModel(DemoModelConfig(config), os.path.basename(name), model_type=comfy.model_base.ModelType.EDM,
                      device=offload, unet_model=DemoDiffusionModel)
    model.diffusion_model.load_state_dict(tensors, strict=True)
    model.diffusion_model.requires_grad_(False)
    log.info("PAS demo model %s: %d parameters", name, sum(p.numel() for p in model.diffusion_model.parameters()))
    return comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(),
                                            offload_device=offload)


def class_name(label: int) -> str:
    return CLASS_NAMES[label] if 0 <= label < len(CLASS_NAMES) else str(label)


def class_conditioning(label: int) -> list:
    """A CONDITIONING for one class label (-1: unconditional). The cross-attention tensor is a placeholder
    that CFGGuider and the conditioning nodes expect; the network reads only CLASS_KEY."""
    return [[torch.zeros(1, 1, 1), {"pooled_output": torch.zeros(1, 1), CLASS_KEY: int(label)}]]


class ClassTokenizer:
    """comfy.sd.CLIP's tokenizer for the demo model: a class name (or index) to its label, "" to -1.

    tokenizer_data["class_names"] lists the classes the model knows (none for the unconditional model)."""

    def __init__(self, embedding_directory=None, tokenizer_data=None):
        self.class_names = tuple((tokenizer_data or {}).get("class_names", ()))

    def tokenize_with_weights(self, text: str, return_word_ids=False, **kwargs):
        label = class_label(text, "PAS demo text encoder")
        if label >= 0 and not self.class_names:
            raise ValueError(f"PAS demo text encoder: the unconditional demo model takes no class prompt (got "
                             f"{text!r}); leave the prompt empty, or load {DEFAULT_WEIGHTS}.")
        return {CLASS_KEY: label}

    def state_dict(self):
        return {}


class ClassEncoder(torch.nn.Module):
    """comfy.sd.CLIP's text model for the demo model: tokens to class_conditioning's entry (no weights)."""

    def __init__(self, device=None, dtype=None, model_options=None, **kwargs):
        super().__init__()
        self.dtypes = {torch.float32}

    def encode_token_weights(self, tokens):
        cond, extra = class_conditioning(tokens[CLASS_KEY])[0]
        return cond, extra.pop("pooled_output"), extra

    def reset_clip_options(self):
        pass

    def set_clip_options(self, options):
        pass


class ClassEncoderTarget:
    params = {}
    clip = ClassEncoder
    tokenizer = ClassTokenizer


def class_text_encoder(num_classes: int) -> comfy.sd.CLIP:
    """A real comfy.sd.CLIP whose tokenizer knows the model's class names (CLIPTextEncode, PAS Trainer)."""
    names = list(CLASS_NAMES) if num_classes else []
    return comfy.sd.CLIP(target=ClassEncoderTarget(), tokenizer_data={"class_names": names})


CLASS_LIST = ", ".join(f"{label} {name}" for label, name in enumerate(CLASS_NAMES))


class PASDemoModel(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PAS_DemoModel",
            display_name="PAS Demo Model (Fashion-MNIST)",
            category=CATEGORY,
            description="The small Fashion-MNIST diffusion model bundled with the pack, as a ComfyUI MODEL with "
                        "EDM sampling (sigma 0.002-80). The default weights are class-conditional: prompt a class "
                        "with PAS Demo Prompt (or CLIPTextEncode on the clip output) and sample with CFG as with an "
                        "SD checkpoint. Its latent is the 1x32x32 image: use PAS Demo Latent and PAS Demo Decode. "
                        "Fast on CPU; for trying PAS without a checkpoint.",
            inputs=[io.Combo.Input("weights", options=weight_files(), default=DEFAULT_WEIGHTS,
                                   tooltip=f"Demo model weights from the pack's demo_model/weights/ folder: "
                                           f"{DEFAULT_WEIGHTS} is class-conditional (10 classes, CFG), "
                                           f"{UNCONDITIONAL_WEIGHTS} unconditional (empty prompts, CFG 1).")],
            outputs=[io.Model.Output(display_name="model", tooltip="The demo model (EDM, 1-channel latent)."),
                     io.Conditioning.Output(display_name="conditioning",
                                            tooltip="The unconditional (empty-prompt) conditioning: the negative "
                                                    "for CFG, or positive and negative at CFG 1."),
                     io.Clip.Output(display_name="clip",
                                    tooltip="Text encoder for class names (" + CLASS_LIST + "; empty = "
                                            "unconditional), for CLIPTextEncode and the PAS Trainer's prompt "
                                            "list.")],
        )

    @classmethod
    def fingerprint_inputs(cls, weights, **_):
        path = WEIGHTS_DIR / os.path.basename(weights)
        if not path.is_file():
            return weights
        status = os.stat(path)
        return f"{weights}:{status.st_mtime_ns}:{status.st_size}"

    @classmethod
    def execute(cls, weights) -> io.NodeOutput:
        model = load_demo_model_patcher(weights)
        return io.NodeOutput(model, class_conditioning(-1), class_text_encoder(model.model.num_classes))


class PASDemoPrompt(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PAS_DemoPrompt",
            display_name="PAS Demo Prompt (class)",
            category=CATEGORY,
            description="The prompt of the class-conditional PAS Demo Model: a Fashion-MNIST class name or index "
                        "in, CONDITIONING out. An empty prompt is the unconditional one (the usual negative).",
            inputs=[io.String.Input("text", default="Sneaker",
                                    tooltip="A class name or index (" + CLASS_LIST + "); case does not matter. "
                                            "Empty = unconditional.")],
            outputs=[io.Conditioning.Output(display_name="conditioning")],
        )

    @classmethod
    def execute(cls, text) -> io.NodeOutput:
        return io.NodeOutput(class_conditioning(class_label(text, "PAS Demo Prompt")))


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


DEMO_NODES = [PASDemoModel, PASDemoPrompt, PASDemoLatent, PASDemoDecode]
