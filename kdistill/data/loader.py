"""Batches of a stage's data, fetched in the main process or by DataLoader workers.

The order is the loop's: it draws each epoch's permutation from its seeded generator and hands
the batches of sample indices to ``BatchLoader.epoch``; the loader only fetches them. So 0 and N
workers give the same batches in the same order, and a resumed run starts at the next batch
without fetching the ones before it. With workers, a ``torch.utils.data.DataLoader`` fetches
whole batches (``__getitems__``), with persistent workers, prefetching and, for CUDA, pinned
memory; the batches wait in the workers' queues while the student trains on the last one.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class _Rows(Dataset):
    """Samples ``i`` of ``(x, y)``; a whole batch at once through ``__getitems__``."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]

    def __getitems__(self, index: list[int]):
        index = torch.as_tensor(index, dtype=torch.long)
        return index, self.x[index], self.y[index]


class _Batches(Sampler):
    """The current epoch's batches of sample indices, set by the loader before each epoch."""

    def __init__(self):
        self.batches: list[list[int]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _whole(batch):
    return batch  # __getitems__ gave (index, x, y) already


class BatchLoader:
    """Fetches batches of sample indices from ``(x, y)``.

    Args:
        workers: DataLoader worker processes (0: fetch in the main process, as plain indexing).
        prefetch: batches each worker keeps ready.
        pin: page-locked batches, for faster copies to a GPU.
    """

    def __init__(self, x, y, workers: int = 0, prefetch: int = 2, pin: bool = False):
        self.x, self.y, self.workers = x, y, workers
        self._sampler = _Batches()
        self._loader = None
        if workers > 0:
            self._loader = DataLoader(_Rows(x, y), batch_sampler=self._sampler, num_workers=workers,
                                      collate_fn=_whole, pin_memory=pin, persistent_workers=True,
                                      prefetch_factor=prefetch,
                                      # the workers' seeds from a generator of their own: starting
                                      # them draws nothing from torch's global RNG (dropout's)
                                      generator=torch.Generator().manual_seed(0))

    def epoch(self, batches: list[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``(index, x, y)`` of each batch of ``batches`` (index tensors), in order."""
        if self._loader is None:
            return ((index, self.x[index], self.y[index]) for index in batches)
        self._sampler.batches = [index.tolist() for index in batches]
        return iter(self._loader)

    def close(self) -> None:
        """Let the workers go (a persistent DataLoader stops them when it is collected)."""
        self._loader = None
