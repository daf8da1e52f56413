"""Mini-batches over in-memory tensors, shaped for exact resume and for a compiler that hates new shapes.

- Training: each epoch's order is a permutation drawn from (seed, epoch) alone, so a resumed run only
  needs the step number to find its place; the last partial batch is dropped so every batch has one shape.
- Evaluation: fixed order, the last batch padded to the full size (callers keep the first `n` rows), so a
  compiled model never sees a second shape.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from .data import Tensors, num_rows


def epoch_seed(seed: int, epoch: int) -> int:
    # SeedSequence mixes (seed, epoch) well: neighbouring seeds never share an epoch's order
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0] >> 1)


class TrainBatches:
    def __init__(self, tensors: Tensors, batch_size: int, seed: int, device: torch.device,
                 shard: tuple[int, int] | None = None) -> None:
        self.tensors = {k: v.to(device) for k, v in tensors.items()}
        self.n = num_rows(tensors)
        self.batch_size = min(batch_size, self.n)
        self.seed = seed
        self.device = device
        self._order: tuple[int, torch.Tensor] | None = None
        # DDP (distributed.py): (rank, world_size). Every rank draws the same global batch and keeps rows
        # rank, rank + W, ...: the ranks' parts together are exactly the single-process batch.
        self.shard = shard

    def __len__(self) -> int:
        """Full batches per epoch."""
        return self.n // self.batch_size

    def order(self, epoch: int) -> torch.Tensor:
        if self._order is None or self._order[0] != epoch:
            g = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
            self._order = (epoch, torch.randperm(self.n, generator=g).to(self.device))
        return self._order[1]

    def batch(self, epoch: int, index: int) -> Tensors:
        rows = self.order(epoch)[index * self.batch_size : (index + 1) * self.batch_size]
        if self.shard is not None:
            rank, world = self.shard
            rows = rows[rank::world]
        return {k: v[rows] for k, v in self.tensors.items()}


def eval_batches(tensors: Tensors, batch_size: int) -> Iterator[tuple[Tensors, int]]:
    """(batch padded to batch_size, number of real rows) in order."""
    n = num_rows(tensors)
    for start in range(0, n, batch_size):
        real = min(batch_size, n - start)
        rows = torch.arange(start, start + batch_size, device=next(iter(tensors.values())).device)
        rows = rows.clamp(max=n - 1)  # padding repeats the last row; its outputs are discarded
        yield {k: v[rows] for k, v in tensors.items()}, real
