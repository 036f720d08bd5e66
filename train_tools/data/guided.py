"""Classifier-free guidance for the demo models, as ComfyUI's CFG does it: uncond + cfg * (cond - uncond).

`GuidedModel(model, cfg)` is a k-diffusion denoiser `(x, sigma, class_labels=None) -> denoised`. The
prompted class of every seed is `seed % 10` (balanced classes), passed as the per-sample `class_labels`;
label -1 is the empty prompt. For cfg 1, or an unconditional model, it is one plain model call.
"""
from __future__ import annotations

import torch

from demo_model.classes import CLASS_NAMES
from train_tools.data.call_cache import CallCache, call_key

CLASS_COUNT = len(CLASS_NAMES)


def labels_for(seeds) -> torch.Tensor:
    """The prompted class of each seed."""
    return torch.tensor([int(s) % CLASS_COUNT for s in seeds], dtype=torch.long)


class GuidedModel:
    """CFG around a class-conditional EDMDenoiser: both branches in one doubled batch."""

    def __init__(self, model, cfg: float = 1.0, cache: CallCache | None = None):
        self.model, self.cfg, self.cache = model, float(cfg), cache
        self.sigma_min, self.sigma_max = model.sigma_min, model.sigma_max
        self.conditional = bool(getattr(model, "num_classes", 0))
        self.metadata = getattr(model, "metadata", {})

    def __call__(self, x, sigma, class_labels=None, **_):
        """The guided denoiser; other keyword arguments are ignored, so with a `cache` a call whose x, sigma,
        labels and CFG repeat bit for bit takes the first call's output (calls that need gradients bypass it)."""
        if self.cache is None or self._needs_grad(x, sigma):
            return self._guided(x, sigma, class_labels)
        labels = None if class_labels is None else torch.as_tensor(class_labels)
        return self.cache(call_key(x, sigma, labels, self.cfg, str(id(self.model))), x.shape[0],
                          lambda: self._guided(x, sigma, class_labels))

    def _needs_grad(self, x, sigma) -> bool:
        """Whether autograd would track this call (through x, sigma or the weights): a stored output has no graph."""
        if not torch.is_grad_enabled():
            return False
        weights = self.model.parameters() if hasattr(self.model, "parameters") else ()
        return x.requires_grad or getattr(sigma, "requires_grad", False) or any(w.requires_grad for w in weights)

    def _guided(self, x, sigma, class_labels):
        if not self.conditional or class_labels is None:
            return self.model(x, sigma)
        labels = torch.as_tensor(class_labels, device=x.device).reshape(-1).long()
        if self.cfg == 1.0:
            return self.model(x, sigma, class_labels=labels)
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1).expand(x.shape[0])
        both = self.model(torch.cat([x, x]), torch.cat([sigma, sigma]),
                          class_labels=torch.cat([labels, torch.full_like(labels, -1)]))
        cond, uncond = both.chunk(2)
        return uncond + (cond - uncond) * self.cfg

    def calls_per_eval(self) -> int:
        """Network evaluations per model call and sample (2 under CFG)."""
        return 2 if self.conditional and self.cfg != 1.0 else 1

    def bind(self, seeds):
        """A denoiser for exactly these seeds' rows (for samplers that pass no per-sample arguments)."""
        return _Bound(self, labels_for(seeds))


class _Bound:
    def __init__(self, guided: GuidedModel, labels: torch.Tensor):
        self.guided, self.labels = guided, labels
        self.sigma_min, self.sigma_max = guided.sigma_min, guided.sigma_max

    def __call__(self, x, sigma, **extra):
        if x.shape[0] != len(self.labels):
            raise ValueError(f"bound to {len(self.labels)} seeds, called with {x.shape[0]} rows")
        return self.guided(x, sigma, class_labels=self.labels, **extra)
