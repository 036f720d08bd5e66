"""The example workflows in the real ComfyUI frontend, in Debian's headless Chromium (playwright-core).

One browser session (drive_frontend.mjs) loads every workflows/*.json through the frontend's own loader,
records missing node types and link problems as the page sees them, converts each graph with the
frontend's graphToPrompt, then presses Run on the demo workflow, waits for its images and saves a
screenshot (docs/images/ui_demo_workflow.png, shown in the README), and last opens each PAS node's help
page (web/docs/<node id>.md). The tests below judge that record and check the results over HTTP.
Everything runs once per frontend (the `frontend` fixture in conftest.py: ComfyUI's pinned frontend and a
newer one).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest
from browser_driver import CHROMIUM, run_driver

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PACK_NAME = "ComfyUI-PAS"  # the folder name the server fixture links the pack under

WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
DEMO = "pas_demo_train_and_sample"
# The README's screenshot is refreshed only on request (make screenshot), so a test run leaves git clean.
SCREENSHOT = REPO / "docs" / "images" / "ui_demo_workflow.png"
UPDATE_SCREENSHOT = os.environ.get("PAS_UPDATE_SCREENSHOT") == "1"
PREVIEWS = {"Euler, 5 steps (no PAS)", "Euler + PAS, 5 steps", "Reference: Heun, 30 steps", "PAS error per step"}
# The node help pages: the frontend fetches /extensions/<pack folder>/docs/<node id>/<locale>.md, then
# /extensions/<pack folder>/docs/<node id>.md (both the pinned 1.32 and the newer frontend).
HELP_DOCS = sorted((REPO / "web" / "docs").glob("*.md"))


def help_ids():
    return [path.stem for path in HELP_DOCS]


def help_intro(path: Path) -> str:
    """The first paragraph after the title as the help panel shows it: markup gone, whitespace collapsed."""
    paragraphs = [p.strip() for p in path.read_text().split("\n\n") if p.strip()]
    intro = next(p for p in paragraphs if not p.startswith("#"))
    return re.sub(r"\s+", " ", intro.replace("**", "").replace("`", "")).strip()


def workflow_ids():
    return [path.stem for path in WORKFLOWS]


@pytest.fixture(scope="session")
def object_info(comfy_ui_server):
    return comfy_ui_server.get("/object_info")


@pytest.fixture(scope="session")
def page_report(node_driver, comfy_ui_server, frontend, tmp_path_factory):
    """Run the browser once per frontend; the report holds what the page saw."""
    out = tmp_path_factory.mktemp("browser")
    config = {"url": comfy_ui_server.url, "chromium": CHROMIUM, "workflows": [str(p) for p in WORKFLOWS],
              "run": str(REPO / "workflows" / f"{DEMO}.json"), "screenshot": str(out / "ui_demo_workflow.png"),
              "report": str(out / "report.json"), "runTimeoutMs": 300_000, "packName": PACK_NAME,
              "help": [{"type": path.stem, "expected": help_intro(path)} for path in HELP_DOCS]}
    started = time.monotonic()
    report = run_driver(node_driver, "drive_frontend.mjs", config, out / "config.json", comfy_ui_server)
    report["wall_s"] = time.monotonic() - started
    report["screenshot_path"] = config["screenshot"]
    if UPDATE_SCREENSHOT and frontend.pinned and Path(config["screenshot"]).is_file():
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(config["screenshot"], SCREENSHOT)
    return report


def test_the_example_workflows_exist_with_thumbnails():
    from PIL import Image

    examples = {f"pas_{model}_{kind}" for model in ("sd", "sdxl", "sd35", "flux") for kind in ("train", "sample")}
    assert {DEMO} | examples <= set(workflow_ids())
    for path in WORKFLOWS:
        workflow = json.loads(path.read_text())
        assert workflow.get("nodes") and "links" in workflow, f"{path.name} is not a UI-format workflow"
        thumbnail = path.with_suffix(".jpg")
        assert thumbnail.is_file(), f"{path.name} has no {thumbnail.name} thumbnail"
        with Image.open(thumbnail) as image:
            assert image.format == "JPEG" and min(image.size) >= 200


def test_server_lists_the_workflows_as_templates(comfy_ui_server):
    templates = comfy_ui_server.get("/workflow_templates")
    assert sorted(templates.get(PACK_NAME, [])) == workflow_ids()
    for name in workflow_ids():
        served = json.loads(comfy_ui_server.get_raw(f"/api/workflow_templates/{PACK_NAME}/{name}.json"))
        assert served == json.loads((REPO / "workflows" / f"{name}.json").read_text())


def test_the_page_runs_the_frontend_under_test(page_report, frontend):
    assert page_report["frontendVersion"] == frontend.version


def test_page_raised_no_uncaught_errors(page_report):
    """Console noise of the frontend itself (404s of optional files, blocked registry look-ups) is
    allowed; an uncaught exception in the page (ours or the frontend's while handling our graphs) is not."""
    uncaught = [p for p in page_report["pageProblems"] if p.startswith("pageerror")]
    assert uncaught == []


def test_template_browser_shows_the_workflows_with_thumbnails(page_report):
    from PIL import Image

    cards = page_report["templates"]
    assert set(workflow_ids()) <= set(cards["titles"]), cards["titles"]
    sizes = []
    for name in workflow_ids():
        with Image.open(REPO / "workflows" / f"{name}.jpg") as image:
            sizes.append(list(image.size))
    assert sorted(cards["images"]) == sorted(sizes), "the cards do not show the workflows' .jpg thumbnails"


@pytest.mark.parametrize("name", workflow_ids())
def test_workflow_loads_with_every_node_known_and_every_link_valid(page_report, name):
    seen = page_report["workflows"][name]
    assert seen["missing"] == [], f"the frontend reports missing node types: {seen['missing']}"
    assert seen["unregistered"] == []
    assert seen["problems"] == []
    assert seen["dialogs"] == 0, "a dialog (missing nodes / load error) opened over the canvas"
    assert seen["errorOverlay"] == [], "the frontend flags problems (missing models?) over the canvas"
    workflow = json.loads((REPO / "workflows" / f"{name}.json").read_text())
    assert len(seen["nodes"]) == len(workflow["nodes"])
    assert seen["linkCount"] == len(workflow["links"]) > 0


@pytest.mark.parametrize("name", workflow_ids())
def test_frontend_converts_workflow_to_a_valid_api_prompt(page_report, object_info, name):
    """graphToPrompt's output names only server node types and gives every required input."""
    seen = page_report["workflows"][name]
    output = seen["output"]
    real_nodes = [n for n in seen["nodes"] if not n["virtual"] and n["mode"] == 0]
    assert sorted(output) == sorted(str(n["id"]) for n in real_nodes)
    workflow = json.loads((REPO / "workflows" / f"{name}.json").read_text())
    for link_id, origin, origin_slot, target, _target_slot, _type in workflow["links"]:
        references = [v for v in output[str(target)]["inputs"].values() if isinstance(v, list)]
        assert [str(origin), origin_slot] in references, f"link {link_id} is missing from the API prompt"
    for node_id, node in output.items():
        info = object_info.get(node["class_type"])
        assert info is not None, f"node {node_id}: {node['class_type']} is unknown to the server"
        missing = [key for key in info["input"].get("required", {}) if key not in node["inputs"]]
        assert missing == [], f"node {node_id} ({node['class_type']}) lacks required inputs {missing}"


def test_demo_workflow_runs_from_the_page_and_shows_its_images(page_report, comfy_ui_server):
    run = page_report["run"]
    assert run is not None and run["status"] == "success", f"the page run ended with {run}"
    titles = {preview["title"]: preview["images"] for preview in run["previews"]}
    assert set(titles) == PREVIEWS
    for title in PREVIEWS - {"PAS error per step"}:
        assert titles[title] == [[112, 112]] * 8, title  # 8 decoded 28x28 images, zoom 4
    assert len(titles["PAS error per step"]) == 1
    history = comfy_ui_server.wait_history(run["promptId"], timeout=30)
    assert history["status"]["status_str"] == "success"
    images = [image for output in history["outputs"].values() for image in output.get("images", [])]
    assert len(images) == 3 * 8 + 1
    first = images[0]
    png = comfy_ui_server.get_raw(f"/view?filename={first['filename']}&type={first['type']}"
                                  f"&subfolder={first['subfolder']}")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    trained = list((comfy_ui_server.base / "models" / "pas" / "pas_demo").glob("fashion_mnist_euler_5steps_*.safetensors"))
    assert trained, "the PAS Trainer saved no coordinates file"


def test_screenshot_of_the_finished_demo(page_report, frontend):
    from PIL import Image

    path = Path(page_report["screenshot_path"])
    assert path.is_file(), "no screenshot was taken"
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (1600, 900)
        colours = image.convert("L").getextrema()
        assert colours[1] - colours[0] > 100  # not a blank page
    if UPDATE_SCREENSHOT and frontend.pinned:  # the README shows the pinned frontend
        assert SCREENSHOT.read_bytes() == path.read_bytes()


def test_frontend_api_prompt_runs_over_http(page_report, comfy_ui_server):
    """The prompt the frontend produced, posted by hand: it runs (caches cleared first) and succeeds."""
    prompt = page_report["workflows"][DEMO]["output"]
    comfy_ui_server.post("/free", {"unload_models": True, "free_memory": True})
    time.sleep(2.0)  # the worker applies the flags before it takes the next prompt
    queued = comfy_ui_server.post("/prompt", {"prompt": prompt, "client_id": "pas-browser-tests"})
    assert queued["node_errors"] == {}
    entry = comfy_ui_server.wait_history(queued["prompt_id"], timeout=300)
    messages = dict(entry["status"]["messages"])
    assert entry["status"]["status_str"] == "success", messages
    cached = set(messages.get("execution_cached", {}).get("nodes", []))
    trainer = [node_id for node_id, node in prompt.items() if node["class_type"] == "PAS_Trainer"]
    assert trainer and not cached & set(trainer), "the trainer did not run again (served from cache)"
    outputs = entry["outputs"]
    assert sum(len(o.get("images", [])) for o in outputs.values()) == 3 * 8 + 1


def test_every_pas_node_has_a_help_page(object_info):
    """One web/docs/<node id>.md per node of this pack, and none for a node that does not exist."""
    ours = sorted(name for name, info in object_info.items() if info["python_module"] == f"custom_nodes.{PACK_NAME}")
    assert {"PAS_Sampler", "PAS_Trainer", "PAS_LoadCoordinates"} <= set(ours)
    assert help_ids() == ours


@pytest.mark.parametrize("name", help_ids())
def test_server_serves_the_help_page_where_the_frontend_looks(comfy_ui_server, name):
    served = comfy_ui_server.get_raw(f"/extensions/{PACK_NAME}/docs/{name}.md")
    assert served == (REPO / "web" / "docs" / f"{name}.md").read_bytes()


@pytest.mark.parametrize("name", help_ids())
def test_node_help_panel_shows_the_help_page(page_report, name):
    """The help the page shows after select node -> info button is our markdown, not the fallback
    (the node's description and inputs, which the frontend shows when no page is found)."""
    shown = page_report["help"][name]
    path = REPO / "web" / "docs" / f"{name}.md"
    title = path.read_text().splitlines()[0].removeprefix("# ")
    assert shown.startswith(title), f"the help panel shows {shown[:300]!r}"
    assert help_intro(path) in shown, f"the help panel shows {shown[:300]!r}"
