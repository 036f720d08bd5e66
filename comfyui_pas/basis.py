"""Per-sample trajectory basis (docs/method.md 3: an exact, deterministic PCA).

For each sample: u_1 = D_i / |D_i|, then the top principal directions of the centred set
{x_T, D_0, ..., D_i}, Gram-Schmidt against the previous vectors, each sign-aligned with x_i - x_T.
All vectors are flattened per sample; reductions run per sample, so a sample's basis does not depend
on the other samples in the batch.
"""
from __future__ import annotations

import torch

# Eigenvalues below this fraction of the largest count as zero (rank deficiency).
RANK_TOLERANCE = 1e-10
# A Gram-Schmidt remainder shorter than this fraction of its input is dropped (set to 0).
DEGENERATE_TOLERANCE = 1e-6


def basis_is_feasible(set_size: int, n_basis: int) -> bool:
    """The centred set of m vectors has rank <= m-1, so it gives at most m-1 principal directions."""
    return n_basis == 1 or set_size - 1 >= n_basis - 1


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise inner product of (B, D) tensors, as (B,)."""
    return (a * b).sum(dim=-1)


def principal_directions(vectors: torch.Tensor, count: int) -> torch.Tensor:
    """Top `count` principal directions (B, count, D) of each sample's set of m vectors (B, m, D),
    through the exact eigen-decomposition of the small m x m Gram matrix of the centred set."""
    centred = vectors - vectors.mean(dim=1, keepdim=True)
    gram = torch.bmm(centred, centred.transpose(1, 2)).double()
    gram = (gram + gram.transpose(1, 2)) / 2  # exactly symmetric for eigh
    # One small eigh per sample, on the CPU in float64: batched LAPACK calls are not bit-identical across
    # batch sizes, and the CPU gives the same basis whatever device samples run on (one copy per step).
    pairs = [torch.linalg.eigh(matrix) for matrix in gram.cpu()]
    eigenvalues = torch.stack([p[0] for p in pairs])  # ascending
    eigenvectors = torch.stack([p[1] for p in pairs])
    top = eigenvectors[:, :, -count:].flip(-1)  # (B, m, count), largest first
    weights = top.to(device=centred.device, dtype=centred.dtype)
    directions = torch.bmm(weights.transpose(1, 2), centred)  # (B, count, D)
    largest = eigenvalues[:, -1:].clamp_min(0)
    kept = (eigenvalues.flip(-1)[:, :count] > RANK_TOLERANCE * largest).to(centred.device)
    return directions * kept[..., None].to(centred.dtype)


def trajectory_basis(buffer: list[torch.Tensor], direction: torch.Tensor, x: torch.Tensor,
                     x_start: torch.Tensor, n_basis: int) -> torch.Tensor:
    """Orthonormal basis U (B, n_basis, D) of docs/method.md 3.

    buffer: flattened (B, D) vectors [x_T, D_0, ..., D_{i-1}] (the directions actually used);
    direction: the current uncorrected direction D_i (B, D); x, x_start: current point and x_T (B, D).
    Rows that degenerate numerically are zero, so their coordinate has no effect for that sample.
    """
    norm = direction.norm(dim=-1, keepdim=True)
    first = direction / norm.clamp_min(torch.finfo(direction.dtype).tiny)
    rows = [first]
    if n_basis > 1:
        stacked = torch.stack(list(buffer) + [direction], dim=1)
        candidates = principal_directions(stacked, n_basis - 1)
        displacement = x - x_start
        for j in range(n_basis - 1):
            vector = candidates[:, j]
            size = vector.norm(dim=-1, keepdim=True)
            for previous in rows:
                vector = vector - _dot(vector, previous)[:, None] * previous
            remainder = vector.norm(dim=-1, keepdim=True)
            usable = remainder > DEGENERATE_TOLERANCE * size
            unit = torch.where(usable, vector / remainder.clamp_min(torch.finfo(vector.dtype).tiny),
                               torch.zeros_like(vector))
            sign = torch.where(_dot(unit, displacement) < 0, -1.0, 1.0).to(unit.dtype)
            rows.append(unit * sign[:, None])
    return torch.stack(rows, dim=1)


def combine(basis: torch.Tensor, coordinates: torch.Tensor, direction_norm: torch.Tensor | None) -> torch.Tensor:
    """Corrected direction: sum_j c_j u_j (paper, absolute), or |D_i| * sum_j c_j u_j (relative)."""
    combined = (basis * coordinates.to(basis.dtype)[None, :, None]).sum(dim=1)
    if direction_norm is not None:
        combined = combined * direction_norm[:, None]
    return combined
