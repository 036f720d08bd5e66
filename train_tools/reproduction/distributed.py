"""Sharding over torchrun processes (gloo): rank r works on items r, r + world, ...; every rank then
holds all results in item order. One process (no WORLD_SIZE) runs everything itself, with no process group.
"""
from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist


def init_distributed():
    """(rank, world) under torchrun, (0, 1) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        # Ranks wait for each other around rank 0's PAS search and the uneven FID shares: allow hours.
        dist.init_process_group("gloo", timeout=timedelta(hours=6))
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def gather_interleaved(local, count, rank, world):
    """Rank r holds items r, r + world, ...; every rank gets the list of all `count` items in order."""
    if world == 1:
        return list(local)
    gathered = [None] * world
    dist.all_gather_object(gathered, list(local))
    out = [None] * count
    for r, part in enumerate(gathered):
        for j, index in enumerate(range(r, count, world)):
            out[index] = part[j]
    return out


def map_seeds(fn, seeds, batch, rank, world):
    """fn(seed_list) -> tensor (len, ...), run on this rank's share of the seeds in batches; every rank
    gets the full result in seed order."""
    mine = seeds[rank::world]
    parts = [fn(mine[i:i + batch]) for i in range(0, len(mine), batch)]
    local = torch.cat(parts) if parts else torch.empty(0)
    return local if world == 1 else torch.stack(gather_interleaved(local, len(seeds), rank, world))


def broadcast(value, rank, world):
    """Rank 0's value on every rank."""
    if world == 1:
        return value
    holder = [value if rank == 0 else None]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]
