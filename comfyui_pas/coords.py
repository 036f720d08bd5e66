"""PASCoordinates: learned per-step coordinates, their safetensors file format and validation."""
from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .basis import basis_is_feasible
from .files import atomic_write
from .grids import check_sigmas, format_sigmas
from .solvers import ORDER, canonical_solver, describe_solver, resolve_options, solver_class, solver_options

FILE_FORMAT = "comfyui-pas-coordinates"
FORMAT_VERSION = 2  # 2: solver options as JSON, several grids; version 1 files still load
OFFSETS_VERSION = 3  # 3: version 2 with per-step time offsets; written only by files that have them
MAX_LOG_OFFSET = 3.0  # |log-offset| above this asks the model at 20x or 1/20 of the grid's sigma: refused
MAX_GRIDS = 64
PARAMETERIZATIONS = ("absolute", "relative")
MAX_BASIS = 8
SIGMA_RTOL = 1e-4  # ComfyUI hands sigmas over as float32; files keep float64


class PASFileError(ValueError):
    """A coordinates file that cannot be used: corrupt, of another format, or inconsistent."""


# Values of a wrong type or size that the field checks do not name (found by the loader fuzz tests).
MALFORMED_ERRORS = (ValueError, TypeError, OverflowError, KeyError, IndexError, AttributeError, RuntimeError)


@contextmanager
def errors_named(source: str, what: str):
    """Re-raise what reading `source` fails with as one PASFileError that starts with `source`."""
    try:
        yield
    except PASFileError as error:
        raise PASFileError(f"{source}: {error}") from None
    except MALFORMED_ERRORS as error:
        raise PASFileError(f"{source}: malformed {what} ({type(error).__name__}: {error})") from None


def canonical_offsets(log_offsets) -> torch.Tensor | None:
    """Per-step log-offsets as float64 on the CPU; None for none or all zeros (the plain solver)."""
    if log_offsets is None:
        return None
    values = torch.as_tensor(log_offsets).detach().to("cpu", torch.float64).flatten()
    return None if values.numel() and not values.any() else values


@dataclass
class GridCoordinates:
    """The coordinates of one student grid: its sigmas, corrected steps and one c_i per corrected step, and
    optionally one time log-offset per step (step i asks the model at sigma_i * exp(d_i); docs/method.md 11)."""

    sigmas: torch.Tensor
    steps: list[int]
    coordinates: torch.Tensor
    log_offsets: torch.Tensor | None = None

    def __post_init__(self):
        self.sigmas = torch.as_tensor(self.sigmas).detach().to("cpu", torch.float64)
        self.coordinates = torch.as_tensor(self.coordinates).detach().to("cpu", torch.float64)
        self.steps = [int(s) for s in self.steps]
        self.log_offsets = canonical_offsets(self.log_offsets)

    @property
    def n_steps(self) -> int:
        return len(self.sigmas) - 1

    def check(self, n_basis: int) -> None:
        try:
            check_sigmas(self.sigmas)
        except ValueError as error:
            raise PASFileError(f"invalid sigma grid: {error}") from None
        if self.coordinates.ndim != 2 or tuple(self.coordinates.shape) != (len(self.steps), n_basis):
            raise PASFileError(f"coordinates have shape {tuple(self.coordinates.shape)}, expected "
                               f"({len(self.steps)}, {n_basis}) for steps {self.steps}")
        if not torch.isfinite(self.coordinates).all():
            raise PASFileError("coordinates contain NaN or inf")
        if self.steps != sorted(set(self.steps)) or any(not 0 <= s < self.n_steps for s in self.steps):
            raise PASFileError(f"step indices {self.steps} must be unique, sorted and within 0..{self.n_steps - 1}")
        for step in self.steps:
            if not basis_is_feasible(step + 2, n_basis):
                raise PASFileError(f"step {step} cannot carry a {n_basis}-vector basis")
        if self.log_offsets is not None:
            if self.log_offsets.numel() != self.n_steps:
                raise PASFileError(f"{self.log_offsets.numel()} time offsets for a grid of {self.n_steps} steps")
            if not torch.isfinite(self.log_offsets).all():
                raise PASFileError("time offsets contain NaN or inf")
            if float(self.log_offsets.abs().max()) > MAX_LOG_OFFSET:
                raise PASFileError(f"time offsets {self.log_offsets.tolist()} exceed +-{MAX_LOG_OFFSET} in log-sigma")

    def matches(self, sigmas: torch.Tensor) -> bool:
        given = torch.as_tensor(sigmas).detach().double().cpu().flatten()
        return len(given) == len(self.sigmas) and torch.allclose(given, self.sigmas, rtol=SIGMA_RTOL, atol=1e-6)

    def step_coordinates(self, device=None, dtype=torch.float64) -> dict[int, torch.Tensor]:
        """{step: c_step} moved once to the sampling device."""
        moved = self.coordinates.to(device=device, dtype=dtype)
        return {step: moved[row] for row, step in enumerate(self.steps)}

    def model_sigmas(self, sigmas: torch.Tensor) -> torch.Tensor | None:
        """The sigma each step asks the model at (`sigmas` as the sampler has them), or None without offsets."""
        if self.log_offsets is None:
            return None
        return sigmas[:-1] * self.log_offsets.to(device=sigmas.device, dtype=sigmas.dtype).exp()


@dataclass
class PASCoordinates:
    """Shared coordinates c_i (one vector of n_basis numbers per corrected step, docs/method.md 4) for one
    base solver and one or more sigma grids. The first grid's fields stand on the object itself;
    `more_grids` holds the others (one training serving several step counts)."""

    sigmas: torch.Tensor
    solver: str
    max_order: int | None
    n_basis: int
    steps: list[int]
    coordinates: torch.Tensor
    parameterization: str = "absolute"
    metadata: dict = field(default_factory=dict)
    more_grids: list[GridCoordinates] = field(default_factory=list)
    log_offsets: torch.Tensor | None = None  # the first grid's time offsets

    def __post_init__(self):
        first = GridCoordinates(self.sigmas, self.steps, self.coordinates, self.log_offsets)
        self.sigmas, self.steps, self.coordinates = first.sigmas, first.steps, first.coordinates
        self.log_offsets = first.log_offsets
        try:
            self.solver = canonical_solver(self.solver)
            self.solver_options = solver_options(self.solver, self.max_order)
        except ValueError as error:
            raise PASFileError(str(error)) from None
        self.max_order = self.solver_options.get(ORDER)
        self.n_basis = int(self.n_basis)
        self.more_grids = [g if isinstance(g, GridCoordinates) else GridCoordinates(**g) for g in self.more_grids]
        if not isinstance(self.metadata, dict):
            raise PASFileError(f"metadata must be a JSON object, got {type(self.metadata).__name__}")
        self._check()

    # ---- consistency -------------------------------------------------------------------------
    def _check(self) -> None:
        if not 1 <= self.n_basis <= MAX_BASIS:
            raise PASFileError(f"n_basis must be 1-{MAX_BASIS}, got {self.n_basis}")
        if self.parameterization not in PARAMETERIZATIONS:
            raise PASFileError(f"unknown parameterization {self.parameterization!r}")
        for grid in self.grids:
            grid.check(self.n_basis)
        for index, grid in enumerate(self.grids):
            if any(other.matches(grid.sigmas) for other in self.grids[:index]):
                raise PASFileError(f"the sigma grid {format_sigmas(grid.sigmas)} appears twice")

    @property
    def grids(self) -> list[GridCoordinates]:
        return [GridCoordinates(self.sigmas, self.steps, self.coordinates, self.log_offsets)] + list(self.more_grids)

    @property
    def n_parameters(self) -> int:
        return sum(grid.coordinates.numel() + (0 if grid.log_offsets is None else grid.log_offsets.numel())
                   for grid in self.grids)

    @property
    def has_offsets(self) -> bool:
        return any(grid.log_offsets is not None for grid in self.grids)

    @property
    def n_steps(self) -> int:
        return len(self.sigmas) - 1

    @property
    def step_counts(self) -> list[int]:
        return [grid.n_steps for grid in self.grids]

    def step_coordinates(self, device=None, dtype=torch.float64) -> dict[int, torch.Tensor]:
        """{step: c_step} of the first grid, moved once to the sampling device."""
        return self.grids[0].step_coordinates(device, dtype)

    def solver_label(self) -> str:
        return describe_solver(self.solver, self.solver_options)

    def describe(self) -> str:
        parts = [f"{grid.n_steps} steps of {self.solver_label()} on sigmas {format_sigmas(grid.sigmas)}; corrected "
                 f"steps {grid.steps}" + ("" if grid.log_offsets is None else
                                          f"; time offsets {[round(v, 3) for v in grid.log_offsets.tolist()]}")
                 for grid in self.grids]
        return (" | ".join(parts) + f"; {self.n_basis} basis vectors ({self.n_parameters} parameters, "
                f"{self.parameterization})")

    def check_solver(self, solver: str, options: dict | None = None) -> None:
        """Raise ValueError unless the sampler's solver and options are the ones trained for."""
        solver = canonical_solver(solver)
        wanted = solver_options(solver, (options or {}).get(ORDER))
        if solver != self.solver or wanted != self.solver_options:
            raise ValueError(f"This PAS file was trained for {self.describe()}, but the sampler uses "
                             f"{describe_solver(solver, wanted)}. Pick the same solver and order, or train "
                             "coordinates for this one with the PAS Trainer.")

    def entry_for(self, sigmas: torch.Tensor) -> GridCoordinates:
        """The grid entry whose sigmas equal these (ComfyUI passes float32), or a ValueError naming both."""
        for grid in self.grids:
            if grid.matches(sigmas):
                return grid
        raise ValueError(self.uncovered_message(sigmas))

    def covers(self, sigmas: torch.Tensor) -> bool:
        return any(grid.matches(sigmas) for grid in self.grids)

    def coverage(self) -> str:
        """'4, 5, 7 steps (karras, denoise 0.5)': the step counts and, where recorded, scheduler and denoise."""
        counts = ", ".join(str(n) for n in self.step_counts)
        known = [str(self.metadata[key]) for key in ("scheduler",) if self.metadata.get(key)]
        denoise = self.metadata.get("denoise")
        known += [f"denoise {denoise:g}"] if isinstance(denoise, (int, float)) else []
        return f"{counts} steps" + (f" ({', '.join(known)})" if known else "")

    def uncovered_message(self, sigmas: torch.Tensor) -> str:
        given = torch.as_tensor(sigmas).detach().double().cpu().flatten()
        problem = (f"the workflow's sigmas differ: {format_sigmas(given)}" if len(given) - 1 in self.step_counts
                   else f"the workflow gives {len(given) - 1} steps on sigmas {format_sigmas(given)}")
        return (f"This PAS file was trained for {self.describe()}, but {problem}. It covers {self.coverage()}, "
                "each on exactly its own grid: use the same scheduler, steps and denoise, or train coordinates "
                "on this grid (the PAS Trainer accepts any SIGMAS, also img2img / denoise < 1 / split schedules).")

    def check_model(self, model: dict) -> list[str]:
        """Compare the model it samples (model_type, latent_channels, model_fingerprint, model_class) with the
        one it was trained on: a ValueError naming both when type or latent channels differ, else the
        warnings (another fingerprint). Values missing on either side are not compared."""
        for key, what in (("model_type", "model type"), ("latent_channels", "latent channel count")):
            trained, given = self.metadata.get(key), model.get(key)
            if trained is not None and given is not None and trained != given:
                raise ValueError(f"These PAS coordinates were trained on a model with {what} {trained} "
                                 f"({self.metadata.get('model_class', 'unknown class')}), but the sampler's model "
                                 f"has {what} {given} ({model.get('model_class', 'unknown class')}). Use "
                                 "coordinates trained on this kind of model.")
        trained, given = self.metadata.get("model_fingerprint"), model.get("model_fingerprint")
        if trained and given and trained != given:
            return [f"these PAS coordinates were trained on another model (fingerprint {trained}, this model "
                    f"{given}); they may correct it less well. Train coordinates on this model for the best result."]
        return []

    # ---- text form (coords_text.py) ------------------------------------------------------------
    def to_text(self) -> str:
        from .coords_text import to_text

        return to_text(self)

    @classmethod
    def from_text(cls, text: str, source: str | None = None) -> PASCoordinates:
        from .coords_text import DEFAULT_SOURCE, from_text

        return from_text(text, source or DEFAULT_SOURCE)

    def validate_for(self, sigmas: torch.Tensor, solver: str, max_order: int | None = None) -> None:
        """Raise ValueError unless both the solver and the grid match (see check_solver, entry_for)."""
        self.check_solver(solver, {ORDER: max_order})
        self.entry_for(sigmas)

    # ---- file format -------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, *, exclusive: bool = False) -> str:
        """Write atomically (comfyui_pas.files.atomic_write); exclusive=True never overwrites a file."""
        tensors, header = self._file_content()
        return atomic_write(path, lambda temporary: save_file(tensors, temporary, metadata=header), exclusive=exclusive)

    def _file_content(self) -> tuple[dict, dict]:
        """Tensors (grid k > 0 under 'grid<k>.') and the string header of format version 2 (3 with time offsets)."""
        tensors = {}
        for index, grid in enumerate(self.grids):
            prefix = "" if index == 0 else f"grid{index}."
            tensors[prefix + "sigmas"] = grid.sigmas.contiguous()
            tensors[prefix + "steps"] = torch.tensor(grid.steps, dtype=torch.int64)
            tensors[prefix + "coordinates"] = grid.coordinates.contiguous()
            if grid.log_offsets is not None:
                tensors[prefix + "log_offsets"] = grid.log_offsets.contiguous()
        version = OFFSETS_VERSION if self.has_offsets else FORMAT_VERSION  # older packs refuse offsets they'd drop
        header = {"format": FILE_FORMAT, "format_version": str(version), "solver": self.solver,
                  "solver_options": json.dumps(self.solver_options, sort_keys=True),
                  "n_basis": str(self.n_basis), "grids": str(len(self.grids)),
                  "parameterization": self.parameterization,
                  "info": json.dumps(_jsonable(self.metadata), sort_keys=True)}
        return tensors, header

    @classmethod
    def load(cls, path: str | os.PathLike) -> PASCoordinates:
        """Read a coordinates file; anything wrong with it is a PASFileError naming the file."""
        path = os.fspath(path)
        name = os.path.basename(path)
        if not os.path.isfile(path):
            raise PASFileError(f"PAS coordinates file not found: {path}")
        try:
            size = os.stat(path).st_size
        except OSError as error:  # gone or unreadable since the check above
            raise PASFileError(f"{name} cannot be read: {error}") from None
        if size > MAX_FILE_BYTES:  # refused unread: a model checkpoint dropped into models/pas, say
            raise PASFileError(f"{name} is {size / 2 ** 20:.1f} MiB; PAS coordinates files are a few KiB and files "
                               f"above {MAX_FILE_BYTES // 2 ** 20} MiB are not read (is it a model checkpoint?)")
        try:
            tensors = load_file(path)
            from safetensors import safe_open

            with safe_open(path, framework="pt") as handle:
                header = handle.metadata() or {}
        except (SafetensorError, OSError, ValueError, TypeError, OverflowError, RuntimeError) as error:
            raise PASFileError(f"{name} is not a readable safetensors file (corrupt or truncated?): {error}") from None
        if header.get("format") != FILE_FORMAT:
            raise PASFileError(f"{name} is not a PAS coordinates file (format {header.get('format')!r})")
        version = header.get("format_version")
        if version not in READABLE_VERSIONS:
            raise PASFileError(f"{name} has format version {version!r}; this version of the pack reads "
                               f"versions {', '.join(READABLE_VERSIONS)}. Update the pack or retrain the coordinates.")
        with errors_named(name, "content"):
            fields = _fields_from_file(tensors, header, version)
            fields["metadata"] = _jsonable(fields["metadata"])  # as saved: NaN / inf from the JSON become None
            return cls(**fields)


MAX_FILE_BYTES = 16 * 2 ** 20  # 64 grids of 1,000 steps with 8 basis vectors are about 5 MiB
READABLE_VERSIONS = ("1", str(FORMAT_VERSION), str(OFFSETS_VERSION))
V1_SOLVERS = ("euler", "ipndm")  # version 1 knew these, with a plain max_order header


def _grid_tensors(tensors: dict, prefix: str, version: str) -> dict:
    expected = {"sigmas": torch.float64, "steps": torch.int64, "coordinates": torch.float64}
    if prefix + "log_offsets" in tensors:
        if version != str(OFFSETS_VERSION):
            raise PASFileError(f"holds time offsets ({prefix}log_offsets) but declares format version {version}")
        expected["log_offsets"] = torch.float64
    found = {}
    for key, dtype in expected.items():
        tensor = tensors.get(prefix + key)
        if tensor is None:
            raise PASFileError(f"lacks the tensor {prefix + key!r}")
        if tensor.dtype != dtype:
            raise PASFileError(f"tensor {prefix + key!r} has dtype {tensor.dtype}, expected {dtype}")
        found[key] = tensor
    if found["sigmas"].ndim != 1 or found["steps"].ndim != 1 or found.get("log_offsets", found["sigmas"]).ndim != 1:
        raise PASFileError(f"{prefix}sigmas, {prefix}steps and {prefix}log_offsets must be 1-D")
    return {"sigmas": found["sigmas"], "steps": found["steps"].tolist(), "coordinates": found["coordinates"],
            "log_offsets": found.get("log_offsets")}


def _json_object(text: str, what: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as error:
        raise PASFileError(f"malformed {what} ({error})") from None
    if not isinstance(value, dict):
        raise PASFileError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _fields_from_file(tensors: dict, header: dict, version: str) -> dict:
    """Constructor fields from a file's tensors and header (format version 1, 2 or 3)."""
    try:
        solver, n_basis = header["solver"], int(header["n_basis"])
        if version == "1":
            if solver not in V1_SOLVERS:
                raise PASFileError(f"unknown solver {solver!r}")
            options = {ORDER: int(header["max_order"])} if solver == "ipndm" else {}
            count = 1
        else:
            options = _json_object(header["solver_options"], "solver_options")
            count = int(header["grids"])
    except (KeyError, ValueError, TypeError) as error:
        raise PASFileError(f"missing or malformed metadata ({error!r})") from None
    if not 1 <= count <= MAX_GRIDS:
        raise PASFileError(f"the file declares {count} grids; 1-{MAX_GRIDS} are allowed")
    try:
        cls = solver_class(solver)
        settings = resolve_options(cls, options)
    except ValueError as error:
        raise PASFileError(str(error)) from None
    grids = [_grid_tensors(tensors, "" if k == 0 else f"grid{k}.", version) for k in range(count)]
    if version == str(OFFSETS_VERSION) and all(grid["log_offsets"] is None for grid in grids):
        raise PASFileError(f"declares format version {version} (time offsets) but holds none")
    first = grids[0]
    return dict(first, solver=solver, max_order=settings.get(ORDER), n_basis=n_basis,
                parameterization=header.get("parameterization", "absolute"),
                metadata=_json_object(header.get("info", "{}"), "info metadata"),
                more_grids=[GridCoordinates(**grid) for grid in grids[1:]])

def _jsonable(value):
    """Metadata as plain JSON: tensors to lists, non-finite floats to None."""
    if isinstance(value, torch.Tensor):
        return _jsonable(value.detach().cpu().tolist())
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and callable(value.item):
        return _jsonable(value.item())
    return value


NUMBERED_SUFFIX = ".safetensors"


def save_numbered(coords: PASCoordinates, folder: str | os.PathLike, stem: str, *, digits: int = 5,
                  max_attempts: int = 10_000) -> str:
    """Save as folder/<stem>_NNNNN.safetensors under the next free counter, never overwriting a file.

    The counter starts after the highest one in the folder; a name that another writer (thread, process,
    second ComfyUI on a shared models folder) claims first raises FileExistsError in the exclusive save,
    and the next counter is tried.
    """
    import re

    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    pattern = re.compile(re.escape(stem) + r"_(\d{%d,})" % digits + re.escape(NUMBERED_SUFFIX) + "$")
    taken = [int(m.group(1)) for m in map(pattern.match, os.listdir(folder)) if m]
    counter = max(taken, default=0) + 1
    for _ in range(max_attempts):
        path = os.path.join(folder, f"{stem}_{counter:0{digits}d}{NUMBERED_SUFFIX}")
        try:
            return coords.save(path, exclusive=True)
        except FileExistsError:
            counter += 1
    raise OSError(f"no free file name for {stem!r} in {folder} after {max_attempts} attempts")
