"""PASCoordinates: learned per-step coordinates, their safetensors file format and validation."""
from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .basis import basis_is_feasible
from .grids import check_sigmas, format_sigmas
from .solvers import SOLVERS, canonical_solver

FILE_FORMAT = "comfyui-pas-coordinates"
FORMAT_VERSION = 1
PARAMETERIZATIONS = ("absolute", "relative")
MAX_BASIS = 8
SIGMA_RTOL = 1e-4  # ComfyUI hands sigmas over as float32; files keep float64


class PASFileError(ValueError):
    """A coordinates file that cannot be used: corrupt, of another format, or inconsistent."""


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@dataclass
class PASCoordinates:
    """Shared coordinates c_i (one vector of n_basis numbers per corrected step, pas-method.md 4)."""

    sigmas: torch.Tensor
    solver: str
    max_order: int
    n_basis: int
    steps: list[int]
    coordinates: torch.Tensor
    parameterization: str = "absolute"
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        self.sigmas = torch.as_tensor(self.sigmas).detach().to("cpu", torch.float64)
        self.coordinates = torch.as_tensor(self.coordinates).detach().to("cpu", torch.float64)
        self.steps = [int(s) for s in self.steps]
        self.solver = canonical_solver(self.solver)
        self.max_order = int(self.max_order)
        self.n_basis = int(self.n_basis)
        self._check()

    # ---- consistency -------------------------------------------------------------------------
    def _check(self) -> None:
        try:
            check_sigmas(self.sigmas)
        except ValueError as error:
            raise PASFileError(f"invalid sigma grid: {error}") from None
        if not 1 <= self.n_basis <= MAX_BASIS:
            raise PASFileError(f"n_basis must be 1-{MAX_BASIS}, got {self.n_basis}")
        if self.solver == "ipndm" and not 1 <= self.max_order <= 4:
            raise PASFileError(f"ipndm max_order must be 1-4, got {self.max_order}")
        if self.parameterization not in PARAMETERIZATIONS:
            raise PASFileError(f"unknown parameterization {self.parameterization!r}")
        if self.coordinates.ndim != 2 or tuple(self.coordinates.shape) != (len(self.steps), self.n_basis):
            raise PASFileError(f"coordinates have shape {tuple(self.coordinates.shape)}, expected "
                               f"({len(self.steps)}, {self.n_basis}) for steps {self.steps}")
        if not torch.isfinite(self.coordinates).all():
            raise PASFileError("coordinates contain NaN or inf")
        n_steps = len(self.sigmas) - 1
        if self.steps != sorted(set(self.steps)) or any(not 0 <= s < n_steps for s in self.steps):
            raise PASFileError(f"step indices {self.steps} must be unique, sorted and within 0..{n_steps - 1}")
        for step in self.steps:
            if not basis_is_feasible(step + 2, self.n_basis):
                raise PASFileError(f"step {step} cannot carry a {self.n_basis}-vector basis")

    @property
    def n_parameters(self) -> int:
        return self.coordinates.numel()

    @property
    def n_steps(self) -> int:
        return len(self.sigmas) - 1

    def step_coordinates(self, device=None, dtype=torch.float64) -> dict[int, torch.Tensor]:
        """{step: c_step} moved once to the sampling device."""
        moved = self.coordinates.to(device=device, dtype=dtype)
        return {step: moved[row] for row, step in enumerate(self.steps)}

    def describe(self) -> str:
        solver = self.solver if self.solver == "euler" else f"ipndm (order {self.max_order})"
        return (f"{self.n_steps} steps of {solver} on sigmas {format_sigmas(self.sigmas)}; corrected steps "
                f"{self.steps} with {self.n_basis} basis vectors ({self.n_parameters} parameters, "
                f"{self.parameterization})")

    def validate_for(self, sigmas: torch.Tensor, solver: str, max_order: int) -> None:
        """Raise ValueError, naming what was trained and what the workflow gives, unless they match."""
        solver = canonical_solver(solver)
        given = torch.as_tensor(sigmas).detach().double().cpu().flatten()
        problems = []
        if solver != self.solver:
            problems.append(f"the sampler uses {solver}")
        elif solver == "ipndm" and int(max_order) != self.max_order:
            problems.append(f"the sampler uses ipndm order {int(max_order)}")
        if len(given) != len(self.sigmas):
            problems.append(f"the workflow gives {len(given) - 1} steps on sigmas {format_sigmas(given)}")
        elif not torch.allclose(given, self.sigmas, rtol=SIGMA_RTOL, atol=1e-6):
            problems.append(f"the workflow's sigmas differ: {format_sigmas(given)}")
        if problems:
            raise ValueError(
                f"This PAS file was trained for {self.describe()}, but " + "; ".join(problems) + ". "
                "Coordinates belong to the exact sigma grid they were trained on: use the same scheduler, "
                "steps and denoise, or train coordinates on this grid (the PAS Trainer accepts any SIGMAS, "
                "also img2img / denoise < 1 / split schedules).")

    # ---- file format -------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> str:
        """Write atomically (temporary file in the same folder, then rename)."""
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        tensors = {"sigmas": self.sigmas.contiguous(),
                   "steps": torch.tensor(self.steps, dtype=torch.int64),
                   "coordinates": self.coordinates.contiguous()}
        header = {"format": FILE_FORMAT, "format_version": str(FORMAT_VERSION), "solver": self.solver,
                  "max_order": str(self.max_order), "n_basis": str(self.n_basis),
                  "parameterization": self.parameterization,
                  "info": json.dumps(_jsonable(self.metadata), sort_keys=True)}
        handle, temporary = tempfile.mkstemp(prefix=".pas-", suffix=".tmp", dir=folder)
        os.close(handle)
        try:
            save_file(tensors, temporary, metadata=header)
            os.chmod(temporary, 0o666 & ~_current_umask())  # mkstemp makes 0600; give a normal file's mode
            os.replace(temporary, path)
        except BaseException:
            if os.path.exists(temporary):
                os.remove(temporary)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> PASCoordinates:
        path = os.fspath(path)
        name = os.path.basename(path)
        if not os.path.isfile(path):
            raise PASFileError(f"PAS coordinates file not found: {path}")
        try:
            tensors = load_file(path)
            from safetensors import safe_open

            with safe_open(path, framework="pt") as handle:
                header = handle.metadata() or {}
        except (SafetensorError, OSError, ValueError) as error:
            raise PASFileError(f"{name} is not a readable safetensors file (corrupt or truncated?): {error}") from None
        if header.get("format") != FILE_FORMAT:
            raise PASFileError(f"{name} is not a PAS coordinates file (format {header.get('format')!r})")
        version = header.get("format_version")
        if version != str(FORMAT_VERSION):
            raise PASFileError(f"{name} has format version {version!r}; this version of the pack reads "
                               f"version {FORMAT_VERSION}. Update the pack or retrain the coordinates.")
        expected = {"sigmas": torch.float64, "steps": torch.int64, "coordinates": torch.float64}
        for key, dtype in expected.items():
            if key not in tensors:
                raise PASFileError(f"{name} lacks the tensor {key!r}")
            if tensors[key].dtype != dtype:
                raise PASFileError(f"{name}: tensor {key!r} has dtype {tensors[key].dtype}, expected {dtype}")
        if tensors["sigmas"].ndim != 1 or tensors["steps"].ndim != 1:
            raise PASFileError(f"{name}: sigmas and steps must be 1-D")
        try:
            info = json.loads(header.get("info", "{}"))
            fields = dict(solver=header["solver"], max_order=int(header["max_order"]),
                          n_basis=int(header["n_basis"]), parameterization=header.get("parameterization", "absolute"))
        except (KeyError, ValueError) as error:
            raise PASFileError(f"{name}: missing or malformed metadata ({error})") from None
        if fields["solver"] not in SOLVERS:
            raise PASFileError(f"{name}: unknown solver {fields['solver']!r}")
        try:
            return cls(sigmas=tensors["sigmas"], steps=tensors["steps"].tolist(),
                       coordinates=tensors["coordinates"], metadata=info, **fields)
        except PASFileError as error:
            raise PASFileError(f"{name}: {error}") from None


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
