"""Over HTTP: the class-conditional demo model with class prompts and CFG in API-format graphs."""
from __future__ import annotations

import pytest


def demo_graph(positive: dict, cfg: float, weights: str = "fashion_mnist_edm_cond.safetensors") -> dict:
    """KSampler on the demo model; `positive` is the positive prompt's node; the negative is the empty prompt."""
    return {
        "model": {"class_type": "PAS_DemoModel", "inputs": {"weights": weights}},
        "pos": positive,
        "neg": {"class_type": "PAS_DemoPrompt", "inputs": {"text": ""}},
        "latent": {"class_type": "PAS_DemoLatent", "inputs": {"batch_size": 2}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["model", 0], "seed": 3, "steps": 4, "cfg": cfg, "sampler_name": "euler",
            "scheduler": "karras", "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0],
            "denoise": 1.0}},
        "digest": {"class_type": "PASTest_LatentDigest", "inputs": {"samples": ["sample", 0]}},
    }


def prompt_node(text: str) -> dict:
    return {"class_type": "PAS_DemoPrompt", "inputs": {"text": text}}


def clip_node(text: str) -> dict:
    return {"class_type": "CLIPTextEncode", "inputs": {"clip": ["model", 2], "text": text}}


def digest(comfy_server, graph) -> str:
    """The sampled latent's shape, mean and std (PASTest_LatentDigest)."""
    entry = comfy_server.run(graph)
    assert entry["status"]["status_str"] == "success", entry["status"]["messages"]
    return entry["outputs"]["digest"]["text"][0]


def error_message(comfy_server, graph) -> str:
    status = comfy_server.run(graph)["status"]
    assert status["status_str"] == "error"
    return next(data for kind, data in status["messages"] if kind == "execution_error")["exception_message"]


def test_object_info_lists_the_demo_nodes(comfy_server):
    info = comfy_server.get("/object_info")
    assert info["PAS_DemoModel"]["output"] == ["MODEL", "CONDITIONING", "CLIP"]
    assert info["PAS_DemoPrompt"]["output"] == ["CONDITIONING"]
    weights = info["PAS_DemoModel"]["input"]["required"]["weights"]
    assert weights[1]["default"] == "fashion_mnist_edm_cond.safetensors"


def test_class_prompt_and_cfg_change_the_samples(comfy_server):
    sneaker = digest(comfy_server, demo_graph(prompt_node("Sneaker"), 3.0))
    assert sneaker.startswith("shape=(2, 1, 32, 32)")
    assert digest(comfy_server, demo_graph(clip_node("sneaker"), 3.0)) == sneaker  # the same conditioning
    assert digest(comfy_server, demo_graph(prompt_node("7"), 3.0)) == sneaker
    others = {digest(comfy_server, demo_graph(prompt_node("Sneaker"), 1.0)),
              digest(comfy_server, demo_graph(prompt_node("Bag"), 3.0)),
              digest(comfy_server, demo_graph(prompt_node(""), 3.0))}
    assert sneaker not in others and len(others) == 3


@pytest.mark.parametrize("positive, expected", [
    (prompt_node("Sneakr"), "PAS Demo Prompt: unknown Fashion-MNIST class 'Sneakr'"),
    (clip_node("cat"), "PAS demo text encoder: unknown Fashion-MNIST class 'cat'"),
])
def test_unknown_class_is_an_error_listing_the_classes(comfy_server, positive, expected):
    message = error_message(comfy_server, demo_graph(positive, 3.0))
    assert expected in message and "7 Sneaker" in message and "9 Ankle boot" in message


def test_unconditional_weights_refuse_a_class_and_take_the_empty_prompt(comfy_server):
    uncond = "fashion_mnist_edm.safetensors"
    assert digest(comfy_server, demo_graph(prompt_node(""), 1.0, uncond)).startswith("shape=(2, 1, 32, 32)")
    message = error_message(comfy_server, demo_graph(prompt_node("Bag"), 3.0, uncond))
    assert "fashion_mnist_edm.safetensors is the unconditional model and takes no class prompt" in message
