"""Views of a source: the samples a split or a stage holds, as index sets (nothing is copied).

``Inputs`` are the model inputs of some samples of a source: ``x[key]`` fetches and prepares
them on the CPU (``key`` a slice, an int or index tensor, as for a tensor); ``x.batch(key,
device)`` moves the stored values to ``device`` first (images as bytes) and prepares them
there. ``Samples`` pairs inputs with labels; ``Splits`` (``data.splits``) holds four of them.
"""

from __future__ import annotations

from typing import Callable

import torch

from kdistill.data.fingerprint import fingerprint, fingerprint_text
from kdistill.data.source import Source


class Inputs:
    """Samples ``index`` (None: all) of ``source``, made ready for the models by ``prepare``
    (stored values -> model inputs, on whichever device they are; None: as stored)."""

    def __init__(self, source: Source, index: torch.Tensor | None = None, prepare: Callable | None = None,
                 fp: str | None = None):
        self.source, self.index, self.prepare = source, index, prepare
        self._fp = fp  # given: the fingerprint of the view this one was copied from

    def __len__(self) -> int:
        return len(self.source) if self.index is None else len(self.index)

    def rows(self, key) -> torch.Tensor:
        """The source's rows of ``key`` (a slice, an int, a list or an index tensor of this view)."""
        if isinstance(key, slice):
            rows = torch.arange(*key.indices(len(self)))  # no arange over the whole set per batch
        else:
            rows = torch.as_tensor(key, dtype=torch.long).reshape(-1)
        return rows if self.index is None else self.index[rows]

    def raw(self, key, view: tuple[int, int] | None = None) -> torch.Tensor:
        """The stored values of samples ``key`` (``view``: ``(seed, epoch)`` of a training batch)."""
        return self.source.fetch(self.rows(key), view)

    def ready(self, raw: torch.Tensor) -> torch.Tensor:
        """Stored values -> model inputs, on the device ``raw`` is on."""
        return self.prepare(raw) if self.prepare is not None else raw

    def batch(self, key, device, view: tuple[int, int] | None = None) -> torch.Tensor:
        """The model inputs of samples ``key`` on ``device``, moved as stored values first."""
        return self.ready(self.raw(key, view).to(device, non_blocking=True))

    def __getitem__(self, key) -> torch.Tensor:
        x = self.ready(self.raw(key))
        return x[0] if isinstance(key, int) else x

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    @property
    def shape(self) -> tuple[int, ...]:
        """``(N, ...)``: the number of samples and one model input's shape."""
        return (len(self), *self[:1].shape[1:]) if len(self) else (0,)

    def subset(self, index) -> "Inputs":
        """Samples ``index`` of this view (a view again)."""
        return Inputs(self.source, self.rows(index), self.prepare)

    def with_prepare(self, prepare: Callable | None) -> "Inputs":
        return Inputs(self.source, self.index, prepare)

    def fingerprint(self) -> str:
        """The source's fingerprint, the rows and the preparation: what the models are shown."""
        if self._fp is None:
            rows = fingerprint([self.index]) if self.index is not None else "all"
            how = self.prepare.to_dict() if hasattr(self.prepare, "to_dict") else repr(self.prepare)
            self._fp = fingerprint_text(self.source.fingerprint(), rows, how)
        return self._fp

    @property
    def random(self) -> bool:
        return self.source.random

    def in_memory_bytes(self) -> int | None:
        """Bytes of the stored inputs of this view if the source holds them in memory, else None."""
        if not self.source.in_memory:
            return None
        x = self.source.x
        return len(self) * (x[:1].numel() * x.element_size())

    def to(self, device) -> "Inputs":
        """This view's stored values copied onto ``device`` (a source in memory only)."""
        from kdistill.data.arrays import ArraySource

        src = self.source
        x = src.x if self.index is None else src.x[self.index]
        y = src.y if self.index is None else src.y[self.index]
        moved = ArraySource(x.to(device), y, src.num_classes, src.divided_by, src.scale, src.name)
        return Inputs(moved, None, self.prepare, fp=self.fingerprint())  # the same samples, the same outputs


def as_inputs(x) -> Inputs:
    """``x`` as ``Inputs``: a tensor becomes a view of all of it, held in memory."""
    if isinstance(x, Inputs):
        return x
    from kdistill.data.arrays import ArraySource

    return Inputs(ArraySource(x, torch.zeros(len(x), dtype=torch.long), num_classes=1, scale=1.0))


def fingerprint_of(x) -> str:
    """The fingerprint of inputs: an ``Inputs`` view's own, or a content hash of a tensor."""
    return x.fingerprint() if isinstance(x, Inputs) else fingerprint([x])


def take(x, key, device) -> torch.Tensor:
    """Samples ``key`` of ``x`` (a tensor or ``Inputs``) as model inputs on ``device``."""
    if isinstance(x, Inputs):
        return x.batch(key, device)
    return x[key].to(device)


def pick(x, index):
    """Samples ``index`` of ``x``: a view of ``Inputs``, a copy of a tensor."""
    return x.subset(index) if isinstance(x, Inputs) else x[index]


class Samples:
    """Samples ``index`` of ``source`` with labels ``y`` (default: the source's; a split may
    withhold them as -1). ``x``: their ``Inputs``."""

    def __init__(self, source: Source, index: torch.Tensor | None = None, y: torch.Tensor | None = None,
                 prepare: Callable | None = None):
        self.x = Inputs(source, index, prepare)
        if y is None:
            y = source.y if index is None else source.y[index]
        self.y = y

    @property
    def source(self) -> Source:
        return self.x.source

    @property
    def index(self) -> torch.Tensor:
        return self.x.index if self.x.index is not None else torch.arange(len(self.x))

    @property
    def num_classes(self) -> int:
        return self.source.num_classes

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: torch.Tensor) -> "Samples":
        return Samples(self.source, self.x.rows(index), self.y[index], self.x.prepare)

    def prepared(self, prepare: Callable | None) -> "Samples":
        """The same samples, made ready by ``prepare``."""
        return Samples(self.source, self.x.index, self.y, prepare)
