"""Batches of a stage's data, fetched in the main process or by DataLoader workers.

The order is the loop's: it draws each epoch's permutation from its seeded generator and hands
the batches of sample indices to ``BatchLoader.epoch``; the loader only fetches them. So 0 and N
workers give the same batches in the same order, and a resumed run starts at the next batch
without fetching the ones before it. With workers, a ``torch.utils.data.DataLoader`` fetches
whole batches (``__getitems__``: the source reads and decodes the files of the batch), with
persistent workers, prefetching and, for CUDA, pinned memory; the batches wait in the workers'
queues while the student trains on the last one. Batches travel as stored (images as bytes);
the loop makes them ready for the models on the device (``Inputs.ready``).
"""

from __future__ import annotations

import ctypes
import functools
import gc
import os
import sys
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from kdistill.data.samples import Inputs, as_inputs
from kdistill.errors import KDistillError


class _Rows(Dataset):
    """Samples of ``(x, y)``: a whole batch at once through ``__getitems__``, which the batch
    sampler hands ``(view, indices)``."""

    def __init__(self, x: Inputs, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x.raw([i])[0], self.y[i]

    def __getitems__(self, request):
        view, index = request
        index = torch.as_tensor(index, dtype=torch.long)
        return index, self.x.raw(index, view), self.y[index]


class _Batches(Sampler):
    """The current epoch's ``(view, batch of sample indices)``, set by the loader before each
    epoch (index tensors, made lists one batch at a time: no Python int per sample is held)."""

    def __init__(self):
        self.batches: list = []
        self.view = None

    def __iter__(self):
        return ((self.view, index.tolist()) for index in self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def release_freed_memory() -> None:
    """Collect garbage and hand the heap freed so far back to the system (glibc keeps it
    otherwise): forked DataLoader workers map every page the process still holds, so heap left
    by listing a large source or judging the teacher would count again in every worker."""
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # another C library: nothing to trim
            pass


def _whole(batch):
    return batch  # __getitems__ gave (index, x, y) already


def _one_line_errors(batches):
    """Batches from the workers; a worker's KDistillError (a file that cannot be decoded) reaches
    the user as its own one line, not wrapped in the worker's traceback."""
    try:
        yield from batches
    except KDistillError as err:
        lines = [line for line in str(err).strip().splitlines() if line.strip()]
        last = lines[-1] if lines else str(err)
        raise KDistillError(last.split(f"{type(err).__name__}: ", 1)[-1]) from None  # its subclasses too


def _lower_priority(nice: int, _worker: int) -> None:
    """A worker's start: its scheduling priority lowered by ``nice`` (Unix; nothing elsewhere)."""
    if nice and hasattr(os, "nice"):
        os.nice(nice)


class BatchLoader:
    """Fetches batches of sample indices from ``(x, y)``, as stored.

    Args:
        x: the stage's ``Inputs`` (or a tensor); y: its labels.
        workers: DataLoader worker processes (0: fetch in the main process).
        prefetch: batches each worker keeps ready.
        pin: page-locked batches, for faster copies to a GPU.
        nice: how much lower the workers' scheduling priority is (Unix nice): they decode in the
            CPU time the training step leaves, rather than preempting its threads.
    """

    def __init__(self, x, y, workers: int = 0, prefetch: int = 2, pin: bool = False, nice: int = 0):
        self.x, self.y, self.workers = as_inputs(x), y, workers
        self._sampler = _Batches()
        self._loader = None
        if workers > 0:
            release_freed_memory()  # the workers fork from here: every page the run holds is theirs too
            self._loader = DataLoader(_Rows(self.x, y), batch_sampler=self._sampler, num_workers=workers,
                                      collate_fn=_whole, pin_memory=pin, persistent_workers=True,
                                      prefetch_factor=prefetch, worker_init_fn=functools.partial(_lower_priority, nice),
                                      # the workers' seeds from a generator of their own: starting
                                      # them draws nothing from torch's global RNG (dropout's)
                                      generator=torch.Generator().manual_seed(0))

    def epoch(self, batches: list[torch.Tensor], view: tuple[int, int] | None = None
              ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``(index, stored inputs, labels)`` of each batch of ``batches`` (index tensors), in
        order; ``view``: ``(seed, epoch)``, for sources that decode with random transforms."""
        if self._loader is None:
            return ((index, self.x.raw(index, view), self.y[index.to(self.y.device)]) for index in batches)
        self._sampler.batches, self._sampler.view = list(batches), view
        return _one_line_errors(iter(self._loader))

    def close(self) -> None:
        """Let the workers go (a persistent DataLoader stops them when it is collected)."""
        self._loader = None
