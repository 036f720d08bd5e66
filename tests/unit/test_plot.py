"""The error-curve figure renders from a real search report."""
import numpy as np

from comfyui_pas import edm_sigmas, train_pas
from comfyui_pas.plot import error_curve_image, save_error_curve
from train_tools.data.seeds import seeded_noise


def test_error_curve_renders_rgb_and_png(gmm, tmp_path):
    sigmas = edm_sigmas(6)
    _, report = train_pas(gmm, seeded_noise(range(16), (96,)) * 80, sigmas, teacher_nfe=24)
    image = error_curve_image(report)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and image.shape[0] > 100
    assert image.std() > 10  # not a blank canvas
    path = save_error_curve(report, tmp_path / "curve.png")
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
