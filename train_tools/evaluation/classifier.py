"""A small Fashion-MNIST CNN: the feature space of the quality bench and the judge of class adherence.

    OMP_NUM_THREADS=1 python -m train_tools.evaluation.classifier          # the recipe of the committed weights

Input: uint8 28x28 images, what a user sees after decoding (train_tools.data.fashion_mnist.to_uint8).
`features()` is the 128-d penultimate layer (after ReLU) divided by the test images' feature spread (the
file's `feature_scale`: the root of the mean per-dimension variance), in which the bench's Frechet distance
and KID are computed; so the data's features have unit mean variance. `predict()` gives the class. The weights file records its recipe, data md5 and test accuracy.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F

from demo_model.classes import CLASS_NAMES
from train_tools.data import fashion_mnist
from train_tools.paths import MODELS_DIR

LOG = logging.getLogger("classifier")
DEFAULT_WEIGHTS = MODELS_DIR / "fashion_mnist_classifier.safetensors"
FEATURE_DIM = 128
_LOADED: dict[str, "Classifier"] = {}


class Classifier(nn.Module):
    """conv32-conv32-pool-conv64-conv64-pool-fc128-fc10, batch-normalised convolutions."""

    def __init__(self):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

        self.body = nn.Sequential(block(1, 32), block(32, 32), nn.MaxPool2d(2),
                                  block(32, 64), block(64, 64), nn.MaxPool2d(2), nn.Flatten(),
                                  nn.Linear(64 * 7 * 7, FEATURE_DIM), nn.ReLU())
        self.head = nn.Linear(FEATURE_DIM, len(CLASS_NAMES))

    @staticmethod
    def prepare(images) -> torch.Tensor:
        """uint8 (N, 28, 28) -> float (N, 1, 28, 28), standardised with fixed data statistics."""
        x = torch.as_tensor(np.asarray(images))
        if x.dtype != torch.uint8 or x.ndim != 3 or tuple(x.shape[1:]) != (28, 28):
            raise ValueError(f"expected uint8 images of shape (N, 28, 28), got {x.dtype} {tuple(x.shape)}")
        return ((x.float() / 255 - 0.286) / 0.353)[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def load_classifier(path: Path | str | None = None) -> Classifier:
    """The committed classifier in eval mode (cached per path)."""
    path = Path(path or DEFAULT_WEIGHTS)
    if str(path) not in _LOADED:
        if not path.is_file():
            raise FileNotFoundError(f"classifier weights not found: {path}; train them with "
                                    "`python -m train_tools.evaluation.classifier`")
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            metadata = dict(f.metadata() or {})
        model = Classifier()
        model.load_state_dict(tensors, strict=True)
        model.metadata = metadata
        _LOADED[str(path)] = model.eval().requires_grad_(False)
    return _LOADED[str(path)]


@torch.no_grad()
def _run(images, fn, batch: int = 1000) -> np.ndarray:
    x = Classifier.prepare(images)
    return np.concatenate([fn(x[i:i + batch]).double().numpy() for i in range(0, len(x), batch)])


def _feature_scale(model: Classifier) -> float:
    return float(model.metadata.get("feature_scale", 1.0))


def features(images, classifier: Classifier | None = None) -> np.ndarray:
    """(N, 128) float64 penultimate features of uint8 (N, 28, 28) images."""
    model = classifier or load_classifier()
    return _run(images, model.body) / _feature_scale(model)


@torch.no_grad()
def features_and_classes(images, classifier: Classifier | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`features(images)` and `predict(images)` from one pass of the network body."""
    model = classifier or load_classifier()
    body = _run(images, model.body)
    classes = model.head(torch.from_numpy(body).float()).argmax(dim=1).numpy()
    return body / _feature_scale(model), classes


def predict(images, classifier: Classifier | None = None) -> np.ndarray:
    """(N,) predicted class indices of uint8 (N, 28, 28) images."""
    model = classifier or load_classifier()
    return _run(images, model).argmax(axis=1)


def accuracy(model: Classifier, images, labels) -> float:
    return float((predict(images, model) == np.asarray(labels)).mean())


def train(epochs: int, batch: int, lr: float, seed: int, data_dir: Path) -> tuple[Classifier, dict]:
    """Adam with a cosine learning rate; random shifts of up to 2 pixels and horizontal flips."""
    images = fashion_mnist.load_images("train", data_dir)
    labels = torch.from_numpy(fashion_mnist.load_labels("train", data_dir)).long()
    x_all = Classifier.prepare(images)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = Classifier()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    total = epochs * (len(x_all) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.15)
    model.train()
    step, t0 = 0, time.time()
    for epoch in range(epochs):
        order = torch.randperm(len(x_all), generator=gen)
        for i in range(0, len(order) - batch + 1, batch):
            idx = order[i:i + batch]
            x = _augment(x_all[idx], gen)
            loss = F.cross_entropy(model(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 100 == 0:
                LOG.info("epoch %d step %d/%d loss %.4f  %.1f min", epoch, step, total, loss.item(),
                         (time.time() - t0) / 60)
    model.eval()
    recipe = {"epochs": epochs, "batch": batch, "lr": lr, "seed": seed, "schedule": "one-cycle cosine",
              "augment": "shift <= 2 px, horizontal flip", "minutes": round((time.time() - t0) / 60, 1)}
    return model, recipe


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip = torch.rand(len(x), generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=gen))
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS)
    p.add_argument("--data-dir", type=Path, default=fashion_mnist.DATA_DIR)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    model, recipe = train(args.epochs, args.batch, args.lr, args.seed, args.data_dir)
    test_acc = accuracy(model, fashion_mnist.load_images("test", args.data_dir),
                        fashion_mnist.load_labels("test", args.data_dir))
    model.metadata = {}
    test_feats = features(fashion_mnist.load_images("test", args.data_dir), model)
    metadata = {"format": "comfyui-pas-fmnist-classifier", "recipe": json.dumps(recipe),
                "feature_scale": f"{float(np.sqrt(test_feats.var(axis=0).mean())):.6f}",
                "test_accuracy": f"{test_acc:.4f}", "data_md5": fashion_mnist.images_md5("train", args.data_dir),
                "torch_version": torch.__version__}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp), metadata=metadata)
    tmp.chmod(0o644)
    tmp.replace(args.out)
    print(f"test accuracy {test_acc:.4f} ({recipe['minutes']} min) -> {args.out}")


if __name__ == "__main__":
    main()
