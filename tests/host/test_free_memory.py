"""The trainer's chunk size asks the host for free memory the way the host wants it asked.

Newer ComfyUI has `ModelPatcher.get_free_memory(device)` (it adds what dynamic VRAM can free, and its
own samplers call it); ComfyUI 0.3.75, the host installed here, has no such method, so
`comfy.model_management.get_free_memory(device)` is the query there. The newer branch is covered by
adding the method to a clone of a real tiny ModelPatcher, which is as close to a newer host as this
0.3.75 tree allows; the fallback branch runs on the real ModelPatcher as 0.3.75 ships it.
"""
from __future__ import annotations

import comfy.model_management
import comfy.model_patcher
import comfy.samplers
import pytest
import torch

CFG = 3.0
SHAPE = (8, 4, 8, 8)  # eight trajectories of a 64x64 SD1.x latent


def guider_for(patcher, cfg=CFG):
    """A CFGGuider in the state DenoiserSampler sees it: inner_model is what CFGGuider.sample sets."""
    guider = comfy.samplers.CFGGuider(patcher)
    guider.set_cfg(cfg)
    guider.inner_model = patcher.model
    return guider


def need_per_trajectory(patcher, cfg=CFG) -> float:
    rows = 1 if cfg == 1.0 else 2  # cond and uncond in one call
    return float(patcher.model.memory_required([rows, *SHAPE[1:]]))


def test_host_without_the_patcher_query_uses_model_management(bridge, tiny_models, monkeypatch):
    patcher = tiny_models("eps")
    if hasattr(comfy.model_patcher.ModelPatcher, "get_free_memory"):
        pytest.skip("this host's ModelPatcher has get_free_memory; the fallback is for older hosts")
    asked = []

    def model_management_free(device=None, torch_free_too=False):
        asked.append(device)
        return need_per_trajectory(patcher) * 3.5 / 0.8  # room for 3 trajectories per call

    monkeypatch.setattr(comfy.model_management, "get_free_memory", model_management_free)
    assert bridge.chunk_size_for(guider_for(patcher), torch.zeros(SHAPE)) == 3
    assert asked == [patcher.load_device]


def test_host_with_the_patcher_query_uses_it(bridge, tiny_models, monkeypatch):
    patcher = tiny_models("eps").clone()  # the method goes on this clone only
    asked = []

    def patcher_free(device):
        asked.append(device)
        return need_per_trajectory(patcher) * 5.5 / 0.8  # room for 5 trajectories per call

    def model_management_free(device=None, torch_free_too=False):
        raise AssertionError("model_management.get_free_memory was called although the patcher has a query")

    patcher.get_free_memory = patcher_free
    monkeypatch.setattr(comfy.model_management, "get_free_memory", model_management_free)
    assert bridge.chunk_size_for(guider_for(patcher), torch.zeros(SHAPE)) == 5
    assert asked == [patcher.load_device]
    assert bridge.chunk_size_for(guider_for(patcher, cfg=1.0), torch.zeros(SHAPE)) == 8  # uncond skipped: 11


def test_trainer_run_chunks_by_the_patcher_query(bridge, tiny_models, conditioning):
    """End to end through ComfyUI's CFGGuider.sample: the job gets the chunk size the patcher allows."""
    patcher = tiny_models("eps").clone()
    patcher.get_free_memory = lambda device: need_per_trajectory(patcher) * 2.5 / 0.8
    sigmas = torch.tensor([14.6, 3.0, 0.5, 0.0])
    latent = {"samples": torch.zeros(1, *SHAPE[1:])}

    def job(denoiser, x, sigmas, chunk_size=None, **_):
        return chunk_size

    got = bridge.run_with_model(patcher, [conditioning[0]], conditioning[1], CFG, latent, sigmas, SHAPE[0], 1, job)
    assert got == 2
    plain = bridge.run_with_model(tiny_models("eps"), [conditioning[0]], conditioning[1], CFG, latent, sigmas,
                                  SHAPE[0], 1, job)
    assert 1 <= plain <= SHAPE[0]  # the host's own query (a CPU box has room for all 8 here)
