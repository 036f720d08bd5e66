"""Browser tests: the real ComfyUI server and frontend, driven by Debian's headless Chromium.

Set-up comes from `make browser` (scripts/setup_browser.sh: apt's chromium, npm ci here). Nothing is
skipped: a missing browser, Node.js or npm package fails the test with the reason and the fix.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from comfy_harness import PACK_NAME, REPO, require_host, running_server  # noqa: E402

HERE = Path(__file__).resolve().parent
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
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
