"""IDX reader, md5 check and model-space conversions of train_tools.data.fashion_mnist (no real data needed)."""

import gzip
import struct

import numpy as np
import pytest
import torch

from train_tools.data import fashion_mnist as fm


def write_idx_gz(path, array: np.ndarray) -> bytes:
    """Write a uint8 IDX file by hand (magic 0,0,0x08,ndim; big-endian int32 dims) and gzip it."""
    raw = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape) + array.tobytes()
    with gzip.open(path, "wb") as f:
        f.write(raw)
    return raw


@pytest.fixture
def tiny_dataset(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    labels = np.array([7, 0, 9], dtype=np.uint8)
    raw = write_idx_gz(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx_gz(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    return tmp_path, images, labels, raw


def test_reads_images_and_labels_from_idx(tiny_dataset):
    data_dir, images, labels, _ = tiny_dataset
    got = fm.load_images("test", data_dir, verify=False)
    assert got.dtype == np.uint8 and got.shape == (3, 28, 28)
    np.testing.assert_array_equal(got, images)
    np.testing.assert_array_equal(fm.load_labels("test", data_dir), labels)


def test_md5_mismatch_is_a_clear_error(tiny_dataset):
    data_dir = tiny_dataset[0]
    with pytest.raises(ValueError, match="checksum mismatch.*make dataset"):
        fm.load_images("test", data_dir)


def test_md5_check_passes_on_matching_bytes(tiny_dataset, monkeypatch):
    data_dir, images, _, raw = tiny_dataset
    monkeypatch.setitem(fm.IMAGE_MD5, "test", fm.md5_hex(raw))
    np.testing.assert_array_equal(fm.load_images("test", data_dir), images)
    assert fm.images_md5("test", data_dir) == fm.md5_hex(raw)


def test_missing_file_names_the_install_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="make dataset"):
        fm.load_images("train", tmp_path)


def test_bad_split_and_bad_idx_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="split"):
        fm.image_path("validation")
    with pytest.raises(ValueError, match="magic"):
        fm.parse_idx(b"\x01\x02\x08\x01" + b"\x00" * 8)
    truncated = bytes([0, 0, 8, 1]) + struct.pack(">i", 5) + b"\x00\x01"
    with pytest.raises(ValueError, match="size mismatch"):
        fm.parse_idx(truncated)


def test_model_space_pads_with_background_and_round_trips():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    x = fm.to_model_space(images)
    assert x.shape == (4, 1, 32, 32) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    # 0 -> -1 and 255 -> +1; the 2-pixel border is background (-1)
    assert fm.to_model_space(np.zeros((1, 28, 28), np.uint8)).eq(-1).all()
    assert fm.to_model_space(np.full((1, 28, 28), 255, np.uint8))[0, 0, 2:30, 2:30].eq(1).all()
    assert x[:, :, :2].eq(-1).all() and x[:, :, -2:].eq(-1).all()
    assert x[:, :, :, :2].eq(-1).all() and x[:, :, :, -2:].eq(-1).all()
    np.testing.assert_array_equal(fm.to_uint8(x), images)


def test_to_uint8_clamps_out_of_range_values():
    x = torch.full((1, 1, 32, 32), 3.0)
    x[0, 0, 2, 2] = -5.0
    out = fm.to_uint8(x)
    assert out.shape == (1, 28, 28) and out.dtype == np.uint8
    assert out[0, 0, 0] == 0 and out[0, 5, 5] == 255


@pytest.mark.parametrize("convert, value, error, match", [
    (fm.to_model_space, np.zeros((1, 28, 28), np.float32), TypeError, "uint8"),
    (fm.to_model_space, np.zeros((1, 32, 32), np.uint8), ValueError, "28, 28"),
    (fm.to_uint8, torch.zeros(1, 1, 28, 28), ValueError, "32, 32"),
])
def test_conversions_reject_wrong_shapes_and_dtypes(convert, value, error, match):
    with pytest.raises(error, match=match):
        convert(value)
