"""The exact per-sample basis: orthonormal, first vector along D_i, principal subspace, sign rule."""
import pytest
import torch

from comfyui_pas.basis import basis_is_feasible, principal_directions, trajectory_basis


def random_case(batch=4, dim=50, history=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    buffer = [torch.randn(batch, dim, generator=g, dtype=torch.float64) for _ in range(history)]
    direction = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    x = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    return buffer, direction, x, buffer[0]


def test_rows_are_orthonormal_and_first_is_the_direction():
    buffer, direction, x, start = random_case()
    basis = trajectory_basis(buffer, direction, x, start, n_basis=4)
    gram = basis @ basis.transpose(1, 2)
    assert torch.allclose(gram, torch.eye(4, dtype=torch.float64).expand(4, 4, 4), atol=1e-12)
    assert torch.allclose(basis[:, 0], direction / direction.norm(dim=-1, keepdim=True), atol=1e-14)


def test_principal_directions_span_the_svd_subspace():
    buffer, direction, _, _ = random_case()
    stacked = torch.stack(buffer + [direction], dim=1)
    ours = principal_directions(stacked, 3)
    for n in range(stacked.shape[0]):
        centred = stacked[n] - stacked[n].mean(dim=0)
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)  # independent reference
        reference = vh[:3]
        q, _ = torch.linalg.qr(ours[n].T)
        assert torch.allclose(q @ q.T, reference.T @ reference, atol=1e-10)


def test_basis_lies_in_span_of_direction_and_principal_directions():
    buffer, direction, x, start = random_case(history=5)
    basis = trajectory_basis(buffer, direction, x, start, n_basis=3)
    stacked = torch.stack(buffer + [direction], dim=1)
    for n in range(stacked.shape[0]):
        span = torch.cat([direction[n:n + 1], principal_directions(stacked[n:n + 1], 2)[0]])
        q, _ = torch.linalg.qr(span.T)
        assert torch.allclose(q @ (q.T @ basis[n].T), basis[n].T, atol=1e-10)


def test_sign_rule_aligns_with_displacement():
    buffer, direction, x, start = random_case(seed=5)
    basis = trajectory_basis(buffer, direction, x, start, n_basis=4)
    assert ((basis[:, 1:] * (x - start)[:, None]).sum(-1) >= 0).all()


def test_batch_invariance_and_determinism():
    buffer, direction, x, start = random_case(batch=7, seed=2)
    full = trajectory_basis(buffer, direction, x, start, n_basis=4)
    again = trajectory_basis(buffer, direction, x, start, n_basis=4)
    assert torch.equal(full, again)
    for j in (0, 3, 6):
        alone = trajectory_basis([b[j:j + 1] for b in buffer], direction[j:j + 1], x[j:j + 1], start[j:j + 1], 4)
        assert torch.equal(alone[0], full[j])


def test_rank_deficient_set_gives_zero_rows_not_noise():
    buffer, direction, x, start = random_case(history=2)
    buffer[1] = buffer[0] * 2.0  # the set {x_T, 2 x_T, D}: centred rank 2 -> one principal direction
    basis = trajectory_basis(buffer, direction, x, start, n_basis=4)
    assert torch.isfinite(basis).all()
    assert torch.all(basis[:, 3].abs().sum(-1) == 0)


@pytest.mark.parametrize("size, n_basis, feasible", [(2, 4, False), (3, 4, False), (4, 4, True), (2, 2, True), (2, 1, True)])
def test_feasibility_rule(size, n_basis, feasible):
    assert basis_is_feasible(size, n_basis) is feasible
