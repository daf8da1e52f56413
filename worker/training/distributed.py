"""One job over several processes (GPUs, or CPU processes with gloo): the pieces the recipe needs for DDP.

Launched by `worker/ddp_launch.py` through torchrun, which sets RANK, WORLD_SIZE, LOCAL_RANK and the
rendezvous variables. Outside such a launch `current()` is None and nothing here is used.

How the recipe uses it (one process per rank, the same code on each):
- data: `RankSampler` splits every global batch of `batch_size` rows across the ranks, exactly as
  torch's DistributedSampler does with the same seed: rank r takes rows r, r+W, r+2W... of the epoch's
  permutation, so the W per-rank batches of `batch_size / W` rows together are the single-process batch.
  With mean losses and DDP's averaged gradients, a step equals the single-process step.
- model: freeze first, then `wrap(model)` (DDP broadcasts rank 0's weights and averages gradients), then
  compile the wrapper; save and evaluate the unwrapped module.
- metrics: `mean_over_ranks` for logged train metrics; validation runs on rank 0 and its metrics are
  `broadcast` so every rank takes the same best/early-stop decisions.
- reporting and checkpoints: rank 0 only (`RankZeroReporter` drops other ranks' calls); `should_stop` is
  agreed by all ranks every step, so a cancel stops every process at the same step.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from .reporting import CheckpointInfo, Level, Reporter


@dataclass(frozen=True)
class DistributedContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_context: DistributedContext | None = None


def launched() -> bool:
    """Whether this process was started by torchrun (or any launcher setting WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str | None = None) -> DistributedContext:
    """Join the process group torchrun set up: NCCL on one GPU per rank, gloo on the CPU."""
    global _context
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"rank {rank} needs GPU {local_rank}, but only {torch.cuda.device_count()} are visible")
        torch.cuda.set_device(local_rank)
        target, backend = torch.device("cuda", local_rank), "nccl"
    else:
        target, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    _context = DistributedContext(rank, world, local_rank, target, backend)
    return _context


def current() -> DistributedContext | None:
    return _context


def shutdown() -> None:
    global _context
    if dist.is_initialized():
        dist.destroy_process_group()
    _context = None


# --- data ---------------------------------------------------------------------------------------------


class RankSampler:
    """This rank's share of each epoch: the epoch's permutation (the same on every rank, from the seed and
    the epoch), every world_size-th row from `rank`. Matches torch.utils.data.DistributedSampler."""

    def __init__(self, num_rows: int, ctx: DistributedContext, seed: int, shuffle: bool = True) -> None:
        from torch.utils.data import DistributedSampler

        self._sampler = DistributedSampler(range(num_rows), num_replicas=ctx.world_size, rank=ctx.rank,
                                           shuffle=shuffle, seed=seed, drop_last=False)

    def indices(self, epoch: int) -> list[int]:
        self._sampler.set_epoch(epoch)
        return list(iter(self._sampler))

    def __len__(self) -> int:
        return len(self._sampler)


def per_rank_batch_size(batch_size: int, ctx: DistributedContext) -> int:
    """`batch_size` stays the global batch: each rank takes an equal part of it."""
    if batch_size % ctx.world_size:
        from .reporting import ConfigError

        raise ConfigError(f"hyperparameters.batch_size: {batch_size} does not split evenly over "
                          f"{ctx.world_size} processes (resources.gpus); use a multiple of {ctx.world_size}",
                          field="hyperparameters.batch_size")
    return batch_size // ctx.world_size


# --- model and reductions -----------------------------------------------------------------------------


def wrap(model: torch.nn.Module, ctx: DistributedContext) -> torch.nn.Module:
    """DDP around an already frozen model (frozen parameters are neither synced nor averaged)."""
    from torch.nn.parallel import DistributedDataParallel

    if ctx.device.type == "cuda":
        return DistributedDataParallel(model, device_ids=[ctx.local_rank], output_device=ctx.local_rank)
    return DistributedDataParallel(model)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module under DDP and torch.compile wrappers (what checkpoints save)."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


def mean_over_ranks(values: dict[str, float], ctx: DistributedContext) -> dict[str, float]:
    """The mean of each metric over the ranks (one all-reduce)."""
    if not values:
        return values
    names = sorted(values)
    tensor = torch.tensor([float(values[n]) for n in names], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return {n: v / ctx.world_size for n, v in zip(names, tensor.tolist())}


def weighted_mean_over_ranks(sums: dict[str, float], count: int, ctx: DistributedContext) -> dict[str, float]:
    """Per-example metrics evaluated on a shard per rank: sum of (metric * rows) / total rows."""
    names = sorted(sums)
    tensor = torch.tensor([float(sums[n]) for n in names] + [float(count)], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    total = tensor[-1].item()
    return {n: v / total for n, v in zip(names, tensor[:-1].tolist())}


def broadcast(obj: Any, ctx: DistributedContext, src: int = 0) -> Any:
    """Rank src's value on every rank (small picklable objects: metrics, decisions)."""
    box = [obj if ctx.rank == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def any_rank(flag: bool, ctx: DistributedContext) -> bool:
    tensor = torch.tensor([1 if flag else 0], dtype=torch.int32, device=ctx.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def barrier(ctx: DistributedContext) -> None:
    if ctx.device.type == "cuda":
        dist.barrier(device_ids=[ctx.local_rank])
    else:
        dist.barrier()


# --- reporting ----------------------------------------------------------------------------------------


class RankZeroReporter:
    """Rank 0 reports; the other ranks' calls are dropped. `should_stop` is agreed by all ranks (an
    all-reduce per call, so every rank must call it at the same points, which the recipe does each step)."""

    def __init__(self, reporter: Reporter, ctx: DistributedContext) -> None:
        self.inner, self.ctx = reporter, ctx

    def metrics(self, step: int, values: dict[str, float]) -> None:
        if self.ctx.is_main:
            self.inner.metrics(step, values)

    def event(self, level: Level, type: str, message: str, data: dict[str, Any] | None = None) -> None:
        if self.ctx.is_main:
            self.inner.event(level, type, message, data)

    def progress(self, step: int, total_steps: int, epoch: float) -> None:
        if self.ctx.is_main:
            self.inner.progress(step, total_steps, epoch)

    def checkpoint_saved(self, info: CheckpointInfo) -> None:
        if self.ctx.is_main:
            self.inner.checkpoint_saved(info)

    def checkpoint_removed(self, name: str) -> None:
        if self.ctx.is_main:
            self.inner.checkpoint_removed(name)

    def should_stop(self) -> bool:
        return any_rank(self.ctx.is_main and self.inner.should_stop(), self.ctx)


def shard(rows: int, ctx: DistributedContext) -> Iterator[int]:
    """Row indices of an evaluation shard (contiguous, unpadded: every row is evaluated exactly once)."""
    per = -(-rows // ctx.world_size)
    return iter(range(ctx.rank * per, min(rows, (ctx.rank + 1) * per)))
