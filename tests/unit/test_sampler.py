"""sample_pas without coordinates against plain solver loops written here, and its sampler contract."""
import pytest
import torch

from comfyui_pas import edm_sigmas, sample_pas
from train_tools.data.seeds import seeded_noise


def reference_euler(model, x, sigmas):
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i].expand(x.shape[0]))
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            x = x + (sigmas[i + 1] - sigmas[i]) * (x - denoised) / sigmas[i]
    return x


def reference_ipndm(model, x, sigmas, max_order):
    """Adams-Bashforth with the fixed iPNDM weights, history of raw directions, warm-up 1, 2, 3, 4."""
    weights = {1: [1.0], 2: [1.5, -0.5], 3: [23 / 12, -16 / 12, 5 / 12], 4: [55 / 24, -59 / 24, 37 / 24, -9 / 24]}
    past = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i].expand(x.shape[0]))
        d = (x - denoised) / sigmas[i]
        order = min(max_order, i + 1)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            direction = sum(w * v for w, v in zip(weights[order], [d] + past[::-1], strict=False))
            x = x + (sigmas[i + 1] - sigmas[i]) * direction
        past = (past + [d])[-(max_order - 1):] if max_order > 1 else []
    return x


GRIDS = {"edm": edm_sigmas(7), "to_zero": edm_sigmas(6, sigma_min=0.03, sigma_max=14.6, append_zero=True)}


@pytest.mark.parametrize("grid", GRIDS)
def test_uncorrected_euler_equals_plain_loop(gmm, grid):
    sigmas = GRIDS[grid]
    x = seeded_noise(range(5), (96,)) * sigmas[0]
    ours = sample_pas(gmm, x, sigmas, solver="euler")
    assert torch.allclose(ours, reference_euler(gmm, x, sigmas), rtol=1e-12, atol=1e-12)
    assert torch.equal(sample_pas(gmm, x, sigmas, solver="ddim"), ours)


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("max_order", [1, 2, 3, 4])
def test_uncorrected_ipndm_equals_plain_loop(gmm, grid, max_order):
    sigmas = GRIDS[grid]
    x = seeded_noise(range(5), (96,)) * sigmas[0]
    ours = sample_pas(gmm, x, sigmas, solver="ipndm", max_order=max_order)
    assert torch.allclose(ours, reference_ipndm(gmm, x, sigmas, max_order), rtol=1e-12, atol=1e-12)


def test_orders_actually_differ(gmm):
    sigmas = GRIDS["edm"]
    x = seeded_noise(range(3), (96,)) * sigmas[0]
    outs = [sample_pas(gmm, x, sigmas, solver="ipndm", max_order=k) for k in (1, 2, 3, 4)]
    assert torch.equal(outs[0], sample_pas(gmm, x, sigmas, solver="euler"))
    for a in range(4):
        for b in range(a + 1, 4):
            assert not torch.allclose(outs[a], outs[b])


def test_one_model_call_and_one_callback_per_step(gmm):
    sigmas = GRIDS["to_zero"]
    calls, events = [], []

    def counting(x, sigma, **kwargs):
        calls.append((float(sigma[0]), kwargs))
        return gmm(x, sigma)

    x = seeded_noise(range(2), (96,)) * sigmas[0]
    sample_pas(counting, x, sigmas, extra_args={"tag": 7}, callback=events.append, solver="ipndm", max_order=3)
    assert [c[0] for c in calls] == pytest.approx(sigmas[:-1].tolist())
    assert all(c[1] == {"tag": 7} for c in calls)
    assert [e["i"] for e in events] == list(range(len(sigmas) - 1))
    assert all(set(e) == {"x", "i", "sigma", "sigma_hat", "denoised"} for e in events)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_keeps_input_dtype_and_shape(gmm, dtype):
    sigmas = GRIDS["edm"].float()
    x = (seeded_noise(range(2), (96,)) * 80).to(dtype).reshape(2, 6, 16)
    out = sample_pas(gmm, x, sigmas)
    assert out.dtype == dtype and out.shape == x.shape and torch.isfinite(out.float()).all()


def test_unknown_solver_and_order_are_rejected(gmm):
    x = torch.zeros(1, 96)
    with pytest.raises(ValueError, match="unknown solver"):
        sample_pas(gmm, x, GRIDS["edm"], solver="heun")
    with pytest.raises(ValueError, match="max_order"):
        sample_pas(gmm, x, GRIDS["edm"], solver="ipndm", max_order=5)


@pytest.mark.parametrize("solver", ["euler", "ipndm", "ipndm_v", "deis", "dpmpp_2m", "res_multistep"])
def test_corrections_add_no_model_call(gmm, solver):
    """With coordinates at every feasible step, sampling still calls the model once per step."""
    from comfyui_pas import PASCoordinates

    sigmas = GRIDS["to_zero"]
    steps = list(range(1, len(sigmas) - 1))
    coords = PASCoordinates(sigmas, solver, None, 2, steps, torch.tensor([[1.02, 0.01]] * len(steps)), "relative")
    calls = []

    def counting(x, sigma, **kwargs):
        calls.append(float(sigma[0]))
        return gmm(x, sigma)

    x = seeded_noise(range(3), (96,)) * sigmas[0]
    corrected = sample_pas(counting, x, sigmas, solver=solver, coords=coords)
    assert calls == pytest.approx(sigmas[:-1].tolist())
    assert not torch.allclose(corrected, sample_pas(gmm, x, sigmas, solver=solver))
