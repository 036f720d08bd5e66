"""Browser tests: the real ComfyUI server and frontend, driven by Debian's headless Chromium.

Set-up comes from `make browser` (scripts/setup_browser.sh: apt's chromium, npm ci here;
scripts/setup_frontends.sh: the newer frontend). Nothing is skipped: a missing browser, Node.js, npm
package or frontend fails the test with the reason and the fix.
The server fixture is parametrized over two frontends, served by the same ComfyUI host: the
comfyui-frontend-package that ComfyUI pins (in .venv) and the newer one that scripts/setup_frontends.sh
pins and installs under .cache/ (given to main.py as --front-end-root).
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from browser_driver import CHROMIUM  # noqa: E402
from comfy_harness import PACK_NAME, REPO, require_host, running_server  # noqa: E402

HERE = Path(__file__).resolve().parent
SETUP_HINT = "run `make browser` (scripts/setup_browser.sh)"
FRONTENDS_SCRIPT = REPO / "scripts" / "setup_frontends.sh"
# Files the example workflows name in model widgets: without them the newer frontend reports missing
# models (the tests never load them; empty placeholders in the server's base directory suffice).
# The same names as tests/browser/build_workflows.mjs (which needs them on the server it builds with).
PLACEHOLDER_MODELS = ("checkpoints/v1-5-pruned-emaonly-fp16.safetensors",
                      "checkpoints/sd_xl_base_1.0.safetensors",
                      "checkpoints/sd3.5_medium.safetensors",
                      "text_encoders/clip_l.safetensors",
                      "text_encoders/clip_g.safetensors",
                      "text_encoders/t5xxl_fp16.safetensors",
                      "pas/sd15/pas_deis_karras_4-8_00001.safetensors",
                      "pas/sdxl/pas_deis_karras_5_6_8_10_00001.safetensors",
                      "pas/sd35m/pas_dpmpp_2m_learned_6_00001.safetensors",
                      "diffusion_models/flux1-dev.safetensors",
                      "vae/ae.safetensors",
                      "pas/flux/pas_euler_simple_6_8_10_00001.safetensors")


@dataclasses.dataclass(frozen=True)
class Frontend:
    version: str
    root: Path | None  # None: the package in .venv that ComfyUI serves by default (its pin)

    @property
    def pinned(self) -> bool:
        return self.root is None


def frontends() -> list[Frontend]:
    pinned = importlib.metadata.version("comfyui-frontend-package")
    newer = re.search(r"^NEWER_FRONTEND=(\S+)$", FRONTENDS_SCRIPT.read_text(), re.M).group(1)
    root = REPO / ".cache" / f"frontend-{newer}" / "comfyui_frontend_package" / "static"
    return [Frontend(pinned, None), Frontend(newer, root)]

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
@pytest.fixture(scope="session", params=frontends(), ids=lambda f: f"frontend-{f.version}")
def frontend(request) -> Frontend:
    """Which frontend the server serves; every browser test runs once per frontend."""
    fe = request.param
    if fe.root is not None and not (fe.root / "index.html").is_file():
        pytest.fail(f"frontend {fe.version} is not installed at {fe.root}: run `make browser` "
                    f"(scripts/setup_frontends.sh)", pytrace=False)
    return fe


@pytest.fixture(scope="session")
def comfy_ui_server(frontend, tmp_path_factory):
    """ComfyUI with this pack linked into custom_nodes/, serving `frontend`."""
    base = tmp_path_factory.mktemp("comfy_browser_base_" + frontend.version.replace(".", "_"))
    for name in PLACEHOLDER_MODELS:
        (base / "models" / name).parent.mkdir(parents=True, exist_ok=True)
        (base / "models" / name).touch()
    # An existing user: no first-run template browser over the canvas, no minimap in screenshots.
    settings = base / "user" / "default" / "comfy.settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps({"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False}))
    extra = ("--front-end-root", str(frontend.root)) if frontend.root else ()
    with running_server(base, {PACK_NAME: REPO}, extra_args=extra) as server:
        server.frontend = frontend
        yield server
