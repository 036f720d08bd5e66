"""PAS coordinate files: round trip, atomic writes, strict validation with actionable messages."""
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from comfyui_pas import PASCoordinates, edm_sigmas, sample_pas
from comfyui_pas.coords import GridCoordinates, PASFileError

SIGMAS = edm_sigmas(10, sigma_min=0.0292, sigma_max=14.6146, append_zero=True)


def example(**changes):
    fields = dict(sigmas=SIGMAS, solver="euler", max_order=1, n_basis=4, steps=[3, 5, 7],
                  coordinates=torch.arange(12, dtype=torch.float64).reshape(3, 4) / 7,
                  parameterization="absolute", metadata={"cfg": 7.5, "model": "sd15.safetensors", "loss": "l1"})
    fields.update(changes)
    return PASCoordinates(**fields)


def raw_file(path, tensors=None, **header):
    base = {"sigmas": SIGMAS.clone(), "steps": torch.tensor([3]), "coordinates": torch.ones(1, 4, dtype=torch.float64)}
    base.update(tensors or {})
    meta = {"format": "comfyui-pas-coordinates", "format_version": "1", "solver": "euler", "max_order": "1",
            "n_basis": "4", "parameterization": "absolute", "info": "{}"}
    meta.update(header)
    save_file(base, str(path), metadata=meta)
    return path


def test_round_trip_keeps_everything(tmp_path):
    original = example(solver="ipndm", max_order=3, parameterization="relative")
    path = original.save(tmp_path / "pas" / "sd15_00001.safetensors")
    loaded = PASCoordinates.load(path)
    assert torch.equal(loaded.sigmas, original.sigmas) and torch.equal(loaded.coordinates, original.coordinates)
    assert (loaded.solver, loaded.max_order, loaded.n_basis, loaded.steps, loaded.parameterization) == \
        ("ipndm", 3, 4, [3, 5, 7], "relative")
    assert loaded.metadata == original.metadata
    assert loaded.n_parameters == 12
    assert os.listdir(tmp_path / "pas") == ["sd15_00001.safetensors"]


def test_no_corrected_step_is_a_valid_file(tmp_path):
    empty = example(steps=[], coordinates=torch.zeros(0, 4))
    assert PASCoordinates.load(empty.save(tmp_path / "empty.safetensors")).steps == []


def test_saved_file_has_the_mode_of_a_normally_created_file(tmp_path):
    mask = os.umask(0o022)
    try:
        path = example().save(tmp_path / "c.safetensors")
        (tmp_path / "plain").write_bytes(b"")
    finally:
        os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == os.stat(tmp_path / "plain").st_mode & 0o777 == 0o644


def assert_load_refused(path, match: str) -> None:
    with pytest.raises(PASFileError, match=match):
        PASCoordinates.load(path)


def test_failed_save_leaves_the_old_file_and_no_temporary(tmp_path):
    path = example().save(tmp_path / "c.safetensors")
    before = path_bytes = open(path, "rb").read()
    broken = example(metadata={"bad": object()})
    with pytest.raises(TypeError):
        broken.save(path)
    assert open(path, "rb").read() == before == path_bytes
    assert os.listdir(tmp_path) == ["c.safetensors"]


def test_truncated_file(tmp_path):
    path = example().save(tmp_path / "c.safetensors")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    assert_load_refused(path, "corrupt or truncated")


def test_not_a_safetensors_file(tmp_path):
    path = tmp_path / "c.safetensors"
    path.write_text("definitely not safetensors")
    assert_load_refused(path, "corrupt or truncated")


def test_other_safetensors_file(tmp_path):
    path = tmp_path / "lora.safetensors"
    save_file({"w": torch.ones(2)}, str(path))
    assert_load_refused(path, "not a PAS coordinates file")


def test_wrong_dtype(tmp_path):
    path = raw_file(tmp_path / "c.safetensors", {"coordinates": torch.ones(1, 4, dtype=torch.float32)})
    assert_load_refused(path, "dtype")


def test_nan_coordinates(tmp_path):
    path = raw_file(tmp_path / "c.safetensors", {"coordinates": torch.full((1, 4), float("nan"), dtype=torch.float64)})
    assert_load_refused(path, "NaN")


def test_unknown_version(tmp_path):
    path = raw_file(tmp_path / "c.safetensors", format_version="99")
    assert_load_refused(path, "version '99'")


@pytest.mark.parametrize("tensors, header, message", [
    ({"steps": torch.tensor([3, 3])}, {}, "shape"),
    ({"steps": torch.tensor([12]), "coordinates": torch.ones(1, 4, dtype=torch.float64)}, {}, "within"),
    ({"steps": torch.tensor([0])}, {}, "cannot carry"),
    ({}, {"solver": "dpmpp"}, "unknown solver"),
    ({}, {"info": "{not json"}, "malformed"),
    ({"sigmas": torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)}, {}, "decreasing"),
])
def test_inconsistent_files(tmp_path, tensors, header, message):
    path = raw_file(tmp_path / "c.safetensors", tensors, **header)
    assert_load_refused(path, message)


def test_missing_file_is_named(tmp_path):
    assert_load_refused(tmp_path / "nope.safetensors", "not found")


def test_validate_accepts_float32_copy_of_the_grid():
    coords = example()
    coords.validate_for(SIGMAS.float(), "ddim", 1)  # raises if the float32 copy were refused
    entry = coords.entry_for(SIGMAS.float())
    assert torch.equal(entry.sigmas, coords.sigmas) and entry.steps == coords.steps
    beyond_float32 = SIGMAS.clone()
    beyond_float32[3] *= 1 + 1e-3  # a different grid, not a rounding of this one
    with pytest.raises(ValueError, match="sigmas differ"):
        coords.validate_for(beyond_float32, "ddim", 1)


@pytest.mark.parametrize("sigmas, solver, order, expected", [
    (edm_sigmas(8, 0.0292, 14.6146, append_zero=True), "euler", 1, "the workflow gives 8 steps"),
    (SIGMAS * 0.9, "euler", 1, "sigmas differ"),
    (SIGMAS, "ipndm", 3, "the sampler uses ipndm"),
])
def test_validate_names_what_was_trained_and_what_is_given(sigmas, solver, order, expected):
    with pytest.raises(ValueError) as info:
        example().validate_for(sigmas, solver, order)
    text = str(info.value)
    assert "trained for 10 steps of euler" in text and "14.61" in text and expected in text
    assert "PAS Trainer" in text and (solver != "euler" or "denoise" in text)


def test_ipndm_order_mismatch():
    with pytest.raises(ValueError, match="order 2"):
        example(solver="ipndm", max_order=3).validate_for(SIGMAS, "ipndm", 2)


def test_metadata_is_plain_json(tmp_path):
    coords = example(metadata={"losses": torch.tensor([0.5, float("inf")]), "n": torch.tensor(3)})
    path = coords.save(tmp_path / "m.safetensors")
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as handle:
        info = json.loads(handle.metadata()["info"])
    assert info == {"losses": [0.5, None], "n": 3}


V1_DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("name, solver, order", [("v1_euler_absolute", "euler", None),
                                                 ("v1_ipndm3_relative", "ipndm", 3)])
def test_format_version_1_files_load_and_sample_as_before(gmm, name, solver, order):
    """Files written by format version 1 (commit dc9c491) give the samples that version gave (to 1e-9 in
    float64: the basis Gram matrix is now one batched matmul, which rounds differently, ~1e-11)."""
    coords = PASCoordinates.load(V1_DATA / f"{name}.safetensors")
    assert coords.solver == solver and coords.max_order == order and len(coords.grids) == 1
    expected = load_file(str(V1_DATA / "v1_expected_samples.safetensors"))
    start = expected["start_noise"] * coords.sigmas[0]
    out = sample_pas(gmm, start, coords.sigmas, solver=solver, max_order=order, coords=coords)
    torch.testing.assert_close(out, expected[name], rtol=1e-9, atol=1e-9)
    assert not torch.allclose(out, sample_pas(gmm, start, coords.sigmas, solver=solver, max_order=order), atol=1e-3)


def test_version_2_round_trip_keeps_solver_options_and_every_grid(tmp_path):
    grids = [edm_sigmas(n, append_zero=True) for n in (4, 6)]
    coords = PASCoordinates(grids[0], "deis", 2, 2, [2], torch.tensor([[1.0, 0.5]]), "relative",
                            more_grids=[GridCoordinates(grids[1], [1, 3], torch.tensor([[1.0, 0.1], [0.9, 0.0]]))])
    loaded = PASCoordinates.load(coords.save(tmp_path / "deis.safetensors"))
    assert loaded.solver_options == {"max_order": 2} and loaded.step_counts == [4, 6]
    assert loaded.entry_for(grids[1].float()).steps == [1, 3]
    with pytest.raises(ValueError, match="covers 4, 6 steps"):
        loaded.entry_for(edm_sigmas(5, append_zero=True))
