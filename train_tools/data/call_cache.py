"""Exact reuse of repeated model calls in the reproduction and the studies (GuidedModel(..., cache=CallCache())).

`make reproduce` samples dozens of rows from the same start noise. Every row's first call is the same (x = noise
* sigma_max), and a PAS row repeats its base solver's calls up to its first corrected step when both take the
same code path. `CallCache` remembers outputs keyed by the exact bytes of the inputs (x, sigma, class labels
and guidance scale, with their dtypes and shapes), so a repeated call returns the very tensor the model gave the
first time (a copy of it) and a call that differs in any bit is made again. Least recently used outputs are
dropped past `max_bytes`.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict

import torch


def _digest(tensor: torch.Tensor, into) -> None:
    tensor = tensor.detach().cpu().contiguous()
    into.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    into.update(tensor.reshape(-1).view(torch.uint8).numpy() if tensor.numel() else b"")


def call_key(x: torch.Tensor, sigma, labels: torch.Tensor | None, cfg: float, model_tag: str = "") -> bytes:
    """A 32-byte key that differs whenever any input bit, dtype or shape differs (model_tag: which model)."""
    into = hashlib.blake2b(digest_size=32, person=b"pas-call")
    into.update(model_tag.encode())
    _digest(x, into)
    _digest(torch.as_tensor(sigma), into)
    into.update(b"labels")
    if labels is not None:
        _digest(torch.as_tensor(labels), into)
    into.update(repr(float(cfg)).encode())
    return into.digest()


class CallCache:
    """key -> model output, least recently used dropped past max_bytes; counts calls and reuses (in rows)."""

    def __init__(self, max_bytes: int = 1 << 30):
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.max_bytes, self.bytes = int(max_bytes), 0
        self.entries: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self.rows_called = self.rows_reused = 0

    def __call__(self, key: bytes, rows: int, compute):
        """The output stored under `key`, else compute() (stored); a copy either way, so no caller can
        change what another gets."""
        self.rows_called += rows
        stored = self.entries.get(key)
        if stored is not None:
            self.entries.move_to_end(key)
            self.rows_reused += rows
            return stored.clone()
        output = compute()
        stored = output.detach().clone()
        size = stored.numel() * stored.element_size()
        if size <= self.max_bytes:
            self.entries[key] = stored
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, dropped = self.entries.popitem(last=False)
                self.bytes -= dropped.numel() * dropped.element_size()
        return output

    def summary(self) -> dict:
        """Rows the model was asked for, and how many of them came from an earlier identical call."""
        return reuse_summary(self.rows_called, self.rows_reused)


def reuse_summary(rows_called: int, rows_reused: int) -> dict:
    share = rows_reused / rows_called if rows_called else 0.0
    return {"rows_called": int(rows_called), "rows_reused": int(rows_reused), "reused_share": round(share, 4)}
