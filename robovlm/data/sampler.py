"""Batches for one or many training processes, drawn from one global order.

Every process shuffles the same permutation (seed + epoch) and cuts it into global batches; process ``rank`` takes
its slice of each. So a run on N processes sees exactly the windows a one-process run sees, step by step, which is
what makes the two comparable (``tests/robovlm/training/test_distributed.py``) and resumable the same way.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ShardedBatchSampler(Sampler[list[int]]):
    def __init__(
        self, size: int, *, global_batch: int, rank: int = 0, world: int = 1, seed: int = 0, shuffle: bool = True
    ) -> None:
        """``size`` items; ``global_batch`` windows per micro-step over all processes (a multiple of ``world``);
        incomplete last batches are dropped so every process takes the same number of steps."""
        if global_batch % world:
            raise ValueError(f"the batch ({global_batch}) must be a multiple of the number of processes ({world})")
        if size < global_batch:
            raise ValueError(f"{size} training windows are fewer than one batch of {global_batch}")
        self.size, self.global_batch, self.rank, self.world = size, global_batch, rank, world
        self.seed, self.shuffle, self.epoch = seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size // self.global_batch

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        per = self.global_batch // self.world
        for b in range(len(self)):
            batch = order[b * self.global_batch : (b + 1) * self.global_batch]
            # the epoch rides along in the index (dataset items are ``epoch * size + i``), so augmentation in worker
            # processes draws per epoch without any state shared with them
            yield [self.epoch * self.size + i for i in batch[self.rank * per : (self.rank + 1) * per]]
