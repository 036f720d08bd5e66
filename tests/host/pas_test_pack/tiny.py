"""Tiny, randomly initialised but real ComfyUI models for tests: no downloaded weights.

The UNet has the SD1.x topology shrunk to about one million parameters and sits in a real
ModelPatcher, so ComfyUI's sampling machinery (model_sampling, CFG, patches) runs unchanged.
The text encoder is ComfyUI's own SD1 CLIP class with a two-layer, 32-wide configuration and the
real SD1 tokenizer that ships with ComfyUI.
"""
from __future__ import annotations

import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.sd1_clip
import comfy.supported_models
import torch

CONTEXT_DIM = 32

TINY_UNET = {
    "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 32,
    "num_res_blocks": [1, 1], "channel_mult": [1, 2], "transformer_depth": [1, 1],
    "transformer_depth_output": [1, 1, 1, 1], "transformer_depth_middle": 1, "context_dim": CONTEXT_DIM,
    "use_spatial_transformer": True, "use_linear_in_transformer": False, "legacy": False,
    "adm_in_channels": None, "use_checkpoint": False, "use_temporal_attention": False,
    "use_temporal_resblock": False, "dtype": torch.float32,
}

MODEL_TYPES = {
    "eps": (comfy.model_base.ModelType.EPS, None),
    "v_prediction": (comfy.model_base.ModelType.V_PREDICTION, None),
    "flow": (comfy.model_base.ModelType.FLOW, {"shift": 3.0}),
}


def fill_fan_in(module: torch.nn.Module, seed: int) -> None:
    """comfy.ops layers start as torch.empty: give them fan-in scaled random weights (not near-identity)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.ndim >= 2:
                param.copy_(torch.randn(param.shape, generator=generator) / param[0].numel() ** 0.5)
            elif name.endswith("weight"):
                param.fill_(1.0)
            else:
                param.zero_()


def make_model(kind: str = "eps", seed: int = 1234, unet_config: dict | None = None, latent_format=None):
    """A ModelPatcher around an SD1.x-topology UNet with random weights; kind: eps, v_prediction, flow.
    latent_format (a comfy.latent_formats instance) replaces SD 1.5's, e.g. for another channel count."""
    model_type, sampling_settings = MODEL_TYPES[kind]
    config = comfy.supported_models.SD15(dict(unet_config or TINY_UNET))
    if latent_format is not None:
        config.latent_format = latent_format
    if sampling_settings:
        config.sampling_settings = {**config.sampling_settings, **sampling_settings}
    device = comfy.model_management.get_torch_device()
    model = comfy.model_base.BaseModel(config, model_type=model_type, device=device)
    fill_fan_in(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=device,
                                            offload_device=comfy.model_management.unet_offload_device())


def random_conditioning(seed: int, tokens: int = 4, dim: int = CONTEXT_DIM):
    """CONDITIONING: [[cross_attn (1, tokens, dim), {}]]."""
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, dim, generator=generator), {}]]


TINY_CLIP_CONFIG = {
    "hidden_act": "quick_gelu", "hidden_size": CONTEXT_DIM, "intermediate_size": 64,
    "num_attention_heads": 2, "num_hidden_layers": 2, "max_position_embeddings": 77,
    "vocab_size": 49408, "layer_norm_eps": 1e-5, "projection_dim": CONTEXT_DIM,
    "bos_token_id": 0, "eos_token_id": 49407, "pad_token_id": 1,
}


class TinyClipL(comfy.sd1_clip.SDClipModel):
    """ComfyUI's SD1 CLIP-L text encoder class, shrunk to 32 wide and two layers."""

    def __init__(self, device="cpu", dtype=None, model_options={}):  # noqa: B006 (ComfyUI's signature)
        super().__init__(device=device, dtype=dtype, model_options=model_options, return_projected_pooled=False,
                         textmodel_json_config=dict(TINY_CLIP_CONFIG))


class _ClipTarget:
    params: dict = {}
    clip = comfy.sd1_clip.SD1ClipModel
    tokenizer = comfy.sd1_clip.SD1Tokenizer


def make_clip(seed: int = 99):
    """A real comfy.sd.CLIP (SD1 tokenizer, tiny random text transformer); context width 32."""
    clip = comfy.sd.CLIP(target=_ClipTarget(), model_options={"clip_l_class": TinyClipL})
    fill_fan_in(clip.cond_stage_model, seed)
    return clip


# A Flux-style (guidance-distilled, rectified-flow) DiT with ComfyUI's own Flux classes, shrunk: 16 latent
# channels, 2x2 patches, one double and one single block, 32 wide, a guidance embedding.
TINY_FLUX = {
    "image_model": "flux", "guidance_embed": True, "in_channels": 16, "out_channels": 16, "vec_in_dim": 16,
    "context_in_dim": CONTEXT_DIM, "hidden_size": 32, "mlp_ratio": 2.0, "num_heads": 2, "depth": 1,
    "depth_single_blocks": 1, "axes_dim": [4, 6, 6], "theta": 10000, "patch_size": 2, "qkv_bias": True,
    "dtype": torch.float32,
}
FLUX_POOLED_DIM = TINY_FLUX["vec_in_dim"]


def make_flux(seed: int = 4321):
    """A ModelPatcher around comfy.model_base.Flux (model type FLUX, latent format Flux) with random weights."""
    config = comfy.supported_models.Flux(dict(TINY_FLUX))
    device = comfy.model_management.get_torch_device()
    model = comfy.model_base.Flux(config, device=device)
    fill_fan_in(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=device,
                                            offload_device=comfy.model_management.unet_offload_device())


def flux_conditioning(seed: int, guidance: float | None = 3.5, tokens: int = 4):
    """CONDITIONING as a Flux text encoder and FluxGuidance give it: T5-like tokens, a pooled vector, guidance."""
    generator = torch.Generator().manual_seed(seed)
    extra = {"pooled_output": torch.randn(1, FLUX_POOLED_DIM, generator=generator)}
    if guidance is not None:
        extra["guidance"] = guidance
    return [[torch.randn(1, tokens, CONTEXT_DIM, generator=generator), extra]]
