"""The guard probe's statistics on hand-made images."""
import torch

from train_tools.studies.guard_probe import BANDS, gap_row, radial_log_power


def test_radial_log_power_puts_flat_images_in_the_lowest_band_and_checkerboards_in_the_highest():
    flat = torch.full((1, 1, 16, 16), 0.5)
    checker = ((torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2).float().mul(2).sub(1)[None, None]
    flat_bands, checker_bands = radial_log_power(flat)[0], radial_log_power(checker)[0]
    assert flat_bands.shape == (BANDS,) and int(flat_bands.argmax()) == 0
    assert float(flat_bands[1:].max()) < -20  # no power off DC (clamped at 1e-12)
    # a +-1 checkerboard: all its power at (8, 8), radius 8*sqrt(2), the outermost band
    assert int(checker_bands.argmax()) == BANDS - 1 and float(checker_bands[:-1].max()) < -20


def test_gap_row_compares_each_statistic_with_the_teachers():
    result = {"case": "c", "measured": "m", "steps": [1],
              "teacher": {"rmse": 0.0, "contrast": 0.6, "spectrum_gap": 0.0},
              "base": {"rmse": 0.3, "contrast": 0.8, "spectrum_gap": 0.5},
              "pas": {"rmse": 0.2, "contrast": 0.5, "spectrum_gap": 0.7}}
    # contrast: |0.8 - 0.6| = 0.2 -> |0.5 - 0.6| = 0.1; rmse and spectrum are gaps already
    assert gap_row(result) == ["c", "m", "[1]", "0.3 -> 0.2 (shrinks)", "0.2 -> 0.1 (shrinks)", "0.5 -> 0.7 (grows)"]


def test_across_samples_sees_a_shrink_toward_the_mean_and_a_shift_of_it():
    from train_tools.studies.guard_probe import across_samples

    teacher = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    same = across_samples(teacher, teacher)
    assert same["mean_gap"] == 0.0 and abs(same["coarse_fd"]) < 1e-9 and abs(same["patch_fd"]) < 1e-9
    # pulled halfway to the batch mean: a quarter of the variance, the same mean
    shrunk = across_samples(teacher.mean(0) + 0.5 * (teacher - teacher.mean(0)), teacher)
    assert abs(shrunk["diversity"] - 0.25 * same["diversity"]) < 1e-9 and shrunk["mean_gap"] < 1e-6
    assert shrunk["coarse_fd"] > 0.01
    # shifted by 0.3 everywhere: the RMS of the mean's difference is 0.3, the variance is unchanged
    shifted = across_samples(teacher + 0.3, teacher)
    assert abs(shifted["mean_gap"] - 0.3) < 1e-6 and abs(shifted["diversity"] - same["diversity"]) < 1e-9
    # coarse cells (4x4 of 8x8 -> 2x2, one channel): the squared shift summed over 4 dimensions
    assert abs(shifted["coarse_fd"] - 4 * 0.3 ** 2) < 1e-4
