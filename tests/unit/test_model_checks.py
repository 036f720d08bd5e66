"""PASCoordinates.check_model and the uncovered-grid message: what the sampler says about a mismatch."""
import pytest
import torch

from comfyui_pas import PASCoordinates, edm_sigmas

SIGMAS = edm_sigmas(4, sigma_min=0.03, sigma_max=14.6, append_zero=True)
TRAINED_ON = {"model_class": "SD15", "model_type": "EPS", "latent_channels": 4, "model_fingerprint": "aaaa"}


def coords(**metadata):
    return PASCoordinates(SIGMAS, "euler", None, 2, [1], torch.tensor([[1.0, 0.1]]), metadata=metadata)


def test_same_model_gives_no_warning():
    assert coords(**TRAINED_ON).check_model(dict(TRAINED_ON)) == []


def test_another_fingerprint_warns_naming_both():
    warnings = coords(**TRAINED_ON).check_model(dict(TRAINED_ON, model_fingerprint="bbbb"))
    assert len(warnings) == 1 and "aaaa" in warnings[0] and "bbbb" in warnings[0]


@pytest.mark.parametrize(("key", "other", "words"), [("model_type", "FLOW", "model type EPS"),
                                                     ("latent_channels", 16, "latent channel count 4")])
def test_another_model_type_or_latent_channel_count_is_refused_naming_both(key, other, words):
    with pytest.raises(ValueError) as error:
        coords(**TRAINED_ON).check_model(dict(TRAINED_ON, **{key: other}, model_class="Flux"))
    assert words in str(error.value) and str(other) in str(error.value)
    assert "SD15" in str(error.value) and "Flux" in str(error.value)


def test_files_without_a_fingerprint_or_model_record_are_not_checked():
    assert coords().check_model(dict(TRAINED_ON, model_type="FLOW")) == []
    assert coords(model_type="EPS").check_model(dict(TRAINED_ON, model_fingerprint="cccc")) == []


def test_uncovered_message_names_step_counts_scheduler_and_denoise():
    message = coords(scheduler="karras", denoise=0.5).uncovered_message(edm_sigmas(6, append_zero=True))
    assert "covers 4 steps (karras, denoise 0.5)" in message and "gives 6 steps" in message
    assert coords().coverage() == "4 steps"
