"""The text form of a coordinates file: one line that a workflow can carry in a widget.

    comfyui-pas-coordinates v2 <checksum> {"grids": [...], "info": {...}, "n_basis": 3, ...}

The JSON holds what the safetensors file holds (solver and options, every grid's sigmas, corrected steps
and coordinates as float64, its time offsets where it has them (then the text is v3), the parameterization) and the metadata the sampler uses or shows
(TEXT_METADATA). Python's float repr round-trips float64 exactly, so text and file give the same numbers.
The checksum (16 hex digits of the JSON's SHA-256) turns a text cut off or edited in transit into an error
instead of other coordinates. A text is untrusted input: anything wrong raises PASFileError naming `source`.
"""
from __future__ import annotations

import hashlib
import json
import math

import torch

from .coords import (
    FORMAT_VERSION,
    MAX_BASIS,
    MAX_GRIDS,
    OFFSETS_VERSION,
    GridCoordinates,
    PASCoordinates,
    PASFileError,
    _jsonable,
    errors_named,
)
from .solvers import ORDER, resolve_options, solver_class

TEXT_MARKER = "comfyui-pas-coordinates"
TEXT_VERSION = f"v{FORMAT_VERSION}"
OFFSETS_TEXT_VERSION = f"v{OFFSETS_VERSION}"  # a text with time offsets: older packs refuse it
READABLE_TEXT_VERSIONS = (TEXT_VERSION, OFFSETS_TEXT_VERSION)
MAX_TEXT_CHARS = 4 * 2 ** 20
CHECKSUM_DIGITS = 16
# Metadata kept in the text: what the sampler checks (model, latent shape), and what describes the training.
TEXT_METADATA = ("cfg", "seed", "prompts", "model_class", "model_type", "latent_channels", "model_fingerprint",
                 "latent_shape", "grid_mode", "scheduler", "denoise", "loss", "n_trajectories", "trained_at")
FIELDS = {"solver", "solver_options", "n_basis", "parameterization", "grids", "info"}
GRID_FIELDS = {"sigmas", "steps", "coordinates"}
OFFSET_FIELD = "log_offsets"  # in a grid of a v3 text only
DEFAULT_SOURCE = "PAS coordinates text"


def checksum(payload: str) -> str:
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:CHECKSUM_DIGITS]


def to_text(coords: PASCoordinates) -> str:
    """The one-line text form of `coords` (deterministic: equal coordinates give equal texts)."""
    content = {
        "solver": coords.solver, "solver_options": coords.solver_options, "n_basis": coords.n_basis,
        "parameterization": coords.parameterization,
        "grids": [_grid_content(grid) for grid in coords.grids],
        "info": {key: _jsonable(coords.metadata[key]) for key in TEXT_METADATA if key in coords.metadata},
    }
    payload = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=True)
    version = OFFSETS_TEXT_VERSION if coords.has_offsets else TEXT_VERSION
    return f"{TEXT_MARKER} {version} {checksum(payload)} {payload}"


def _grid_content(grid: GridCoordinates) -> dict:
    content = {"sigmas": grid.sigmas.tolist(), "steps": list(grid.steps), "coordinates": grid.coordinates.tolist()}
    if grid.log_offsets is not None:
        content[OFFSET_FIELD] = grid.log_offsets.tolist()
    return content


def from_text(text, source: str = DEFAULT_SOURCE) -> PASCoordinates:
    """Parse and validate a text from to_text; anything wrong is one PASFileError starting with `source`."""
    with errors_named(source, "coordinates"):
        return _parse(text)


def _parse(text) -> PASCoordinates:
    if not isinstance(text, str):
        raise PASFileError(f"expected text, got {type(text).__name__}")
    if len(text) > MAX_TEXT_CHARS:
        raise PASFileError(f"the text has {len(text)} characters; coordinates texts are a few thousand and "
                           f"above {MAX_TEXT_CHARS} are not read")
    parts = text.strip().split(" ", 3)
    if not parts[0]:
        raise PASFileError("the text is empty: paste the text output of a PAS Trainer or PAS Load Coordinates")
    if parts[0] != TEXT_MARKER or len(parts) < 4:
        raise PASFileError(f"this is not a PAS coordinates text (it should start with '{TEXT_MARKER} "
                           f"{TEXT_VERSION}'); paste the text output of a PAS Trainer or PAS Load Coordinates")
    _, version, digest, payload = parts
    if version not in READABLE_TEXT_VERSIONS:
        raise PASFileError(f"format version {version!r}; this version of the pack reads "
                           f"{', '.join(READABLE_TEXT_VERSIONS)}. Update the pack or retrain the coordinates.")
    if digest != checksum(payload):
        raise PASFileError("the checksum does not match the content: the text was edited, cut off or joined "
                           "with other text; copy it again in full")
    content = _json_content(payload)
    coords = PASCoordinates(**_fields(content, version == OFFSETS_TEXT_VERSION))
    if version == OFFSETS_TEXT_VERSION and not coords.has_offsets:
        raise PASFileError(f"a {OFFSETS_TEXT_VERSION} text must carry time offsets; this one has none (its version "
                           "was edited?)")
    return coords


def _reject_constant(name):
    raise PASFileError(f"the JSON holds {name}, which coordinates never contain")


def _unique_keys(pairs):
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise PASFileError(f"the JSON repeats a key ({sorted(k for k in keys if keys.count(k) > 1)[0]!r})")
    return dict(pairs)


def _json_content(payload: str) -> dict:
    try:
        content = json.loads(payload, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise PASFileError("the JSON is nested too deeply") from None
    except ValueError as error:
        if isinstance(error, PASFileError):
            raise
        raise PASFileError(f"malformed JSON ({error})") from None
    if not isinstance(content, dict):
        raise PASFileError(f"the JSON must be an object, got {type(content).__name__}")
    if set(content) != FIELDS:
        missing, extra = sorted(FIELDS - set(content)), sorted(set(content) - FIELDS)
        raise PASFileError(f"the JSON's fields are wrong (missing {missing}, unknown {extra})")
    return content


def _fields(content: dict, offsets_allowed: bool) -> dict:
    solver, options = content["solver"], content["solver_options"]
    if not isinstance(solver, str) or not isinstance(options, dict):
        raise PASFileError("solver must be a name and solver_options an object")
    n_basis = _integer(content["n_basis"], "n_basis", 1, MAX_BASIS)
    if not isinstance(content["parameterization"], str) or not isinstance(content["info"], dict):
        raise PASFileError("parameterization must be a name and info an object")
    try:
        settings = resolve_options(solver_class(solver), options)
    except ValueError as error:
        raise PASFileError(str(error)) from None
    grids = content["grids"]
    if not isinstance(grids, list) or not 1 <= len(grids) <= MAX_GRIDS:
        raise PASFileError(f"grids must be a list of 1-{MAX_GRIDS} grids")
    entries = [_grid(grid, index, n_basis, offsets_allowed) for index, grid in enumerate(grids)]
    first = entries[0]
    return dict(sigmas=first.sigmas, steps=first.steps, coordinates=first.coordinates, solver=solver,
                max_order=settings.get(ORDER), n_basis=n_basis, parameterization=content["parameterization"],
                metadata=_jsonable(content["info"]), more_grids=entries[1:], log_offsets=first.log_offsets)


def _grid(grid, index: int, n_basis: int, offsets_allowed: bool) -> GridCoordinates:
    allowed = GRID_FIELDS | {OFFSET_FIELD} if offsets_allowed else GRID_FIELDS
    if not isinstance(grid, dict) or not GRID_FIELDS <= set(grid) <= allowed:
        raise PASFileError(f"grid {index} must be an object with exactly {sorted(GRID_FIELDS)}"
                           + (f" and optionally {OFFSET_FIELD!r}" if offsets_allowed else ""))
    sigmas = _numbers(grid["sigmas"], f"grid {index} sigmas")
    steps = grid["steps"]
    if not isinstance(steps, list):
        raise PASFileError(f"grid {index} steps must be a list")
    steps = [_integer(step, f"grid {index} step", 0, len(sigmas)) for step in steps]
    rows = grid["coordinates"]
    if not isinstance(rows, list):
        raise PASFileError(f"grid {index} coordinates must be a list of rows")
    values = [_numbers(row, f"grid {index} coordinate row") for row in rows]
    if any(len(row) != n_basis for row in values):
        raise PASFileError(f"grid {index}: every coordinate row needs n_basis = {n_basis} numbers")
    coordinates = torch.tensor(values, dtype=torch.float64) if values else torch.zeros(0, n_basis, dtype=torch.float64)
    offsets = None
    if OFFSET_FIELD in grid:
        offsets = torch.tensor(_numbers(grid[OFFSET_FIELD], f"grid {index} time offsets"), dtype=torch.float64)
    return GridCoordinates(torch.tensor(sigmas, dtype=torch.float64), steps, coordinates, offsets)


def _numbers(values, what: str) -> list[float]:
    if not isinstance(values, list) or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        raise PASFileError(f"{what} must be a list of numbers")
    floats = [float(v) for v in values]
    if not all(math.isfinite(v) for v in floats):
        raise PASFileError(f"{what} contain a number out of range")
    return floats


def _integer(value, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise PASFileError(f"{what} must be a whole number within {low}-{high}, got {str(value)[:40]}")
    return value
