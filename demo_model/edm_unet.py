"""A small UNet with EDM preconditioning (Karras et al. 2022, Table 1 / Sec. 5), used as the demo model.

`EDMDenoiser(x, sigma) -> denoised` is a k-diffusion denoiser:
    D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; c_noise(sigma))
with c_skip = sd^2 / (sigma^2 + sd^2), c_out = sigma sd / sqrt(sigma^2 + sd^2),
c_in = 1 / sqrt(sigma^2 + sd^2), c_noise = ln(sigma) / 4 and sd = sigma_data = 0.5.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class UNetConfig:
    """Everything needed to rebuild the network (stored as JSON in the weights file)."""

    img_channels: int = 1
    img_size: int = 32
    channels: tuple[int, ...] = (32, 64, 96)
    blocks_per_level: int = 1
    attention_lowest: bool = True
    emb_dim: int = 128
    fourier_dim: int = 64
    dropout: float = 0.0
    sigma_data: float = 0.5
    num_classes: int = 0  # > 0: class-conditional; label -1 (or none) is the unconditional branch
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> UNetConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ValueError(f"unknown UNet config keys: {unknown}")
        if "channels" in known:
            known["channels"] = tuple(int(c) for c in known["channels"])
        return cls(**known)


def _groups(ch: int) -> int:
    for g in (8, 4, 2, 1):
        if ch % g == 0:
            return g
    return 1


class FourierEmbedding(nn.Module):
    """Fixed sin/cos features of c_noise at geometrically spaced frequencies."""

    def __init__(self, dim: int):
        super().__init__()
        if dim % 2:
            raise ValueError(f"fourier_dim must be even, got {dim}")
        freqs = 2 * math.pi * torch.logspace(math.log10(0.25), math.log10(64.0), dim // 2)
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        angles = c_noise[:, None].float() * self.freqs[None, :]
        return torch.cat([angles.cos(), angles.sin()], dim=1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the noise embedding added in between, scaled residual sum."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_ch), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch)
        self.norm2 = nn.GroupNorm(_groups(out_ch), out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.silu(self.norm1(h)))
        y = y + self.emb(emb)[:, :, None, None]
        y = self.conv2(self.dropout(F.silu(self.norm2(y))))
        return (y + self.skip(h)) * (1 / math.sqrt(2))


class SelfAttention(nn.Module):
    """Single-head self-attention over spatial positions, residual."""

    def __init__(self, ch: int):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(ch), ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = h.shape
        q, k, v = self.qkv(self.norm(h)).reshape(b, 3, c, hh * ww).transpose(2, 3).unbind(1)
        y = F.scaled_dot_product_attention(q, k, v)
        return h + self.proj(y.transpose(1, 2).reshape(b, c, hh, ww))


class UNet(nn.Module):
    """F(x; c_noise): encoder-decoder with one skip per res block, middle block at the lowest level."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        ch = list(cfg.channels)
        if not ch or any(c <= 0 for c in ch):
            raise ValueError(f"channels must be positive, got {cfg.channels}")
        if cfg.img_size % (2 ** (len(ch) - 1)):
            raise ValueError(f"img_size {cfg.img_size} not divisible by {2 ** (len(ch) - 1)}")
        self.fourier = FourierEmbedding(cfg.fourier_dim)
        self.emb_mlp = nn.Sequential(
            nn.Linear(cfg.fourier_dim, cfg.emb_dim), nn.SiLU(), nn.Linear(cfg.emb_dim, cfg.emb_dim)
        )
        # Row num_classes is the "no class" row: padding_idx keeps it zero, so unconditional = no class term.
        # Zero-initialised, so a conditional net made from unconditional weights starts as that net.
        self.num_classes = int(cfg.num_classes)
        if self.num_classes:
            self.class_emb = nn.Embedding(self.num_classes + 1, cfg.emb_dim, padding_idx=self.num_classes)
            nn.init.zeros_(self.class_emb.weight)
        self.conv_in = nn.Conv2d(cfg.img_channels, ch[0], 3, padding=1)
        self.down_blocks, self.downsamples, skip_ch = nn.ModuleList(), nn.ModuleList(), []
        cur = ch[0]
        for level, c in enumerate(ch):
            blocks = nn.ModuleList()
            for _ in range(cfg.blocks_per_level):
                blocks.append(ResBlock(cur, c, cfg.emb_dim, cfg.dropout))
                cur = c
                skip_ch.append(cur)
            self.down_blocks.append(blocks)
            last = level == len(ch) - 1
            self.downsamples.append(nn.Identity() if last else nn.Conv2d(cur, cur, 3, stride=2, padding=1))
        self.mid1 = ResBlock(cur, cur, cfg.emb_dim, cfg.dropout)
        self.mid_attn = SelfAttention(cur) if cfg.attention_lowest else nn.Identity()
        self.mid2 = ResBlock(cur, cur, cfg.emb_dim, cfg.dropout)
        self.up_blocks, self.upsamples = nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(len(ch))):
            blocks = nn.ModuleList()
            for _ in range(cfg.blocks_per_level):
                blocks.append(ResBlock(cur + skip_ch.pop(), ch[level], cfg.emb_dim, cfg.dropout))
                cur = ch[level]
            self.up_blocks.append(blocks)
            self.upsamples.append(nn.Identity() if level == 0 else nn.Conv2d(cur, cur, 3, padding=1))
        self.norm_out = nn.GroupNorm(_groups(cur), cur)
        self.conv_out = nn.Conv2d(cur, cfg.img_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.emb_mlp(self.fourier(c_noise).to(x.dtype))
        if self.num_classes and labels is not None:
            rows = torch.where(labels < 0, torch.full_like(labels, self.num_classes), labels)
            emb = emb + self.class_emb(rows).to(emb.dtype)
        h = self.conv_in(x)
        skips = []
        for blocks, down in zip(self.down_blocks, self.downsamples, strict=True):
            for block in blocks:
                h = block(h, emb)
                skips.append(h)
            h = down(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for blocks, up in zip(self.up_blocks, self.upsamples, strict=True):
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), emb)
            if not isinstance(up, nn.Identity):
                h = up(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


def edm_scalings(sigma: torch.Tensor, sigma_data: float) -> tuple[torch.Tensor, ...]:
    """EDM Table 1 preconditioning: (c_skip, c_out, c_in, c_noise)."""
    total = sigma**2 + sigma_data**2
    c_skip = sigma_data**2 / total
    c_out = sigma * sigma_data / total.sqrt()
    c_in = 1 / total.sqrt()
    c_noise = sigma.log() / 4
    return c_skip, c_out, c_in, c_noise


def per_sample(values: torch.Tensor, x: torch.Tensor, name: str) -> torch.Tensor:
    """A scalar or one value per sample of x, as a (B,) tensor."""
    values = values.reshape(-1)
    if values.numel() == 1:
        values = values.expand(x.shape[0])
    if values.numel() != x.shape[0]:
        raise ValueError(f"{name} must be a scalar or have one value per sample ({x.shape[0]}), got {values.numel()}")
    return values


class EDMDenoiser(nn.Module):
    """k-diffusion denoiser D(x; sigma, class_labels) around `UNet`.

    `class_labels`: None or a (B,) integer tensor, -1 meaning unconditional; an unconditional net
    (num_classes 0) ignores it. Other extra args are ignored.
    """

    sigma_min = 0.002
    sigma_max = 80.0

    def __init__(self, cfg: UNetConfig | None = None):
        super().__init__()
        self.config = cfg or UNetConfig()
        self.sigma_data = float(self.config.sigma_data)
        self.unet = UNet(self.config)

    @property
    def num_classes(self) -> int:
        return self.unet.num_classes

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, class_labels: torch.Tensor | None = None,
                **extra_args) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"x must be (B, C, H, W), got shape {tuple(x.shape)}")
        sigma = self._sigma_per_sample(sigma, x)
        labels = self._labels_per_sample(class_labels, x) if self.num_classes else None
        c_skip, c_out, c_in, c_noise = (c.to(x.dtype) for c in edm_scalings(sigma, self.sigma_data))
        f_x = self.unet(x * c_in[:, None, None, None], c_noise, labels)
        return c_skip[:, None, None, None] * x + c_out[:, None, None, None] * f_x

    @staticmethod
    def _sigma_per_sample(sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
        sigma = per_sample(torch.as_tensor(sigma, device=x.device, dtype=torch.float32), x, "sigma")
        if not bool((sigma > 0).all()):
            raise ValueError("sigma must be > 0 (the denoiser is not defined at sigma = 0)")
        return sigma

    def _labels_per_sample(self, labels: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
        if labels is None:
            return None
        labels = per_sample(torch.as_tensor(labels, device=x.device).long(), x, "class_labels")
        if bool(((labels < -1) | (labels >= self.num_classes)).any()):
            raise ValueError(f"class_labels must be -1 (unconditional) or 0..{self.num_classes - 1}")
        return labels

    def param_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
