"""What the quality bench samples: a demo model under a CFG, seed ranges, cached teacher samples, a Judge.

    setup = BenchSetup.create("cond", cfg=4.0, n=1000)
    judge = setup.judge()                                  # references: teacher (other seeds) and data
    images, finals = setup.sample(setup.builtin("deis"), karras(6))
    scored = judge.score(images, finals)

Seeds: training from TRAIN_SEED_START, evaluation from EVAL_SEED_START (or `eval_start`, e.g. CONFIRM_SEED_START),
the teacher reference from REFERENCE_SEED_START (train_tools.data.seeds), never overlapping. Teacher finals are cached in .cache/quality/.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from comfyui_pas.denoiser import Denoiser
from comfyui_pas.grids import edm_sigmas
from comfyui_pas.teacher import heun_states
from train_tools.data import fashion_mnist
from train_tools.data.call_cache import CallCache
from train_tools.data.guided import GuidedModel, labels_for
from train_tools.data.seeds import EVAL_SEED_START, REFERENCE_SEED_START, TRAIN_SEED_START, seeded_noise
from train_tools.evaluation import classifier

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("PAS_QUALITY_CACHE") or ROOT / ".cache" / "quality")
MODELS = {"uncond": "fashion_mnist_edm.safetensors", "cond": "fashion_mnist_edm_cond.safetensors"}
TEACHER_NFE = 35  # Heun, 18 steps on the karras grid (rho 7) ending at 0
BATCH = 250


def bench_parser(doc: str) -> argparse.ArgumentParser:
    """A study's command line with the bench's own options: --model, --cfg and --n (evaluation seeds)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=MODELS, default="cond", help="demo model")
    parser.add_argument("--cfg", type=float, default=4.0, help="classifier-free guidance of the conditional model")
    parser.add_argument("--n", type=int, default=1000, help="evaluation seeds (and teacher-reference seeds)")
    return parser


def add_output_options(parser: argparse.ArgumentParser, results: str) -> None:
    """A study's --out folder, and --combine RUN... to report over finished runs (folders with <results>.json)."""
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--combine", nargs="+", type=Path, metavar="RUN",
                        help=f"only write one report over finished runs (folders with {results}.json) to --out")


def write_combined(args, study: str, combine) -> bool:
    """With --combine: combine(runs) written to --out (default out/<study>/combined); whether it was asked."""
    if not args.combine:
        return False
    from train_tools.tables import write_results

    write_results(args.out or Path("out") / study / "combined", "combined", {"runs": [str(f) for f in args.combine]},
                  combine(args.combine))
    return True


def karras(steps: int, rho: float = 7.0) -> torch.Tensor:
    """ComfyUI's karras scheduler on the demo model: `steps` sigmas from 80 to 0.002, then 0 (NFE = steps)."""
    return edm_sigmas(steps, 0.002, 80.0, rho=rho, append_zero=True).float()


def load_model(name):
    """A bundled demo model by name ('cond', 'uncond') or a weights file."""
    from demo_model import DEFAULT_WEIGHTS, load_demo_model

    return load_demo_model(DEFAULT_WEIGHTS.parent / MODELS[name] if name in MODELS else name)


def _file_md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()[:10]


@dataclass
class BenchSetup:
    name: str
    cfg: float
    n: int
    guided: GuidedModel
    weights_md5: str
    empty_prompt: bool = False
    eval_start: int = EVAL_SEED_START  # CONFIRM_SEED_START: fresh seeds that confirm a verdict

    @classmethod
    def create(cls, name: str = "cond", cfg: float = 1.0, n: int = 1000, empty_prompt: bool = False,
               eval_start: int = EVAL_SEED_START, call_cache: bool = True):
        """call_cache: reuse model calls repeated bit for bit (every sampler's start on the same seeds; exact,
        train_tools.data.call_cache); False makes every call."""
        from demo_model import DEFAULT_WEIGHTS, load_demo_model

        path = DEFAULT_WEIGHTS.parent / MODELS[name]
        model = load_demo_model(path)
        guided = GuidedModel(model, cfg, cache=CallCache() if call_cache else None)
        return cls(name, float(cfg), int(n), guided, _file_md5(path), empty_prompt, int(eval_start))

    @property
    def conditional(self) -> bool:
        return self.guided.conditional and not self.empty_prompt

    @property
    def rule_cfg(self) -> float | None:
        """The CFG the acceptance rule `auto` sees (comfyui_pas.settings.default_rule): None when unguided."""
        return self.cfg if self.conditional else None

    def label(self) -> str:
        if not self.guided.conditional:
            return "unconditional model"
        return "conditional model, empty prompt" if self.empty_prompt else f"conditional model, CFG {self.cfg:g}"

    def seeds(self, kind: str, count: int | None = None) -> list[int]:
        start = {"train": TRAIN_SEED_START, "eval": self.eval_start, "reference": REFERENCE_SEED_START}[kind]
        return list(range(start, start + (count or self.n)))

    def labels(self, seeds) -> torch.Tensor:
        """Per-seed class labels; -1 (the empty prompt) when unconditional."""
        labels = labels_for(seeds)
        return labels if self.conditional else torch.full_like(labels, -1)

    def per_sample_args(self, seeds) -> dict:
        return {"class_labels": self.labels(seeds)} if self.guided.conditional else {}

    def noise(self, seeds) -> torch.Tensor:
        from demo_model import LATENT_SHAPE

        return seeded_noise(list(seeds), LATENT_SHAPE, torch.float32)

    # ---- sampling ------------------------------------------------------------------------------
    def run(self, sampler, sigmas: torch.Tensor, seeds) -> torch.Tensor:
        """Finals of `sampler(model, x, sigmas, extra_args)` on these seeds, in batches."""
        parts = []
        with torch.no_grad():
            for i in range(0, len(seeds), BATCH):
                batch = seeds[i:i + BATCH]
                x = self.noise(batch) * sigmas[0]
                parts.append(sampler(self.guided, x, sigmas.clone(), self.per_sample_args(batch)))
        return torch.cat(parts)

    def sample(self, sampler, sigmas: torch.Tensor, seeds=None):
        """(uint8 images, finals) of a sampler on the evaluation seeds."""
        finals = self.run(sampler, sigmas, seeds or self.seeds("eval"))
        return fashion_mnist.to_uint8(finals), finals

    @staticmethod
    def builtin(name: str):
        """One of ComfyUI's own k-diffusion sampler functions (needs the host: make host)."""
        from train_tools.comfy_builtins import load_builtin_samplers

        functions = load_builtin_samplers()
        if not functions:
            raise RuntimeError("ComfyUI host not installed: run `make host`")
        fn = functions[name]
        return lambda model, x, sigmas, extra: fn(model, x, sigmas, extra_args=extra, disable=True)

    @staticmethod
    def pas(solver: str, coords=None):
        """Our sampler (plain when coords is None)."""
        from comfyui_pas import sample_pas

        return lambda model, x, sigmas, extra: sample_pas(model, x, sigmas, extra, solver=solver, coords=coords)

    @staticmethod
    def heun(model, x, sigmas, extra):
        return heun_states(Denoiser(model, extra_args=extra), x, sigmas, keep_every=len(sigmas) - 1)[-1]

    # ---- references ----------------------------------------------------------------------------
    def teacher_finals(self, kind: str, nfe: int = TEACHER_NFE) -> torch.Tensor:
        """Heun finals on the evaluation or reference seeds, cached per weights, CFG, prompt, seeds and NFE."""
        seeds = self.seeds(kind)
        prompt = "empty" if self.empty_prompt else "class"
        cfg = self.cfg if self.conditional else 1.0  # guidance changes nothing without a prompt
        stem = f"{self.name}-{self.weights_md5}-cfg{cfg:g}-{prompt}-{seeds[0]}"
        path = CACHE / f"{stem}-{len(seeds)}-heun{nfe}.st"
        if path.is_file():
            return load_file(str(path))["finals"]
        for longer in CACHE.glob(f"{stem}-*-heun{nfe}.st"):  # the same seeds start a longer cached run
            count = longer.name[len(stem) + 1:].split("-")[0]
            if count.isdigit() and int(count) > len(seeds):
                return load_file(str(longer))["finals"][:len(seeds)]
        started = time.perf_counter()
        finals = self.run(self.heun, karras((nfe + 1) // 2), seeds)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        save_file({"finals": finals.contiguous()}, str(tmp), metadata={"seconds": f"{time.perf_counter() - started:.0f}"})
        os.replace(tmp, path)
        return finals

    def judge(self, with_inception: bool = False, network=None):
        """The quality bench's Judge for this setting; `network`: score in another classifier's features
        (a loaded Classifier; None: the committed one)."""
        from train_tools.evaluation.quality import Judge

        teacher_ref = fashion_mnist.to_uint8(self.teacher_finals("reference"))
        references = {"teacher": classifier.features(teacher_ref, network), "data": data_features(network)}
        inception = None
        if with_inception:
            from train_tools.evaluation import fid
            inception = fid.features(teacher_ref)
        labels = self.labels(self.seeds("eval")).numpy() if self.conditional else None
        return Judge(self.n, references, self.teacher_finals("eval"), labels, inception_reference=inception,
                     network=network)


def data_features(network=None) -> "torch.Tensor":
    """Classifier features of the 10,000 Fashion-MNIST test images (`network`: another Classifier)."""
    return classifier.features(fashion_mnist.load_images("test"), network)
