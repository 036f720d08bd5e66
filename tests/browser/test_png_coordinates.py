"""A PNG whose embedded workflow carries PAS coordinates as text reproduces its image with models/pas empty.

On both frontends (the `frontend` fixture): drive_png_roundtrip.mjs trains on the demo model in the page,
puts the trainer's text (as Preview as Text shows it) into a PAS Coordinates (text) widget, runs a
sampling graph that saves a PNG; here the coordinates file is removed (models/pas emptied) and the
server's caches cleared; then a fresh page opens the PNG through the frontend's file input and runs it.
Both PNGs must hold the same pixels, and the replay must really have sampled (nothing served from cache).
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from browser_driver import CHROMIUM, run_driver
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
from comfyui_pas.coords import PASCoordinates  # noqa: E402


def drive(node, server, tmp_path: Path, mode: str, png: Path | None = None) -> dict:
    config = {"url": server.url, "chromium": CHROMIUM, "mode": mode, "png": str(png) if png else None,
              "report": str(tmp_path / f"{mode}.json"), "runTimeoutMs": 300_000}
    return run_driver(node, "drive_png_roundtrip.mjs", config, tmp_path / f"{mode}_config.json", server, mode)


def fetch_png(server, image: dict, path: Path) -> Path:
    path.write_bytes(server.get_raw(f"/view?filename={image['filename']}&type={image['type']}"
                                    f"&subfolder={image['subfolder']}"))
    return path


def embedded_text(png: Path) -> str:
    with Image.open(png) as image:
        workflow = json.loads(image.info["workflow"])
    node = next(n for n in workflow["nodes"] if n["type"] == "PAS_CoordinatesText")
    return node["widgets_values"][0]


def pixels(png: Path) -> np.ndarray:
    with Image.open(png) as image:
        return np.asarray(image.convert("RGB")).copy()


def test_png_with_coordinates_as_text_reproduces_its_image_without_the_file(node_driver, comfy_ui_server, frontend,
                                                                              tmp_path):
    server = comfy_ui_server
    trained = drive(node_driver, server, tmp_path, "train")
    assert trained["frontendVersion"] == frontend.version
    text = trained["text"]
    assert trained["widgetText"] == text and text.startswith("comfyui-pas-coordinates v2 ")
    pas = server.base / "models" / "pas"
    files = list((pas / "png_roundtrip").glob("demo_*.safetensors"))
    assert len(files) == 1 and PASCoordinates.load(files[0]).to_text() == text  # the text is the file's
    assert PASCoordinates.from_text(text).steps, "no corrected step: the image would not depend on the text"
    first = fetch_png(server, trained["image"], tmp_path / "first.png")
    assert embedded_text(first) == text

    aside = tmp_path / "pas_aside"
    shutil.move(str(pas), str(aside))
    pas.mkdir()
    try:
        server.post("/free", {"unload_models": True, "free_memory": True})
        time.sleep(2.0)  # the worker clears its caches before it takes the next prompt
        replayed = drive(node_driver, server, tmp_path, "replay", png=first)
        assert list(pas.rglob("*")) == []  # models/pas stayed empty throughout
    finally:
        shutil.rmtree(pas)
        shutil.move(str(aside), str(pas))
    assert replayed["widgetText"] == text
    assert "PAS_Trainer" not in replayed["nodeTypes"] and "PAS_CoordinatesText" in replayed["nodeTypes"]
    history = server.wait_history(replayed["runs"][-1]["promptId"], timeout=60)
    cached = set(dict(history["status"]["messages"]).get("execution_cached", {}).get("nodes", []))
    prompt = history["prompt"][2]
    sampling = {i for i, n in prompt.items() if n["class_type"] in ("PAS_CoordinatesText", "SamplerCustom")}
    assert len(sampling) == 2 and not cached & sampling, "the replay was served from the cache"
    second = fetch_png(server, replayed["image"], tmp_path / "second.png")
    assert replayed["image"]["filename"] != trained["image"]["filename"]
    a, b = pixels(first), pixels(second)
    assert a.shape == b.shape and a.std() > 0
    assert np.array_equal(a, b), f"{int((a != b).sum())} pixel values differ"
