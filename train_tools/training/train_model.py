"""Train the bundled Fashion-MNIST demo model (EDM loss, Karras et al. 2022, Sec. 5 / Table 1).

    OMP_NUM_THREADS=1 python -m train_tools.training.train_model            # the recipe of the committed weights

Defaults are the committed recipe. Training stops at --steps or --minutes, whichever comes first,
checkpoints to .cache/train_model/ckpt.pt (continue with --resume) and writes the EMA weights to
demo_model/weights/fashion_mnist_edm.safetensors (also at every checkpoint, marked incomplete).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from demo_model import DEFAULT_WEIGHTS
from demo_model.edm_unet import EDMDenoiser, UNetConfig
from train_tools.data import fashion_mnist
from train_tools.paths import CACHE_ROOT

LOG = logging.getLogger("train_model")
DEFAULT_OUT = DEFAULT_WEIGHTS
DEFAULT_CKPT = CACHE_ROOT / "train_model" / "ckpt.pt"
FILE_FORMAT = "comfyui-pas-demo-model"
FILE_VERSION = "1"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=80.0, help="wall-clock budget (total, across resumes)")
    p.add_argument("--steps", type=int, default=100_000, help="maximum optimizer steps")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=8e-4, help="peak Adam learning rate")
    p.add_argument("--lr-final", type=float, default=8e-5, help="learning rate at the end of the budget")
    p.add_argument("--warmup", type=int, default=250, help="linear learning-rate warm-up steps")
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay cap; warm-up min(cap, (1+n)/(10+n))")
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--p-mean", type=float, default=-1.2)
    p.add_argument("--p-std", type=float, default=1.2)
    p.add_argument("--no-flip", action="store_true", help="disable random horizontal flips")
    p.add_argument("--channels", type=str, default="24,48,96")
    p.add_argument("--blocks-per-level", type=int, default=1)
    p.add_argument("--no-attention", action="store_true")
    p.add_argument("--num-classes", type=int, default=0, help="> 0: class-conditional model (10 for Fashion-MNIST)")
    p.add_argument("--label-dropout", type=float, default=0.15,
                   help="conditional: share of batches' labels replaced by 'unconditional' (for CFG)")
    p.add_argument("--init-from", type=Path, default=None,
                   help="start from these weights (e.g. the unconditional model; new class rows start at zero)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation, batches and noise")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--log-every", type=int, default=100, help="optimizer steps between log lines")
    p.add_argument("--ckpt-minutes", type=float, default=5.0, help="checkpoint (and export) interval")
    p.add_argument("--ckpt", type=Path, default=DEFAULT_CKPT)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--resume", action="store_true", help="continue from --ckpt")
    p.add_argument("--data-dir", type=Path, default=fashion_mnist.DATA_DIR)
    return p.parse_args(argv)


def model_config(args: argparse.Namespace) -> UNetConfig:
    channels = tuple(int(c) for c in args.channels.split(","))
    return UNetConfig(channels=channels, blocks_per_level=args.blocks_per_level,
                      attention_lowest=not args.no_attention, num_classes=args.num_classes)


def training_config(args: argparse.Namespace) -> dict:
    keys = ("minutes", "steps", "batch", "lr", "lr_final", "warmup", "ema", "grad_clip", "p_mean", "p_std",
            "seed", "threads")
    cfg = {k: getattr(args, k) for k in keys}
    cfg["flip"] = not args.no_flip
    if args.num_classes:
        cfg["label_dropout"] = args.label_dropout
    if args.init_from is not None:
        cfg["init_from"] = args.init_from.name
    return cfg


def ema_decay(step: int, cap: float) -> float:
    """EMA decay with warm-up: short memory early, `cap` later."""
    return min(cap, (1 + step) / (10 + step))


def learning_rate(step: int, progress: float, args: argparse.Namespace) -> float:
    """Linear warm-up, then cosine from lr to lr_final over the budget (progress in [0, 1])."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    cos = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return args.lr_final + (args.lr - args.lr_final) * cos


def edm_loss(model: EDMDenoiser, y: torch.Tensor, gen: torch.Tensor, args: argparse.Namespace,
             labels: torch.Tensor | None = None) -> torch.Tensor:
    """EDM training loss: log-normal sigma, weight (s^2 + sd^2) / (s sd)^2."""
    b = y.shape[0]
    sigma = (torch.randn(b, generator=gen) * args.p_std + args.p_mean).exp()
    noise = torch.randn(y.shape, generator=gen) * sigma[:, None, None, None]
    sd = model.sigma_data
    weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
    per_sample = ((model(y + noise, sigma, class_labels=labels) - y) ** 2).mean(dim=(1, 2, 3))
    return (weight * per_sample).mean()


def sample_batch(images: torch.Tensor, gen: torch.Generator, batch: int, flip: bool,
                 labels: torch.Tensor | None = None, label_dropout: float = 0.0):
    """A random batch in model space and, with `labels`, its labels (-1 where dropped for CFG)."""
    idx = torch.randint(0, images.shape[0], (batch,), generator=gen)
    y = fashion_mnist.to_model_space(images[idx])
    if flip:
        mask = torch.rand(batch, generator=gen) < 0.5
        y = torch.where(mask[:, None, None, None], y.flip(-1), y)
    if labels is None:
        return y, None
    drop = torch.rand(batch, generator=gen) < label_dropout
    return y, torch.where(drop, torch.full_like(labels[idx], -1), labels[idx])


def init_weights(model: EDMDenoiser, path: Path) -> None:
    """Load `path` into `model`; only the class embedding may be missing (it stays zero)."""
    from demo_model import read_weights

    tensors, _ = read_weights(path)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if unexpected or any(not k.startswith("unet.class_emb") for k in missing):
        raise SystemExit(f"--init-from {path}: weights do not fit (missing {missing}, unexpected {unexpected})")


def export_weights(ema: EDMDenoiser, path: Path, metadata: dict) -> None:
    """Atomic safetensors write of the EMA weights with JSON-able metadata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tensors = {k: v.detach().contiguous().clone() for k, v in ema.state_dict().items()}
    save_file(tensors, str(tmp), metadata={k: str(v) for k, v in metadata.items()})
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def build_metadata(cfg: UNetConfig, args, data_md5: str, step: int, elapsed: float, loss: float,
                   complete: bool) -> dict:
    return {
        "format": FILE_FORMAT,
        "format_version": FILE_VERSION,
        "model_config": json.dumps(cfg.to_dict()),
        "training_config": json.dumps(training_config(args)),
        "steps_done": step,
        "minutes_done": round(elapsed / 60, 2),
        "final_loss": round(loss, 5),
        "complete": "true" if complete else "false",
        "data": "fashion-mnist train (Debian dataset-fashion-mnist)",
        "data_md5": data_md5,
        "torch_version": torch.__version__,
    }


def resume(state_path: Path, cfg: UNetConfig, model, ema, opt, gen) -> tuple[int, float, float]:
    """Load a checkpoint into model, EMA, optimizer and generator; (step, elapsed seconds, loss average)."""
    if not state_path.is_file():
        raise SystemExit(f"--resume: no checkpoint at {state_path}")
    state = torch.load(state_path, map_location="cpu", weights_only=False)
    if state["model_config"] != cfg.to_dict():
        raise SystemExit("--resume: checkpoint was trained with a different model config")
    model.load_state_dict(state["model"])
    ema.load_state_dict(state["ema"])
    opt.load_state_dict(state["opt"])
    gen.set_state(state["gen"])
    LOG.info("resumed at step %d (%.1f min done)", state["step"], state["elapsed"] / 60)
    return state["step"], state["elapsed"], state["loss_avg"]


def train_step(model, ema, opt, batch, gen, args, step: int, lr: float) -> float:
    """One Adam step on the EDM loss (clipped), then the EMA update; returns the loss."""
    for group in opt.param_groups:
        group["lr"] = lr
    loss = edm_loss(model, batch[0], gen, args, batch[1])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
    opt.step()
    with torch.no_grad():
        decay = ema_decay(step, args.ema)
        for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
            p_ema.lerp_(p, 1 - decay)
    return loss.item()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    images = torch.from_numpy(fashion_mnist.load_images("train", args.data_dir))
    labels = torch.from_numpy(fashion_mnist.load_labels("train", args.data_dir)).long() if args.num_classes else None
    data_md5 = fashion_mnist.images_md5("train", args.data_dir)
    cfg = model_config(args)
    torch.manual_seed(args.seed)
    model = EDMDenoiser(cfg)
    if args.init_from is not None:
        init_weights(model, args.init_from)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    step, elapsed_before, loss_avg = resume(args.ckpt, cfg, model, ema, opt, gen) if args.resume else (0, 0.0, math.nan)
    LOG.info("model: %d params, config %s", model.param_count(), cfg.to_dict())
    LOG.info("training: %s", training_config(args))
    start, last_ckpt, budget_s = time.time() - elapsed_before, time.time(), args.minutes * 60

    def checkpoint(complete: bool) -> None:
        elapsed = time.time() - start
        save_checkpoint(args.ckpt, {"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                                    "gen": gen.get_state(), "step": step, "elapsed": elapsed, "loss_avg": loss_avg,
                                    "model_config": cfg.to_dict()})
        export_weights(ema, args.out, build_metadata(cfg, args, data_md5, step, elapsed, loss_avg, complete))
        LOG.info("checkpoint at step %d -> %s, weights -> %s", step, args.ckpt, args.out)

    model.train()
    while step < args.steps and time.time() - start < budget_s:
        lr = learning_rate(step, max(step / args.steps, (time.time() - start) / budget_s), args)
        batch = sample_batch(images, gen, args.batch, not args.no_flip, labels, args.label_dropout)
        loss = train_step(model, ema, opt, batch, gen, args, step, lr)
        step += 1
        loss_avg = loss if math.isnan(loss_avg) else 0.99 * loss_avg + 0.01 * loss
        if step % args.log_every == 0:
            el = time.time() - start
            LOG.info("step %d loss %.4f lr %.2e  %.1f min  %.1f steps/min", step, loss_avg, lr, el / 60,
                     step / max(el / 60, 1e-9))
        if time.time() - last_ckpt > args.ckpt_minutes * 60:
            checkpoint(complete=False)
            last_ckpt = time.time()
    checkpoint(complete=True)
    LOG.info("done: %d steps in %.1f min, loss %.4f", step, (time.time() - start) / 60, loss_avg)


if __name__ == "__main__":
    main()
