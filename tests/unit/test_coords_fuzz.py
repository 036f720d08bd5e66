"""Loader fuzz: malformed coordinate files either load as a consistent object or raise PASFileError naming
the file; no other exception type escapes PASCoordinates.load.

The malformed files come from valid ones (format versions 1 and 2, one or two grids, with and without
corrected steps) with a fixed seed: random bytes, truncation at many offsets, bit flips; edits of the
header's JSON (wrong types, missing keys, non-object metadata/info/solver_options, huge or negative numbers,
unknown solvers); wrong dtypes or shapes, extra or missing tensors, and declared data lengths past the end
of the file or a header length past it. Files above the size cap are refused before they are read.
"""
import json
import random
import struct
from pathlib import Path

import pytest
import torch
from fuzz_helpers import assert_no_bad_outcomes, count_loaded
from safetensors.torch import save_file

import comfyui_pas.coords as coords_module
from comfyui_pas import PASCoordinates, edm_sigmas
from comfyui_pas.coords import GridCoordinates, PASFileError

SEED = 20240612
V1_DATA = Path(__file__).parent / "data"


# ---- valid files --------------------------------------------------------------------------------------
def valid_files(folder: Path) -> dict[str, bytes]:
    grids = [edm_sigmas(n, sigma_min=0.03, sigma_max=14.6, append_zero=True) for n in (5, 7)]
    made = {
        "euler": PASCoordinates(grids[0], "euler", None, 3, [2, 3], torch.tensor([[1.0, 0.2, -0.1], [0.9, 0.0, 0.3]]),
                                metadata={"cfg": 5.0, "prompts": ["a cat"], "losses": [0.5, 0.25]}),
        "dpmpp_2m_time_offsets": PASCoordinates(
            grids[0], "dpmpp_2m", None, 3, [2], torch.tensor([[1.0, 0.2, -0.1]]), "relative",
            log_offsets=torch.tensor([0.1, -0.4, 0.0, -0.2, 0.3]),
            more_grids=[GridCoordinates(grids[1], [3], torch.tensor([[0.9, 0.0, 0.1]]),
                                        torch.tensor([0.0, -0.3, -0.1, 0.0, 0.0, 0.2, 0.0]))]),
        "ipndm_two_grids": PASCoordinates(
            grids[0], "ipndm", 3, 2, [1], torch.tensor([[1.0, 0.5]]), "relative", metadata={"nested": {"k": [1, 2]}},
            more_grids=[GridCoordinates(grids[1], [1, 4], torch.tensor([[1.0, 0.1], [0.8, -0.2]]))]),
        "no_steps": PASCoordinates(grids[1], "deis", 2, 4, [], torch.zeros(0, 4)),
    }
    blobs = {name: Path(c.save(folder / f"valid_{name}.safetensors")).read_bytes() for name, c in made.items()}
    for name in ("v1_euler_absolute", "v1_ipndm3_relative"):
        blobs[name] = (V1_DATA / f"{name}.safetensors").read_bytes()
    return {name: join(*split(blob)) for name, blob in blobs.items()}  # the same bytes in every run


def split(blob: bytes) -> tuple[dict, bytes]:
    size = struct.unpack("<Q", blob[:8])[0]
    return json.loads(blob[8:8 + size]), blob[8 + size:]


def join(header: dict, data: bytes, pad: bool = True) -> bytes:
    """A safetensors file from its header and data; keys sorted, as safetensors writes them in hash order."""
    text = json.dumps(header, sort_keys=True).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


# ---- mutations ------------------------------------------------------------------------------------------
HUGE = ["1e309", "-1e309", "nan", "inf", "99999999999999999999999999", "-1", "-99999999999", "0", "1.5", "", " 3",
        "0x10", "true", "null", "[]", "{}", "\"3\"", "3" * 5000]
JSON_VALUES = ["[1, 2]", "3", "null", "\"text\"", "true", "[{}]", "{", "{\"a\": }", "", "{\"max_order\": [1]}",
               "{\"max_order\": \"x\"}", "{\"max_order\": 1e309}", "{\"max_order\": -1e309}", "{\"max_order\": 99999}",
               "{\"max_order\": true}", "{\"max_order\": {}}", "{\"bogus\": 1}", "{\"max_order\": null}",
               "{\"max_order\": 2.7}", "{\"max_order\": \"NaN\"}"]
SOLVERS = ["bogus", "", "EULER", "ddim", "ipndm_v", "deis", "dpmpp_2m", "res_multistep", "uni_pc", "euler ", "ïpndm"]
DTYPES = ["F16", "BF16", "F32", "I64", "I32", "I16", "I8", "U8", "BOOL", "F64", "U64", "F8_E4M3", "XYZ", "", 7]


def header_edits(rng: random.Random, blob: bytes) -> bytes:
    """One random edit of the JSON header (metadata strings or tensor entries)."""
    header, data = split(blob)
    meta = header.setdefault("__metadata__", {})
    tensors = [k for k in header if k != "__metadata__"]
    choice = rng.randrange(14)
    if choice == 0 and meta:  # a metadata key missing
        meta.pop(rng.choice(sorted(meta)))
    elif choice == 1:  # a number field out of range or malformed
        meta[rng.choice(["n_basis", "max_order", "grids", "format_version"])] = rng.choice(HUGE)
    elif choice == 2:  # info / solver_options as other JSON, or not JSON
        meta[rng.choice(["info", "solver_options"])] = rng.choice(JSON_VALUES)
    elif choice == 3:
        meta["solver"] = rng.choice(SOLVERS)
    elif choice == 4:  # a metadata value of another JSON type (safetensors wants strings)
        meta[rng.choice(sorted(meta) or ["info"])] = rng.choice([3, None, [1], {"a": 1}, 1.5, True])
    elif choice == 5:  # __metadata__ itself not an object
        header["__metadata__"] = rng.choice([[], "text", 3, None])
    elif choice == 6:
        meta["parameterization"] = rng.choice(["", "ABSOLUTE", "both", "relative\x00"])
    elif choice == 7:
        meta["format"] = rng.choice(["", "safetensors", "comfyui-pas-coordinates ", "COMFYUI-PAS-COORDINATES"])
    elif choice == 8:  # a tensor of another dtype (same bytes)
        header[rng.choice(tensors)]["dtype"] = rng.choice(DTYPES)
    elif choice == 9:  # another shape
        header[rng.choice(tensors)]["shape"] = rng.choice([[], [0], [1], [2, 2, 2], [-1], [1, 0], [10 ** 12],
                                                           [2 ** 62, 4], "x", [1.5]])
    elif choice == 10:  # declared data past the end of the file, reversed or overlapping offsets
        entry = header[rng.choice(tensors)]
        start, end = entry["data_offsets"]
        entry["data_offsets"] = rng.choice([[start, len(data) + 8], [start, 2 ** 40], [end, start], [0, end],
                                            [start, end + 8], [-8, end], [start], "x", [start, 2 ** 64 + 1]])
    elif choice == 11:  # a tensor missing
        header.pop(rng.choice(tensors))
    elif choice == 12:  # an extra tensor (a stray grid, or an unknown name), pointing into the data
        name = rng.choice(["grid1.sigmas", "grid1.steps", "grid1.coordinates", "grid5.sigmas", "extra", ""])
        header[name] = dict(header[rng.choice(tensors)])
    else:  # more grids declared than stored
        meta["grids"] = rng.choice(["2", "3", "64", "65"])
    return join(header, data, pad=rng.random() < 0.8)


def tensor_edits(rng: random.Random, blob: bytes, path: Path) -> bytes:
    """Rewrite the file with real safetensors but tensors of a wrong dtype, shape or content."""
    header, _ = split(blob)
    from safetensors.torch import load_file

    tmp = path.with_suffix(".src")
    tmp.write_bytes(blob)
    tensors = load_file(str(tmp))
    key = rng.choice(sorted(tensors))
    value = tensors[key]
    choice = rng.randrange(9)
    if choice == 0:
        tensors[key] = value.to(rng.choice([torch.float32, torch.float16, torch.int32, torch.int64, torch.float64,
                                            torch.bool, torch.uint8]))
    elif choice == 1:
        tensors[key] = value.reshape(1, -1) if value.numel() else torch.zeros(2, 0, 3, dtype=value.dtype)
    elif choice == 2:
        tensors[key] = value.flatten()
    elif choice == 3:  # non-finite or extreme values
        filled = value.clone()
        if filled.numel():
            filled.view(-1)[rng.randrange(filled.numel())] = rng.choice(
                [float("nan"), float("inf"), -1.0, 1e300, 0.0] if filled.is_floating_point() else [-1, 2 ** 62, 0, 999])
        tensors[key] = filled
    elif choice == 4:
        tensors[key] = value.flip(0) if value.ndim else value
    elif choice == 5:
        tensors[rng.choice(["grid1.sigmas", "extra", "grid1.steps"])] = torch.arange(3, dtype=torch.float64)
    elif choice == 6:
        tensors[key] = torch.cat([value, value]) if value.ndim else value
    elif choice == 7:
        tensors[key] = value[:0] if value.ndim else value
    else:
        tensors.pop(key)
    out = path.with_suffix(".out")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out), metadata=header.get("__metadata__"))
    return join(*split(out.read_bytes()))


def random_bytes(rng: random.Random) -> bytes:
    kind = rng.randrange(3)
    body = bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 7, 8, 9, 64, 300, 1500])))
    if kind == 0:
        return body
    if kind == 1:  # a plausible header length, then garbage
        return struct.pack("<Q", rng.choice([len(body), 2, 2 ** 40, 2 ** 63, 0])) + body
    return struct.pack("<Q", len(body) + 2) + b"{" + body + b"}"


def bit_flips(rng: random.Random, blob: bytes) -> bytes:
    data = bytearray(blob)
    header_end = 8 + struct.unpack("<Q", blob[:8])[0]
    for _ in range(rng.choice([1, 1, 2, 3, 8])):
        position = rng.randrange(header_end) if rng.random() < 0.6 else rng.randrange(len(data))
        data[position] ^= 1 << rng.randrange(8)
    return bytes(data)


def length_edits(rng: random.Random, blob: bytes) -> bytes:
    """The 8-byte header length pointing past the end, into the JSON, or far away."""
    size = struct.unpack("<Q", blob[:8])[0]
    wrong = rng.choice([size + 1, size - 1, size + 8, len(blob), len(blob) + 1, 2 ** 31, 2 ** 63, 2 ** 64 - 1, 0, 1,
                        rng.randrange(size)])
    return struct.pack("<Q", wrong) + blob[8:]


def cases(folder: Path):
    """(label, bytes) for every malformed file, from a fixed seed."""
    rng = random.Random(SEED)
    valid = valid_files(folder)
    for name, blob in valid.items():
        yield f"valid:{name}", blob
    for _ in range(250):
        yield "random bytes", random_bytes(rng)
    for name, blob in valid.items():
        offsets = set(range(0, 24)) | {len(blob) - 1, len(blob) - 8} | {rng.randrange(len(blob)) for _ in range(90)}
        for offset in sorted(offsets):
            yield f"truncated:{name}", blob[:offset]
    edits = [("bit flips", 120, lambda blob: bit_flips(rng, blob)),
             ("length edit", 20, lambda blob: length_edits(rng, blob)),
             ("header edit", 170, lambda blob: header_edits(rng, blob)),
             ("tensor edit", 40, lambda blob: tensor_edits(rng, blob, folder / "work.safetensors"))]
    for kind, count, edit in edits:
        for name, blob in valid.items():
            for _ in range(count):
                yield f"{kind}:{name}", edit(blob)


# ---- the property ---------------------------------------------------------------------------------------
def check_consistent(loaded: PASCoordinates, folder: Path) -> None:
    """A loaded object is usable everywhere the pack uses one and survives a save / load round trip."""
    assert isinstance(loaded, PASCoordinates) and isinstance(loaded.metadata, dict)
    for grid in loaded.grids:
        grid.check(loaded.n_basis)
        assert torch.isfinite(grid.coordinates).all()
    loaded.describe()
    loaded.validate_for(loaded.sigmas, loaded.solver, loaded.max_order)
    for key, value in loaded.metadata.items():  # what describe_file in nodes.py does with it
        str(key), str(value)
    again = PASCoordinates.load(loaded.save(folder / "resaved.safetensors"))
    assert again.describe() == loaded.describe() and again.metadata == loaded.metadata


def test_malformed_files_load_consistently_or_raise_pas_file_error(tmp_path):
    outcomes: dict[str, int] = {"loaded": 0, "PASFileError": 0}
    bad = []
    total = 0
    for index, (label, blob) in enumerate(cases(tmp_path)):
        total += 1
        path = tmp_path / f"case_{index:05d}.safetensors"
        path.write_bytes(blob)
        try:
            loaded = PASCoordinates.load(path)
        except PASFileError as error:
            if path.name not in str(error):
                bad.append((label, f"PASFileError without the file name: {error}"))
            outcomes["PASFileError"] += 1
        except BaseException as error:  # noqa: B036 (any other exception type is what this test looks for)
            bad.append((label, f"{type(error).__name__}: {error}"))
        else:
            count_loaded(outcomes, bad, label, check_consistent, loaded, tmp_path)
        path.unlink()
    print(f"fuzz: {total} files, {outcomes}, {len(bad)} bad outcomes")
    assert total >= 2000
    assert outcomes["loaded"] >= 5  # the valid files, and harmless edits, still load
    assert_no_bad_outcomes(bad, total)


@pytest.mark.parametrize("info", ["[1, 2]", "3", "null", "\"text\"", "{", ""])
def test_info_that_is_not_a_json_object_is_refused(tmp_path, info):
    blob = valid_files(tmp_path)["euler"]
    header, data = split(blob)
    header["__metadata__"]["info"] = info
    path = tmp_path / "info.safetensors"
    path.write_bytes(join(header, data))
    with pytest.raises(PASFileError, match="info.safetensors"):
        PASCoordinates.load(path)


def test_files_above_the_size_cap_are_refused_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint_by_mistake.safetensors"
    with open(path, "wb") as handle:
        handle.truncate(coords_module.MAX_FILE_BYTES + 1)  # sparse: no disk space used

    def no_reading(*args, **kwargs):
        raise AssertionError("the file was read")

    monkeypatch.setattr(coords_module, "load_file", no_reading)
    monkeypatch.setattr("safetensors.safe_open", no_reading)
    with pytest.raises(PASFileError, match="checkpoint_by_mistake.safetensors.*MiB"):
        PASCoordinates.load(path)
