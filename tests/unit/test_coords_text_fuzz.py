"""Text-form fuzz: malformed coordinates texts raise one PASFileError that names the node, or load.

The texts come from valid ones (one and two grids, with and without corrected steps, three solvers) with a
fixed seed. Two kinds of damage:
* in transit (the checksum is left as it was): truncation, deleted / inserted / replaced characters, case
  changes, line breaks, text joined before or after, the checksum or version edited. None of these may load
  other coordinates: a load counts as silent unless it gives back exactly the original.
* deliberate (the checksum is recomputed, so only the validation stands between the text and the sampler):
  JSON edits of every field (wrong types, missing or unknown keys, NaN / huge / negative numbers, deep
  nesting, repeated keys, ragged or misshapen coordinates, unsorted or out-of-range steps, unknown solvers
  and options) and random character edits. A load must then be a consistent object that survives the text
  and the file round trip.
Plus random strings and values that are not text.
"""
import copy
import json
import random
import string

import torch
from fuzz_helpers import assert_no_bad_outcomes, count_loaded

from comfyui_pas import PASCoordinates, edm_sigmas
from comfyui_pas.coords import GridCoordinates, PASFileError
from comfyui_pas.coords_text import MAX_TEXT_CHARS, TEXT_MARKER, checksum

SEED = 20250219
SOURCE = "PAS Coordinates (text)"


def valid_coordinates() -> dict[str, PASCoordinates]:
    grids = [edm_sigmas(n, sigma_min=0.03, sigma_max=14.6, append_zero=True).float().double() for n in (5, 7)]
    return {
        "euler": PASCoordinates(grids[0], "euler", None, 3, [2, 3], torch.tensor([[1.0, 0.2, -0.1], [0.9, 0.0, 0.3]]),
                                metadata={"cfg": 5.0, "model_type": "EPS", "latent_channels": 4, "denoise": 1.0,
                                          "model_fingerprint": "sha256-subset:0123456789abcdef", "per_step": [1]}),
        "dpmpp_2m_time_offsets": PASCoordinates(
            grids[0], "dpmpp_2m", None, 3, [2], torch.tensor([[1.0, 0.2, -0.1]]), "relative",
            log_offsets=torch.tensor([0.1, -0.4, 0.0, -0.2, 0.3]),
            more_grids=[GridCoordinates(grids[1], [3], torch.tensor([[0.9, 0.0, 0.1]]),
                                        torch.tensor([0.0, -0.3, -0.1, 0.0, 0.0, 0.2, 0.0]))]),
        "ipndm_two_grids": PASCoordinates(
            grids[0], "ipndm", 3, 2, [1], torch.tensor([[1.0, 0.5]]), "relative", metadata={"scheduler": "karras"},
            more_grids=[GridCoordinates(grids[1], [1, 4], torch.tensor([[1.0, 0.1], [0.8, -0.2]]))]),
        "deis_no_steps": PASCoordinates(grids[1], "deis", 2, 4, [], torch.zeros(0, 4)),
    }


def parts(text: str) -> tuple[str, str, str, dict]:
    marker, version, digest, payload = text.split(" ", 3)
    return marker, version, digest, json.loads(payload)


def signed(content, marker=TEXT_MARKER, version="v2", raw: str | None = None) -> str:
    payload = raw if raw is not None else json.dumps(content, sort_keys=True, separators=(",", ":"))
    return f"{marker} {version} {checksum(payload)} {payload}"


# ---- damage in transit: the checksum stays ------------------------------------------------------------
def transit_damage(rng: random.Random, text: str) -> str:
    choice = rng.randrange(12)
    at = rng.randrange(len(text))
    if choice == 0:
        return text[:at]
    if choice == 1:
        return text[:at] + text[at + rng.randint(1, 8):]
    if choice == 2:
        return text[:at] + rng.choice(string.printable + "é\x00\u2028") + text[at:]
    if choice == 3:
        return text[:at] + rng.choice(string.digits + ".,-e ]}") + text[at + 1:]
    if choice == 4:  # a widget or mail client wrapping the line
        width = rng.randint(20, 200)
        return "\n".join(text[i:i + width] for i in range(0, len(text), width))
    if choice == 5:
        return text.upper() if rng.random() < 0.3 else text[:at] + text[at:].swapcase()
    if choice == 6:
        return rng.choice(["copied: ", "PAS ", text[:40], "\n\n"]) + text + rng.choice([" x", text[-30:], "}", ""])
    if choice == 7:  # two texts pasted into one widget
        return text + rng.choice(["\n", " "]) + text
    if choice == 8:  # a digit of the checksum
        marker, version, digest, payload = text.split(" ", 3)
        k = rng.randrange(len(digest))
        wrong = digest[:k] + rng.choice("0123456789abcdefABCDEF ") + digest[k + 1:]
        return f"{marker} {version} {wrong} {payload}"
    if choice == 9:
        marker, version, digest, payload = text.split(" ", 3)
        return " ".join([rng.choice([marker, marker.upper(), "comfyui-pas", ""]),
                         rng.choice(["v1", "v3", "2", "V2", "", "v2.0"]), digest, payload])
    if choice == 10:  # a swapped pair of characters inside the JSON
        j = rng.randrange(len(text) - 1)
        return text[:j] + text[j + 1] + text[j] + text[j + 2:]
    return text[:at] + text[at:at + rng.randint(1, 30)] + text[at:]  # a piece duplicated


# ---- deliberate edits: the checksum is recomputed ------------------------------------------------------
BAD_VALUES = [None, True, False, 0, -1, 1.5, 1e308, -1e308, 10 ** 40, "3", "", [], {}, [[]], [None], ["x"],
              [1, "2"], {"a": 1}, [1e308, 1e308]]


def path_to(rng: random.Random, content):
    """A random (container, key) inside the JSON."""
    container, key = None, None
    node = content
    for _ in range(rng.randint(1, 5)):
        if isinstance(node, dict) and node:
            key = rng.choice(sorted(node))
        elif isinstance(node, list) and node:
            key = rng.randrange(len(node))
        else:
            break
        container, node = node, node[key]
    return container, key


def json_edit(rng: random.Random, content: dict):
    """(content, raw payload or None) after one edit."""
    content = copy.deepcopy(content)
    choice = rng.randrange(12)
    container, key = path_to(rng, content)
    if choice <= 2 and container is not None:
        container[key] = copy.deepcopy(rng.choice(BAD_VALUES))
    elif choice == 3 and container is not None:
        container.pop(key) if isinstance(container, dict) else container.pop(key)
    elif choice == 4:
        target = rng.choice([content, *content["grids"]])
        target[rng.choice(["extra", "grids", "sigmas", "Solver", ""])] = rng.choice(BAD_VALUES)
    elif choice == 5:
        content["solver"] = rng.choice(["bogus", "", "EULER", "ddim", "uni_pc", "euler ", "dpmpp_2m", "ipndm_v"])
    elif choice == 6:
        content["solver_options"] = rng.choice([{"max_order": 9}, {"max_order": 0}, {"max_order": "2"},
                                                {"max_order": 2.5}, {"bogus": 1}, {"max_order": True}, {}, []])
    elif choice == 7:
        grid = rng.choice(content["grids"])
        edit = rng.randrange(6)
        if edit == 0:
            grid["steps"] = rng.choice([[3, 2], [0, 0], [-1], [99], [1.0], [True], [2 ** 70]])
        elif edit == 1:
            grid["sigmas"] = list(reversed(grid["sigmas"])) if rng.random() < 0.5 else grid["sigmas"][:1]
        elif edit == 2:
            grid["coordinates"] = [row[:-1] for row in grid["coordinates"]] or [[1.0]]
        elif edit == 3:
            grid["coordinates"] = grid["coordinates"] + [[0.5] * content["n_basis"]]
        elif edit == 4:
            grid["sigmas"] = [s * rng.choice([-1, 1e308, 0]) for s in grid["sigmas"]]
        else:
            grid["coordinates"] = [[rng.choice([1e308, -1e308, 0.0, 2.0])] * len(row) for row in grid["coordinates"]]
    elif choice == 8:
        content["grids"] = rng.choice([[], content["grids"] * 2, content["grids"] * 40, content["grids"][:1]])
    elif choice == 9:  # raw JSON that json.dumps would not write
        raw = json.dumps(content, sort_keys=True)
        return None, rng.choice([raw.replace("1.0", "NaN", 1), raw.replace("1.0", "Infinity", 1),
                                 raw.replace("1.0", "1e999", 1), "[" * 50_000 + "]" * 50_000, raw[:-1] + ',"n_basis":2}',
                                 raw.replace("1.0", "1" + "0" * 5000, 1), "null", "[]", '"text"', raw + raw])
    elif choice == 10:
        content["n_basis"] = rng.choice([0, 9, -3, 2, 4, 10 ** 30, 3.0])
    else:
        content["info"] = rng.choice([[], "x", None, {"model_type": [1]}, {"denoise": "half"}, {"k": {"n": [1, None]}}])
    return content, None


def resigned_char_edit(rng: random.Random, text: str) -> str:
    marker, version, _, payload = text.split(" ", 3)
    chars = list(payload)
    for _ in range(rng.choice([1, 1, 2, 5])):
        at = rng.randrange(len(chars))
        chars[at] = rng.choice(string.printable)
    return signed(None, marker, version, raw="".join(chars))


def random_inputs(rng: random.Random):
    for _ in range(60):
        yield "random text", "".join(rng.choice(string.printable) for _ in range(rng.choice([0, 1, 5, 50, 500])))
    for value in (None, b"comfyui-pas-coordinates", 3, 1.5, ["a"], {"a": 1}, TEXT_MARKER, f"{TEXT_MARKER} v2",
                  f"{TEXT_MARKER} v2 0", " " * 100, "x" * (MAX_TEXT_CHARS + 1)):
        yield "not a coordinates text", value


def cases():
    rng = random.Random(SEED)
    texts = {name: coords.to_text() for name, coords in valid_coordinates().items()}
    for name, text in texts.items():
        yield "valid", name, text
    for name, text in texts.items():
        for _ in range(450):
            yield "transit", name, transit_damage(rng, text)
    for name, text in texts.items():
        content = parts(text)[3]
        for _ in range(250):
            edited, raw = json_edit(rng, content)
            yield "resigned", name, signed(edited, raw=raw)
        for _ in range(80):
            yield "resigned", name, resigned_char_edit(rng, text)
    for label, value in random_inputs(rng):
        yield label, "", value


def check_consistent(loaded: PASCoordinates, folder) -> None:
    """What the pack does with loaded coordinates works, and text and file round trips keep them."""
    for grid in loaded.grids:
        grid.check(loaded.n_basis)
    loaded.describe(), loaded.coverage()
    loaded.validate_for(loaded.sigmas, loaded.solver, loaded.max_order)
    text = loaded.to_text()
    assert PASCoordinates.from_text(text).to_text() == text
    again = PASCoordinates.load(loaded.save(folder / "resaved.safetensors"))
    assert again.to_text() == text


def test_fuzzed_texts_raise_one_clear_error_or_load_consistently(tmp_path):
    originals = {name: coords.to_text() for name, coords in valid_coordinates().items()}
    outcomes = {"loaded": 0, "loaded unchanged after transit damage": 0, "PASFileError": 0}
    bad, total = [], 0
    for kind, name, text in cases():
        total += 1
        try:
            loaded = PASCoordinates.from_text(text, SOURCE)
        except PASFileError as error:
            outcomes["PASFileError"] += 1
            if not str(error).startswith(f"{SOURCE}: ") or len(str(error)) < len(SOURCE) + 10:
                bad.append((kind, f"unclear error: {error}"))
            continue
        except BaseException as error:  # noqa: B036 (any other exception type is what this test looks for)
            bad.append((kind, f"crash: {type(error).__name__}: {str(error)[:200]}"))
            continue
        if kind == "transit":
            if loaded.to_text() != originals[name]:
                bad.append((kind, f"silent load of damaged text {text[:120]!r}"))
            outcomes["loaded unchanged after transit damage"] += 1
            continue
        count_loaded(outcomes, bad, kind, check_consistent, loaded, tmp_path)
    print(f"text fuzz: {total} cases, {outcomes}, {len(bad)} bad outcomes")
    assert total >= 2000
    assert outcomes["loaded"] >= len(originals) and outcomes["PASFileError"] >= 0.8 * total
    assert_no_bad_outcomes(bad, total)


def test_text_and_file_hold_the_same_numbers(tmp_path):
    for coords in valid_coordinates().values():
        from_file = PASCoordinates.load(coords.save(tmp_path / "c.safetensors"))
        from_text = PASCoordinates.from_text(coords.to_text())
        for a, b in zip(from_file.grids, from_text.grids, strict=True):
            assert torch.equal(a.sigmas, b.sigmas) and torch.equal(a.coordinates, b.coordinates)
            assert a.steps == b.steps
            assert (a.log_offsets is None and b.log_offsets is None) or torch.equal(a.log_offsets, b.log_offsets)
        assert (from_text.solver, from_text.solver_options, from_text.parameterization) == \
            (from_file.solver, from_file.solver_options, from_file.parameterization)
        assert from_file.to_text() == coords.to_text()


def test_text_keeps_the_metadata_the_sampler_checks_and_drops_the_rest():
    coords = valid_coordinates()["euler"]
    info = PASCoordinates.from_text(coords.to_text()).metadata
    assert info == {"cfg": 5.0, "model_type": "EPS", "latent_channels": 4, "denoise": 1.0,
                    "model_fingerprint": "sha256-subset:0123456789abcdef"}


def test_outer_whitespace_is_ignored_and_the_text_is_one_line():
    text = valid_coordinates()["ipndm_two_grids"].to_text()
    assert "\n" not in text and text.startswith(f"{TEXT_MARKER} v2 ")
    assert PASCoordinates.from_text(f"\n  {text} \n").to_text() == text
