"""EDM preconditioning, denoiser interface, weight files and class prompts of the bundled demo model."""

import argparse
import math

import pytest
import torch

from demo_model import CLASS_NAMES, DEFAULT_WEIGHTS, class_label, load_demo_model
from demo_model.edm_unet import EDMDenoiser, UNetConfig, edm_scalings
from train_tools.data import fashion_mnist
from train_tools.training.train_model import build_metadata, ema_decay, export_weights, learning_rate

TINY = UNetConfig(channels=(8, 16), emb_dim=16, fourier_dim=8)


def randomized(cfg: UNetConfig = TINY, seed: int = 0) -> EDMDenoiser:
    """A denoiser whose zero-initialised layers are filled with noise, so F(x) is not trivially 0."""
    torch.manual_seed(seed)
    model = EDMDenoiser(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def test_scalings_match_hand_computed_values_at_sigma_data():
    # sigma = sigma_data = 0.5: s^2 + sd^2 = 0.5
    c_skip, c_out, c_in, c_noise = edm_scalings(torch.tensor([0.5]), 0.5)
    assert c_skip.item() == pytest.approx(0.5)
    assert c_out.item() == pytest.approx(0.25 / math.sqrt(0.5))
    assert c_in.item() == pytest.approx(1 / math.sqrt(0.5))
    assert c_noise.item() == pytest.approx(math.log(0.5) / 4)


def test_fresh_model_is_pure_skip_connection():
    # the output conv starts at zero, so F = 0 and D(x; sigma) = c_skip(sigma) x exactly
    model = EDMDenoiser(TINY).eval()
    x = torch.randn(2, 1, 32, 32)
    sigma = torch.tensor([0.1, 10.0])
    expected = (0.25 / (sigma**2 + 0.25))[:, None, None, None] * x
    torch.testing.assert_close(model(x, sigma), expected)


def test_tiny_sigma_returns_input():
    # c_skip -> 1 and c_out ~ sigma -> 0, so D(x; 1e-5) = x up to ~1e-5 |F|
    model = randomized()
    x = torch.randn(2, 1, 32, 32)
    out = model(x, torch.full((2,), 1e-5))
    f_scale = model.unet(x, torch.zeros(2)).abs().max().item() + 1.0
    assert (out - x).abs().max().item() < 1e-4 * f_scale
    assert (model(x, torch.full((2,), 1.0)) - x).abs().max().item() > 1e-2  # not an identity map


def test_sigma_scalar_or_per_sample_gives_same_output():
    model = randomized()
    x = torch.randn(3, 1, 32, 32)
    per_sample = model(x, torch.full((3,), 2.0))
    assert per_sample.shape == x.shape
    torch.testing.assert_close(model(x, 2.0), per_sample)
    torch.testing.assert_close(model(x, torch.tensor(2.0)), per_sample)
    torch.testing.assert_close(model(x, torch.tensor([2.0])), per_sample)


def test_each_sample_uses_its_own_sigma_independently_of_the_batch():
    model = randomized()
    x = torch.randn(3, 1, 32, 32)
    sigma = torch.tensor([0.05, 1.0, 40.0])
    batched = model(x, sigma)
    for i in range(3):
        torch.testing.assert_close(batched[i : i + 1], model(x[i : i + 1], sigma[i : i + 1]), atol=1e-5, rtol=1e-4)


def test_bad_sigma_and_input_are_rejected():
    model = EDMDenoiser(TINY)
    x = torch.randn(3, 1, 32, 32)
    with pytest.raises(ValueError, match="one value per sample"):
        model(x, torch.ones(2))
    with pytest.raises(ValueError, match="> 0"):
        model(x, torch.tensor([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="B, C, H, W"):
        model(torch.randn(1, 32, 32), 1.0)


def exported(tmp_path):
    """A randomized tiny model and the weights file export_weights wrote for it."""
    model = randomized()
    path = tmp_path / "m.safetensors"
    args = argparse.Namespace(minutes=1.0, steps=1, batch=2, lr=1e-3, lr_final=1e-4, warmup=1, ema=0.999,
                              grad_clip=1.0, p_mean=-1.2, p_std=1.2, seed=0, threads=1, no_flip=False,
                              num_classes=0, label_dropout=0.15, init_from=None)
    export_weights(model, path, build_metadata(TINY, args, "abc", 1, 6.0, 0.5, complete=True))
    return model, path


def test_export_then_load_round_trips(tmp_path):
    model, path = exported(tmp_path)
    loaded = load_demo_model(path)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert loaded.metadata["data_md5"] == "abc" and loaded.metadata["complete"] == "true"
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(loaded(x, torch.tensor([0.3, 3.0])), model(x, torch.tensor([0.3, 3.0])))
    assert load_demo_model(path, dtype=torch.float64).unet.conv_in.weight.dtype == torch.float64


def test_loaded_model_runs_channels_last_and_hands_back_plain_layout(tmp_path):
    model, path = exported(tmp_path)
    loaded = load_demo_model(path)
    assert loaded.unet.conv_out.weight.is_contiguous(memory_format=torch.channels_last)
    assert not model.unet.conv_out.weight.is_contiguous(memory_format=torch.channels_last)
    out = loaded(torch.randn(3, 1, 32, 32), torch.tensor([0.05, 1.0, 20.0]))
    assert out.is_contiguous() and out.view(3, -1).shape == (3, 1024)  # callers may .view() the result


def test_missing_and_corrupt_files_name_the_training_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="make train-model"):
        load_demo_model(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!" + b"\x00" * 32)
    with pytest.raises(ValueError, match="corrupt.*make train-model"):
        load_demo_model(bad)


def test_file_without_model_config_is_rejected(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"format": "something else"})
    with pytest.raises(ValueError, match="model_config"):
        load_demo_model(path)


def test_committed_weights_load_and_denoise():
    # Fails (does not skip) while the weights are missing: the pack ships them.
    assert DEFAULT_WEIGHTS.is_file(), f"missing {DEFAULT_WEIGHTS}; run make train-model"
    model = load_demo_model()
    assert model.metadata["data_md5"] == fashion_mnist.IMAGE_MD5["train"]
    assert model.metadata["complete"] == "true", "the committed weights come from an unfinished run"
    assert 0.5e6 < model.param_count() < 3e6
    torch.manual_seed(0)
    x = torch.randn(2, 1, 32, 32) * 10.0
    out = model(x, torch.tensor([10.0, 10.0]))
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert out.abs().max().item() < 3.0  # about the data range [-1, 1]
    # training images are padded with background -1: a trained denoiser predicts it there even from
    # pure noise, while an untrained one (D = c_skip x ~ 0.02 x) would give about 0
    assert out[:, :, :2].mean().item() < -0.8


def test_ema_warmup_and_learning_rate_schedule():
    assert ema_decay(0, 0.999) == pytest.approx(0.1)
    assert ema_decay(10**6, 0.999) == 0.999
    args = argparse.Namespace(lr=1e-3, lr_final=1e-4, warmup=10)
    assert learning_rate(0, 0.0, args) == pytest.approx(1e-4)
    assert learning_rate(10, 0.0, args) == pytest.approx(1e-3)
    assert learning_rate(50, 1.0, args) == pytest.approx(1e-4)
    assert learning_rate(50, 0.5, args) == pytest.approx(5.5e-4)


def test_conditional_net_from_unconditional_weights_starts_as_that_net_and_learns_per_class():
    """A zero class embedding: every label gives the unconditional output until training moves it;
    label -1 (the empty prompt) is exactly the no-class branch, whatever the embedding holds."""
    uncond = randomized()
    cond = EDMDenoiser(UNetConfig(**{**TINY.to_dict(), "channels": tuple(TINY.channels), "num_classes": 10}))
    missing, unexpected = cond.load_state_dict(uncond.state_dict(), strict=False)
    assert missing == ["unet.class_emb.weight"] and not unexpected
    x, sigma = torch.randn(3, 1, 32, 32), torch.tensor([0.5, 2.0, 10.0])
    for labels in (torch.tensor([0, 4, 9]), torch.tensor([-1, -1, -1]), None):
        torch.testing.assert_close(cond(x, sigma, class_labels=labels), uncond(x, sigma))
    with torch.no_grad():
        cond.unet.class_emb.weight[:10].normal_()
    moved = cond(x, sigma, class_labels=torch.tensor([0, 4, 9]))
    assert not torch.allclose(moved, uncond(x, sigma))
    torch.testing.assert_close(cond(x, sigma, class_labels=torch.tensor([-1, -1, -1])), uncond(x, sigma))
    with pytest.raises(ValueError, match="-1 \\(unconditional\\) or 0..9"):
        cond(x, sigma, class_labels=torch.tensor([0, 10, 1]))


@pytest.mark.parametrize("text, label", [
    ("Sneaker", 7), ("  sneakers ", 7), ("ANKLE   boot", 9), ("Ankle boots", 9), ("T-shirt/top", 0), ("t-shirt", 0),
    ("top", 0), ("Trousers", 1), ("0", 0), ("9", 9), ("", -1), ("   ", -1),
])
def test_class_label_reads_names_plurals_and_indices(text, label):
    assert class_label(text) == label


@pytest.mark.parametrize("text", ["Sneakr", "10", "-1", "shoe", "T-shirt top"])
def test_unknown_class_lists_every_valid_one(text):
    with pytest.raises(ValueError, match="unknown Fashion-MNIST class") as error:
        class_label(text)
    assert all(f"{label} {name}" in str(error.value) for label, name in enumerate(CLASS_NAMES))
