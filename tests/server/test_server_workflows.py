"""Over HTTP: the server lists the PAS nodes; API-format graphs train, save and sample with PAS."""
from __future__ import annotations

import asyncio
import copy
import json
import struct
import uuid

import aiohttp
import pytest

SAVED = "http/tiny_00001.safetensors"

BASE_GRAPH = {
    "model": {"class_type": "PASTest_TinyModel", "inputs": {"kind": "eps", "seed": 1234}},
    "pos": {"class_type": "PASTest_RandomConditioning", "inputs": {"seed": 1}},
    "neg": {"class_type": "PASTest_RandomConditioning", "inputs": {"seed": 2}},
    "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    "sigmas": {"class_type": "BasicScheduler",
               "inputs": {"model": ["model", 0], "scheduler": "karras", "steps": 5, "denoise": 1.0}},
    "sample": {"class_type": "SamplerCustom",
               "inputs": {"model": ["model", 0], "add_noise": True, "noise_seed": 42, "cfg": 3.0,
                          "positive": ["pos", 0], "negative": ["neg", 0], "sampler": ["pas", 0],
                          "sigmas": ["sigmas", 0], "latent_image": ["latent", 0]}},
    "digest": {"class_type": "PASTest_LatentDigest", "inputs": {"samples": ["sample", 0]}},
}


def train_graph():
    graph = copy.deepcopy(BASE_GRAPH)
    graph["train"] = {"class_type": "PAS_Trainer", "inputs": {
        "model": ["model", 0], "positive": ["pos", 0], "negative": ["neg", 0], "cfg": 3.0,
        "latent": ["latent", 0], "sigmas": ["sigmas", 0], "solver": "euler", "max_order": 3,
        "trajectories": 8, "seed": 5, "teacher_nfe": 16, "n_basis": 2, "loss": "l1", "tolerance": 0.01,
        "filename_prefix": "http/tiny"}}
    graph["pas"] = {"class_type": "PAS_Sampler", "inputs": {
        "solver": "euler", "max_order": 3, "coordinates": "none", "pas_coords": ["train", 0]}}
    graph["curve"] = {"class_type": "PreviewImage", "inputs": {"images": ["train", 1]}}
    return graph


def dropdown_graph(steps=5):
    graph = copy.deepcopy(BASE_GRAPH)
    graph["sigmas"]["inputs"]["steps"] = steps
    graph["pas"] = {"class_type": "PAS_Sampler", "inputs": {"solver": "euler", "max_order": 3, "coordinates": SAVED}}
    return graph


def combo_options(spec):
    """Options of a combo input in /object_info (V3 sends ["COMBO", {"options": [...]}])."""
    return spec[1]["options"] if spec[0] == "COMBO" else spec[0]


def ui_text(entry, node):
    return entry["outputs"][node]["text"][0]


def assert_success(entry):
    status = entry["status"]
    assert status["status_str"] == "success", status["messages"]


def test_object_info_lists_the_pas_nodes(comfy_server):
    info = comfy_server.get("/object_info")
    for node_id in ("PAS_Sampler", "PAS_Trainer", "PAS_LoadCoordinates", "PAS_CoordinatesText"):
        assert node_id in info, f"{node_id} missing from /object_info"
        # beside the host's own sampler folder (sampling/custom_sampling/pas on 0.3.x)
        assert info[node_id]["category"] == info["KSamplerSelect"]["category"].rsplit("/", 1)[0] + "/pas"
    sampler = info["PAS_Sampler"]
    assert sampler["output"] == ["SAMPLER"]
    assert combo_options(sampler["input"]["required"]["coordinates"])[0] == "none"
    assert sampler["input"]["optional"]["pas_coords"][0] == "PAS_COORDS"
    trainer = info["PAS_Trainer"]
    assert trainer["output"] == ["PAS_COORDS", "IMAGE", "SIGMAS", "STRING"]
    assert trainer["output_node"] is True
    assert {"model", "positive", "negative", "cfg", "latent", "solver"} <= set(trainer["input"]["required"])
    assert {"sigmas", "clip", "prompts", "grid", "scheduler", "steps", "denoise"} <= set(trainer["input"]["optional"])
    solvers = combo_options(sampler["input"]["required"]["solver"])
    assert solvers == ["euler", "ipndm", "ipndm_v", "deis", "dpmpp_2m", "res_multistep"]
    assert info["PAS_LoadCoordinates"]["output"] == ["PAS_COORDS", "SIGMAS", "STRING"]
    assert info["PAS_CoordinatesText"]["output"] == ["PAS_COORDS", "SIGMAS"]
    assert combo_options(sampler["input"]["optional"]["if_uncovered"]) == ["error", "plain solver + warning"]


@pytest.fixture(scope="module")
def trained_run(comfy_server):
    entry = comfy_server.run(train_graph())
    assert_success(entry)
    return entry


def test_train_save_and_sample(comfy_server, trained_run):
    assert (comfy_server.base / "models" / "pas" / SAVED).is_file()
    assert SAVED.split("/")[-1] in ui_text(trained_run, "train")
    assert ui_text(trained_run, "digest").startswith("shape=(1, 4, 8, 8)")
    assert trained_run["outputs"]["curve"]["images"], "the error-curve image was not produced"


def test_saved_file_from_dropdown(comfy_server, trained_run):
    info = comfy_server.get("/object_info/PAS_Sampler")["PAS_Sampler"]
    options = combo_options(info["input"]["required"]["coordinates"])
    assert SAVED in options
    entry = comfy_server.run(dropdown_graph())
    assert_success(entry)
    # The file gives exactly what the trainer's PAS_COORDS output gave in the first graph.
    assert ui_text(entry, "digest") == ui_text(trained_run, "digest")


def test_saved_file_rejects_other_steps(comfy_server, trained_run):
    entry = comfy_server.run(dropdown_graph(steps=7))
    status = entry["status"]
    assert status["status_str"] == "error"
    error = next(data for kind, data in status["messages"] if kind == "execution_error")
    assert "trained for 5 steps of euler" in error["exception_message"]
    assert "7 steps" in error["exception_message"]


TEXT_EVENT = 3  # ComfyUI's BinaryEventTypes.TEXT: the progress text a node shows


async def run_listening(server, graph: dict) -> tuple[str, list[tuple[str, str]]]:
    """Queue `graph` as a websocket client does; (prompt id, [(node id, text)] of the TEXT events) once it ends."""
    client = uuid.uuid4().hex
    texts = []
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"ws://127.0.0.1:{server.port}/ws?clientId={client}") as socket:
            async with session.post(f"{server.url}/prompt", json={"prompt": graph, "client_id": client}) as response:
                prompt_id = (await response.json())["prompt_id"]
            async for message in socket:
                if message.type == aiohttp.WSMsgType.BINARY and struct.unpack(">I", message.data[:4])[0] == TEXT_EVENT:
                    size = struct.unpack(">I", message.data[4:8])[0]
                    texts.append((message.data[8:8 + size].decode(), message.data[8 + size:].decode()))
                elif message.type == aiohttp.WSMsgType.TEXT:
                    event = json.loads(message.data)
                    if event["type"] in ("execution_success", "execution_error") and \
                            event["data"].get("prompt_id") == prompt_id:
                        break
    return prompt_id, texts


def test_uncovered_steps_can_sample_plain_with_a_warning_on_the_node(comfy_server, trained_run):
    """if_uncovered 'plain solver + warning': the queue goes on, the sampling node shows the warning."""
    graph = dropdown_graph(steps=7)
    graph["pas"]["inputs"]["if_uncovered"] = "plain solver + warning"
    prompt_id, texts = asyncio.run(asyncio.wait_for(run_listening(comfy_server, graph), timeout=300))
    entry = comfy_server.wait_history(prompt_id, timeout=60)
    assert_success(entry)
    warnings = [text for node, text in texts if node == "sample"]
    assert any("sampled with plain euler (no PAS)" in text and "covers 5 steps" in text for text in warnings), texts
    plain = dropdown_graph(steps=7)
    plain["pas"]["inputs"]["coordinates"] = "none"
    assert ui_text(entry, "digest") == ui_text(comfy_server.run(plain), "digest")
