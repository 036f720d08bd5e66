"""A real ComfyUI server for the HTTP and browser tests: loopback only, CPU, one thread, its own base
directory with packs linked into custom_nodes/, stopped by its PID."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMFYUI_DIR = Path(os.environ.get("COMFYUI_DIR", REPO / ".comfyui" / "ComfyUI"))
PACK_NAME = "ComfyUI-PAS"
START_TIMEOUT = 180


def require_host() -> None:
    """Stop the session (not skip) when the ComfyUI host is missing."""
    if not (COMFYUI_DIR / "main.py").is_file():
        raise pytest.UsageError(
            f"No ComfyUI host at {COMFYUI_DIR}: run `make host` (or set COMFYUI_DIR to a ComfyUI checkout).")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """A running main.py and small HTTP helpers for its API."""

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
        """The /history entry of a prompt once it has succeeded or failed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("status_str") in ("success", "error"):
                return entry
            if self.process.poll() is not None:
                raise AssertionError(f"ComfyUI exited during prompt {prompt_id}:\n{self.log_tail()}")
            time.sleep(0.2)
        raise AssertionError(f"prompt {prompt_id} did not finish in {timeout} s:\n{self.log_tail()}")

    def run(self, graph: dict, timeout: float = 300) -> dict:
        """Queue an API-format graph and return its finished /history entry."""
        prompt_id = self.post("/prompt", {"prompt": graph, "client_id": "pas-tests"})["prompt_id"]
        return self.wait_history(prompt_id, timeout)


@contextlib.contextmanager
def running_server(base: Path, packs: dict[str, Path], extra_args: tuple[str, ...] = ()):
    """Start main.py on a free loopback port with `packs` linked into base/custom_nodes; stop it by PID.
    `extra_args` go to main.py after the defaults (e.g. the browser tests' --front-end-root)."""
    custom_nodes = base / "custom_nodes"
    custom_nodes.mkdir(parents=True, exist_ok=True)
    for name, path in packs.items():
        (custom_nodes / name).symlink_to(path, target_is_directory=True)
    port = free_port()
    log_path = base / "server.log"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    command = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
               "--base-directory", str(base), "--disable-api-nodes", "--database-url", "sqlite:///:memory:",
               "--preview-method", "none", "--disable-auto-launch", *extra_args]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=COMFYUI_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = ComfyServer(base, port, process, log_path)
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
