"""In-process tests against the real ComfyUI installed by `make host` (scripts/setup_comfyui.sh).

ComfyUI's tree goes on sys.path, the CPU flag is set before any other comfy import (otherwise
comfy.model_management asserts CUDA), and the pack is loaded the way ComfyUI loads it: as a module
named after its folder, from a base directory of the test's own with the pack linked into custom_nodes/.
"""
from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
COMFYUI_DIR = Path(os.environ.get("COMFYUI_DIR", REPO / ".comfyui" / "ComfyUI"))
PACK_MODULE = "comfyui_pas_pack"

if not (COMFYUI_DIR / "comfy" / "samplers.py").is_file():
    raise pytest.UsageError(
        f"No ComfyUI host at {COMFYUI_DIR}: run `make host` (or set COMFYUI_DIR to a ComfyUI checkout).")
os.environ["OMP_NUM_THREADS"] = "1"  # two OpenMP threads on a shared 2-core box are 20-150x slower

sys.path.insert(0, str(COMFYUI_DIR))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))  # the library as `comfyui_pas`, for reference computations

# The session's own ComfyUI base directory, as `--base-directory` gives the server.
BASE_DIR = Path(tempfile.mkdtemp(prefix="pas_comfy_base_"))
atexit.register(shutil.rmtree, BASE_DIR, ignore_errors=True)
(BASE_DIR / "custom_nodes").mkdir()
(BASE_DIR / "custom_nodes" / PACK_MODULE).symlink_to(REPO, target_is_directory=True)

from comfy.cli_args import args  # noqa: E402

# `make gpu-check` sets PAS_TEST_DEVICE=cuda: ComfyUI then picks the GPU (and fp16 where it would).
args.cpu = os.environ.get("PAS_TEST_DEVICE", "cpu") == "cpu"
args.disable_api_nodes = True
args.base_directory = str(BASE_DIR)

import comfy.model_management  # noqa: E402,F401
import comfy.utils  # noqa: E402
import folder_paths  # noqa: E402
import torch  # noqa: E402
from pas_test_pack import tiny  # noqa: E402

torch.set_num_threads(1)
comfy.utils.set_progress_bar_enabled(False)


def load_module(name: str, path: Path, package: bool = False):
    """Import the file at `path` as sys.modules[name] (a package whose submodules sit beside it if `package`)."""
    spec = importlib.util.spec_from_file_location(name, path,
                                                  submodule_search_locations=[str(path.parent)] if package else None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def pack():
    """The pack imported as ComfyUI imports it: the linked folder, as a module named after the folder."""
    return load_module(PACK_MODULE, BASE_DIR / "custom_nodes" / PACK_MODULE / "__init__.py", package=True)


@pytest.fixture(scope="session")
def pas_dir(pack):
    """models/pas inside the session's base directory (registered by the pack)."""
    return Path(folder_paths.get_folder_paths("pas")[0])


def pack_module_fixture(fixture: str, module: str):
    """A session fixture `fixture`: the pack's submodule `module`, as ComfyUI imported it with the pack."""
    def get(pack):
        return sys.modules[f"{PACK_MODULE}.{module}"]

    return pytest.fixture(get, scope="session", name=fixture)


nodes = pack_module_fixture("nodes", "nodes")
bridge = pack_module_fixture("bridge", "comfy_bridge")
demo_nodes = pack_module_fixture("demo_nodes", "demo_nodes")


@pytest.fixture(scope="session")
def host_nodes():
    """ComfyUI's own nodes.py (KSampler, CLIPTextEncode), registered as `nodes` as ComfyUI's main does."""
    path = (COMFYUI_DIR / "nodes.py").resolve()
    loaded = sys.modules.get("nodes")
    if loaded is not None and Path(loaded.__file__).resolve() == path:
        return loaded
    return load_module("nodes", path)


@pytest.fixture(scope="session", params=["eps", "v_prediction", "flow"])
def model_kind(request):
    return request.param


@pytest.fixture(scope="session")
def tiny_models():
    cache = {}

    def get(kind):
        if kind not in cache:
            cache[kind] = tiny.make_model(kind)
        return cache[kind]

    return get


@pytest.fixture(scope="session")
def conditioning():
    return tiny.random_conditioning(1), tiny.random_conditioning(2)


@pytest.fixture(autouse=True)
def _inference_mode():
    """ComfyUI's executor runs every node under torch.inference_mode(); so do the tests."""
    with torch.inference_mode():
        yield
