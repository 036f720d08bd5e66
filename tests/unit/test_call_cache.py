"""The reproduction's call cache: a repeated call returns the first call's output, anything else calls the model."""
import pytest
import torch

from comfyui_pas import sample_pas
from train_tools.data.call_cache import CallCache, call_key
from train_tools.data.guided import GuidedModel


class _Counting:
    """The mixture's exact denoiser, recording the sigma of every call."""

    def __init__(self, gmm):
        self.gmm, self.sigmas = gmm, []
        self.sigma_min, self.sigma_max = gmm.sigma_min, gmm.sigma_max

    def __call__(self, x, sigma):
        self.sigmas.append(float(torch.as_tensor(sigma).detach().reshape(-1)[0]))
        return self.gmm(x, sigma)


def _noise(rows, dim, seed=0):
    return torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)


def test_grids_with_a_shared_start_repeat_their_first_calls_only(gmm):
    counting = _Counting(gmm)
    cached, plain = GuidedModel(counting, cache=CallCache()), GuidedModel(gmm)
    seeds = list(range(5))
    x = _noise(5, gmm.dim) * 80.0
    first = torch.tensor([80.0, 10.0, 1.0, 0.1, 0.0])
    second = torch.tensor([80.0, 10.0, 2.0, 0.2, 0.0])  # the same first step, then apart
    a = sample_pas(cached.bind(seeds), x, first, solver="euler")
    b = sample_pas(cached.bind(seeds), x, second, solver="euler")
    # euler's state after step 1 depends on the first two sigmas only: calls at 80 and 10 repeat
    assert counting.sigmas == pytest.approx([80.0, 10.0, 1.0, 0.1, 2.0, 0.2])
    assert cached.cache.summary() == {"rows_called": 40, "rows_reused": 10, "reused_share": 0.25}
    assert torch.equal(a, sample_pas(plain.bind(seeds), x, first, solver="euler"))
    assert torch.equal(b, sample_pas(plain.bind(seeds), x, second, solver="euler"))
    sample_pas(cached.bind(seeds), x + 1e-6, first, solver="euler")  # other noise: nothing repeats
    assert len(counting.sigmas) == 10


def test_comfyui_samplers_share_the_first_call_with_ours(gmm):
    from train_tools.comfy_builtins import load_builtin_samplers

    comfy = load_builtin_samplers()
    if comfy is None:
        pytest.skip("ComfyUI host not installed (make host)")
    counting = _Counting(gmm)
    cached, plain = GuidedModel(counting, cache=CallCache()), GuidedModel(gmm)
    seeds, sigmas = list(range(4)), torch.tensor([80.0, 12.0, 2.0, 0.3, 0.0])
    x = _noise(4, gmm.dim, seed=1) * sigmas[0]
    theirs = comfy["dpmpp_2m"](cached.bind(seeds), x, sigmas.clone(), extra_args={}, disable=True)
    ours = sample_pas(cached.bind(seeds), x, sigmas, solver="dpmpp_2m")
    assert cached.cache.rows_reused >= 4  # at least the start call
    assert torch.equal(theirs, comfy["dpmpp_2m"](plain.bind(seeds), x, sigmas.clone(), extra_args={}, disable=True))
    assert torch.equal(ours, sample_pas(plain.bind(seeds), x, sigmas, solver="dpmpp_2m"))


def test_the_key_tells_every_input_bit_dtype_and_shape_apart():
    x, sigma, labels = torch.randn(3, 4), torch.full((3,), 2.5), torch.tensor([1, 2, 3])
    key = call_key(x, sigma, labels, 4.0)
    assert key == call_key(x.clone(), sigma.clone(), labels.clone(), 4.0)
    flipped = x.clone()
    flipped.view(torch.int32)[1, 2] ^= 1  # one bit of one value
    others = [call_key(flipped, sigma, labels, 4.0), call_key(x, sigma.double(), labels, 4.0),
              call_key(x, torch.tensor(2.5), labels, 4.0), call_key(x, sigma, torch.tensor([1, 2, 4]), 4.0),
              call_key(x, sigma, None, 4.0), call_key(x, sigma, labels, 3.0), call_key(x.double(), sigma, labels, 4.0),
              call_key(x, sigma, labels, 4.0, model_tag="another model")]
    assert len({key, *others}) == len(others) + 1


def test_outputs_are_copies_and_the_oldest_go_past_the_byte_limit():
    cache = CallCache(max_bytes=2 * 16 * 4)  # two outputs of 16 float32
    made = []

    def compute(value):
        def run():
            made.append(value)
            return torch.full((16,), float(value))
        return run

    out = cache(b"a", 1, compute(1))
    out += 100  # the caller's copy: the stored output stays
    assert torch.equal(cache(b"a", 1, compute(9)), torch.full((16,), 1.0)) and made == [1]
    cache(b"b", 1, compute(2))
    cache(b"a", 1, compute(9))  # a is now the most recent
    cache(b"c", 1, compute(3))  # drops b, the least recently used
    assert set(cache.entries) == {b"a", b"c"} and cache.bytes == 2 * 16 * 4
    cache(b"b", 1, compute(4))
    assert made == [1, 2, 3, 4]
    assert cache.summary() == {"rows_called": 6, "rows_reused": 2, "reused_share": 0.3333}
    with pytest.raises(ValueError, match="max_bytes must be positive"):
        CallCache(max_bytes=0)


def test_unbound_calls_and_ignored_arguments_use_the_cache_and_gradient_calls_bypass_it(gmm):
    counting = _Counting(gmm)
    cached = GuidedModel(counting, cache=CallCache())
    bound, x, sigma = cached.bind([0, 1]), _noise(2, 96) * 5.0, torch.full((2,), 5.0)
    first = bound(x, sigma, model_options={})  # GuidedModel ignores model_options: the call repeats
    assert torch.equal(bound(x, sigma), first) and len(counting.sigmas) == 1
    # an unbound call with the same per-sample labels (BenchSetup, Denoiser) is the same call
    assert torch.equal(cached(x, sigma, class_labels=torch.tensor([0, 1])), first) and len(counting.sigmas) == 1
    cached(x, sigma)  # no labels: another key
    assert len(counting.sigmas) == 2 and cached.cache.summary()["rows_reused"] == 4
    tracked = x.clone().requires_grad_(True)
    out = cached(tracked, sigma)  # autograd needs the model's own graph: no stored output
    assert out.requires_grad and len(counting.sigmas) == 3
    sigma_tracked = sigma.clone().requires_grad_(True)
    cached(x, sigma_tracked)
    assert len(counting.sigmas) == 4
    with torch.no_grad():
        cached(tracked, sigma_tracked)  # nothing tracked under no_grad: the stored output is used
    assert len(counting.sigmas) == 4


def test_bench_setup_samples_the_same_with_and_without_the_cache():
    from comfyui_pas import edm_sigmas
    from train_tools.bench_setup import BenchSetup

    cached, plain = BenchSetup.create("cond", 4.0, n=3), BenchSetup.create("cond", 4.0, n=3, call_cache=False)
    assert plain.guided.cache is None
    sigmas = edm_sigmas(4, cached.guided.sigma_min, cached.guided.sigma_max).float()
    seeds = cached.seeds("eval")
    euler = cached.run(BenchSetup.pas("euler"), sigmas, seeds)
    dpmpp = cached.run(BenchSetup.pas("dpmpp_2m"), sigmas, seeds)
    # dpmpp_2m's first step is euler's: its calls at the first two sigmas repeat, 3 seeds each
    assert cached.guided.cache.summary()["rows_reused"] == 6
    assert torch.equal(euler, plain.run(BenchSetup.pas("euler"), sigmas, seeds))
    assert torch.equal(dpmpp, plain.run(BenchSetup.pas("dpmpp_2m"), sigmas, seeds))
