"""Test-only ComfyUI node pack: tiny random models and conditioning, so server tests need no weights.

Linked into a test server's custom_nodes/ next to the PAS pack; never shipped.
"""
from __future__ import annotations

import torch
from comfy_api.latest import ComfyExtension, io, ui

from . import tiny

CATEGORY = "testing/pas"


class TinyModel(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PASTest_TinyModel", display_name="PAS Test Tiny Model", category=CATEGORY,
            inputs=[io.Combo.Input("kind", options=list(tiny.MODEL_TYPES), tooltip="Prediction type."),
                    io.Int.Input("seed", default=1234, min=0, max=2**31, tooltip="Weight seed.")],
            outputs=[io.Model.Output()])

    @classmethod
    def execute(cls, kind, seed) -> io.NodeOutput:
        return io.NodeOutput(tiny.make_model(kind, seed))


class RandomConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PASTest_RandomConditioning", display_name="PAS Test Random Conditioning", category=CATEGORY,
            inputs=[io.Int.Input("seed", default=0, min=0, max=2**31, tooltip="Conditioning seed.")],
            outputs=[io.Conditioning.Output()])

    @classmethod
    def execute(cls, seed) -> io.NodeOutput:
        return io.NodeOutput(tiny.random_conditioning(seed))


class LatentDigest(io.ComfyNode):
    """Output node: shape and a few statistics of a latent as UI text (visible in /history)."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PASTest_LatentDigest", display_name="PAS Test Latent Digest", category=CATEGORY,
            is_output_node=True,
            inputs=[io.Latent.Input("samples", tooltip="Latent to describe.")], outputs=[])

    @classmethod
    def execute(cls, samples) -> io.NodeOutput:
        x = samples["samples"].to(torch.float64)
        text = f"shape={tuple(x.shape)} mean={x.mean().item():.9g} std={x.std().item():.9g}"
        return io.NodeOutput(ui=ui.PreviewText(text))


class TestExtension(ComfyExtension):
    async def get_node_list(self):
        return [TinyModel, RandomConditioning, LatentDigest]


async def comfy_entrypoint() -> TestExtension:
    return TestExtension()
