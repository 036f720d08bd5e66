"""Browser tests: the real ComfyUI server and frontend, driven by Debian's headless Chromium.

Set-up comes from `make browser` (scripts/setup_browser.sh: apt's chromium, npm ci here). Nothing is
skipped: a missing browser, Node.js or npm package fails the test with the reason and the fix.
The in-process demo-model test imports ComfyUI lazily (tests/host/conftest.py may already have set it up
in the same pytest session; its CPU and base-directory settings are then kept).
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from comfy_harness import COMFYUI_DIR, PACK_NAME, REPO, require_host, running_server  # noqa: E402

HERE = Path(__file__).resolve().parent
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
PACK_MODULE = "comfyui_pas_pack"  # the name tests/host uses; one copy of the pack per session
SETUP_HINT = "run `make browser` (scripts/setup_browser.sh)"

require_host()
os.environ["OMP_NUM_THREADS"] = "1"


# ---- the browser side ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def node_driver():
    """`node` and the installed playwright-core; fails (not skips) with the fix when anything is missing."""
    node = shutil.which("node")
    problems = []
    if node is None:
        problems.append("Node.js (`node`) is not on PATH")
    if not Path(CHROMIUM).is_file():
        problems.append(f"Chromium is missing at {CHROMIUM}")
    if not (HERE / "node_modules" / "playwright-core" / "package.json").is_file():
        problems.append(f"playwright-core is not installed in {HERE}/node_modules")
    if problems:
        pytest.fail("; ".join(problems) + f": {SETUP_HINT}", pytrace=False)
    probe = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--version"],
                           capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        pytest.fail(f"Chromium at {CHROMIUM} does not start: {probe.stderr.strip() or probe.stdout.strip()}",
                    pytrace=False)
    return node


# ---- the server side -------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def comfy_ui_server(tmp_path_factory):
    """ComfyUI with this pack linked into custom_nodes/, serving its frontend package."""
    base = tmp_path_factory.mktemp("comfy_browser_base")
    # An existing user: no first-run template browser over the canvas, no minimap in screenshots.
    settings = base / "user" / "default" / "comfy.settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps({"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False}))
    with running_server(base, {PACK_NAME: REPO}) as server:
        yield server


# ---- in-process ComfyUI (the demo MODEL test) ------------------------------------------------------
@pytest.fixture(scope="session")
def comfy_inprocess():
    """ComfyUI imported in this process on CPU, and the pack loaded as ComfyUI loads it (a package)."""
    if "comfy.cli_args" not in sys.modules:  # tests/host/conftest.py has not configured ComfyUI yet
        sys.path.insert(0, str(COMFYUI_DIR))
        from comfy.cli_args import args

        args.cpu = True
        args.disable_api_nodes = True
        args.base_directory = tempfile.mkdtemp(prefix="pas_browser_inproc_")
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # the library (comfyui_pas) and train_tools, for references
    import comfy.model_management  # noqa: F401
    import comfy.utils
    import torch

    torch.set_num_threads(1)
    comfy.utils.set_progress_bar_enabled(False)
    if PACK_MODULE not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACK_MODULE, REPO / "__init__.py",
                                                      submodule_search_locations=[str(REPO)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACK_MODULE] = module
        spec.loader.exec_module(module)
    return sys.modules[PACK_MODULE]


@pytest.fixture(scope="session")
def demo_nodes(comfy_inprocess):
    import importlib

    return importlib.import_module(PACK_MODULE + ".demo_nodes")
