"""ComfyUI's built-in samplers, called through their k-diffusion functions (when the host is installed)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from train_tools.paths import REPO_ROOT

DEFAULT_COMFYUI_DIR = REPO_ROOT / ".comfyui" / "ComfyUI"


def comfyui_dir() -> Path:
    return Path(os.environ.get("COMFYUI_DIR", DEFAULT_COMFYUI_DIR))


def setup_comfy(cpu: bool = True) -> bool:
    """Put the installed ComfyUI on sys.path, on the CPU unless cpu=False; False when it is not installed."""
    root = comfyui_dir()
    if not (root / "comfy" / "k_diffusion" / "sampling.py").is_file():
        return False
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from comfy.cli_args import args

    args.cpu = cpu  # must precede comfy.model_management's first import
    return True


def load_builtin_samplers():
    """{name: sampler function(model, x, sigmas, disable=...)} from the installed ComfyUI, or None."""
    if not setup_comfy():
        return None
    from comfy.extra_samplers import uni_pc
    from comfy.k_diffusion import sampling

    # Every deterministic sampler of ComfyUI that calls the model once per step (cfg_pp variants need
    # ComfyUI's CFG hooks and are left out): the registry's six first, then the ones PAS does not correct.
    return {"euler": sampling.sample_euler, "ipndm": sampling.sample_ipndm, "ipndm_v": sampling.sample_ipndm_v,
            "deis": sampling.sample_deis, "dpmpp_2m": sampling.sample_dpmpp_2m,
            "res_multistep": sampling.sample_res_multistep, "uni_pc": uni_pc.sample_unipc,
            "uni_pc_bh2": uni_pc.sample_unipc_bh2, "lms": sampling.sample_lms,
            "gradient_estimation": sampling.sample_gradient_estimation}
