"""Fashion-MNIST from Debian's dataset-fashion-mnist package (original IDX files, gzip).

Install the data with `make dataset` (scripts/setup_dataset.sh). Images are 28x28 uint8; the demo
model works on 32x32 in [-1, 1], padded with the background value -1.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import torch

DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
IMAGE_SIZE = 28
MODEL_SIZE = 32
PAD = (MODEL_SIZE - IMAGE_SIZE) // 2

_PREFIX = {"train": "train", "test": "t10k"}
# md5 of the uncompressed IDX bytes (Debian recompressed the .gz files, so those differ upstream).
IMAGE_MD5 = {
    "train": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "test": "8181f5470baa50b63fa0f6fddb340f0a",
}
_IDX_UINT8 = 0x08
_INSTALL_HINT = "run `make dataset` (apt-get install dataset-fashion-mnist)"


def _split_prefix(split: str) -> str:
    if split not in _PREFIX:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return _PREFIX[split]


def image_path(split: str, data_dir: Path | str = DATA_DIR) -> Path:
    return Path(data_dir) / f"{_split_prefix(split)}-images-idx3-ubyte.gz"


def label_path(split: str, data_dir: Path | str = DATA_DIR) -> Path:
    return Path(data_dir) / f"{_split_prefix(split)}-labels-idx1-ubyte.gz"


def read_gz_bytes(path: Path | str) -> bytes:
    """Uncompressed bytes of a .gz file, with an error that says how to get the data."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Fashion-MNIST file not found: {path}; {_INSTALL_HINT}")
    with gzip.open(path, "rb") as f:
        return f.read()


def parse_idx(raw: bytes) -> np.ndarray:
    """Parse an IDX buffer of uint8 data: magic (0, 0, type, ndim), big-endian int32 dims, raw data."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError("not an IDX file (bad magic number)")
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code != _IDX_UINT8:
        raise ValueError(f"IDX data type 0x{dtype_code:02x} is not supported (only uint8)")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise ValueError("IDX file truncated in its header")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header_len != expected:
        raise ValueError(f"IDX size mismatch: dims {dims} need {expected} bytes, file has {len(raw) - header_len}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(dims).copy()


def md5_hex(raw: bytes) -> str:
    return hashlib.md5(raw).hexdigest()


def check_md5(raw: bytes, expected: str, what: str) -> None:
    got = md5_hex(raw)
    if got != expected:
        raise ValueError(
            f"checksum mismatch for {what}: md5 {got}, expected {expected}; "
            f"the file is corrupt or not Fashion-MNIST, reinstall it ({_INSTALL_HINT})"
        )


def load_images(split: str = "train", data_dir: Path | str = DATA_DIR, verify: bool = True) -> np.ndarray:
    """Images as uint8 (N, 28, 28); the uncompressed bytes are md5-checked unless verify=False."""
    path = image_path(split, data_dir)
    raw = read_gz_bytes(path)
    if verify:
        check_md5(raw, IMAGE_MD5[split], str(path))
    images = parse_idx(raw)
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"{path}: expected (N, 28, 28) images, got shape {images.shape}")
    return images


def load_labels(split: str = "train", data_dir: Path | str = DATA_DIR) -> np.ndarray:
    """Class labels 0-9 as uint8 (N,)."""
    path = label_path(split, data_dir)
    labels = parse_idx(read_gz_bytes(path))
    if labels.ndim != 1:
        raise ValueError(f"{path}: expected a 1-D label array, got shape {labels.shape}")
    return labels


def images_md5(split: str = "train", data_dir: Path | str = DATA_DIR) -> str:
    """md5 of the uncompressed image IDX bytes (recorded in the model's metadata)."""
    return md5_hex(read_gz_bytes(image_path(split, data_dir)))


def to_model_space(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 1, 32, 32) in [-1, 1], padded with the background -1."""
    x = torch.as_tensor(np.asarray(images))
    if x.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {x.dtype}")
    if x.ndim != 3 or tuple(x.shape[1:]) != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"expected images of shape (N, 28, 28), got {tuple(x.shape)}")
    x = x.to(torch.float32).div(127.5).sub(1.0).unsqueeze(1)
    return torch.nn.functional.pad(x, (PAD, PAD, PAD, PAD), value=-1.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Model-space (N, 1, 32, 32) -> uint8 (N, 28, 28): crop the padding, clamp, round."""
    if x.ndim != 4 or x.shape[1] != 1 or tuple(x.shape[2:]) != (MODEL_SIZE, MODEL_SIZE):
        raise ValueError(f"expected model-space tensor (N, 1, 32, 32), got {tuple(x.shape)}")
    crop = x[:, 0, PAD : PAD + IMAGE_SIZE, PAD : PAD + IMAGE_SIZE].detach().to("cpu", torch.float32)
    pixels = ((crop.clamp(-1.0, 1.0) + 1.0) * 127.5).round()
    return pixels.to(torch.uint8).numpy()


def image_grid(images, rows: int, cols: int, zoom: int = 3, gap: int = 2):
    """uint8 (N, 28, 28) -> a PIL image with the items on a white background."""
    from PIL import Image

    h, w = images.shape[1:]
    canvas = np.full((rows * (h + gap) + gap, cols * (w + gap) + gap), 255, np.uint8)
    for i, item in enumerate(images[: rows * cols]):
        r, c = divmod(i, cols)
        canvas[gap + r * (h + gap): gap + r * (h + gap) + h, gap + c * (w + gap): gap + c * (w + gap) + w] = item
    return Image.fromarray(canvas).resize((canvas.shape[1] * zoom, canvas.shape[0] * zoom), Image.NEAREST)
