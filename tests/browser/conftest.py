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
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
COMFYUI_DIR = Path(os.environ.get("COMFYUI_DIR", REPO / ".comfyui" / "ComfyUI"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
PACK_NAME = "ComfyUI-PAS"
PACK_MODULE = "comfyui_pas_pack"  # the name tests/host uses; one copy of the pack per session
START_TIMEOUT = 180
SETUP_HINT = "run `make browser` (scripts/setup_browser.sh)"

if not (COMFYUI_DIR / "main.py").is_file():
    raise pytest.UsageError(
        f"No ComfyUI host at {COMFYUI_DIR}: run `make host` (or set COMFYUI_DIR to a ComfyUI checkout).")
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
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A ComfyUI main.py process on 127.0.0.1 with its own base directory; stopped by its PID."""

    def __init__(self, base: Path, port: int, process: subprocess.Popen, log_path: Path):
        self.base, self.port, self.process, self.log_path = base, port, process, log_path
        self.url = f"http://127.0.0.1:{port}"

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def get_raw(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=60) as response:
            return response.read()

    def get(self, path: str):
        return json.loads(self.get_raw(path))

    def post(self, path: str, payload: dict):
        request = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                body = response.read()
                return json.loads(body) if body else None
        except urllib.error.HTTPError as error:
            raise AssertionError(f"POST {path} -> {error.code}: {error.read().decode(errors='replace')}") from None

    def wait_history(self, prompt_id: str, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("status_str") in ("success", "error"):
                return entry
            if self.process.poll() is not None:
                raise AssertionError(f"ComfyUI exited during prompt {prompt_id}:\n{self.log_tail()}")
            time.sleep(0.25)
        raise AssertionError(f"prompt {prompt_id} did not finish in {timeout} s:\n{self.log_tail()}")


@pytest.fixture(scope="session")
def comfy_ui_server(tmp_path_factory):
    """ComfyUI with this pack linked into custom_nodes/, serving its frontend package."""
    base = tmp_path_factory.mktemp("comfy_browser_base")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / PACK_NAME).symlink_to(REPO, target_is_directory=True)
    # An existing user: no first-run template browser over the canvas, no minimap in screenshots.
    settings = base / "user" / "default" / "comfy.settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps({"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False}))
    port = free_port()
    log_path = base / "server.log"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    command = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
               "--base-directory", str(base), "--disable-api-nodes", "--database-url", "sqlite:///:memory:",
               "--preview-method", "none", "--disable-auto-launch"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=COMFYUI_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(base, port, process, log_path)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise AssertionError(f"ComfyUI exited with {process.returncode}:\n{server.log_tail()}")
            try:
                server.get("/system_stats")
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    raise AssertionError(f"ComfyUI did not answer in {START_TIMEOUT} s:\n{server.log_tail()}") from None
                time.sleep(0.25)
        yield server
    finally:
        if process.poll() is None:
            os.kill(process.pid, 15)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, 9)
                process.wait(timeout=30)


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
