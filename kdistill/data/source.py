"""The one interface every data source offers: map-style, indexed, decoded on demand.

A ``Source`` holds its labels in memory (``y``, ``-1`` for an unlabelled sample) and gives the
stored inputs of any samples by index (``fetch``): pixels stay ``uint8`` until a batch is made
ready for the models (``Inputs``, on the device). Files are read when their samples are fetched,
in the DataLoader workers when there are any, so the data may be far larger than memory.

``fetch(index, view)``: ``view`` is ``(seed, epoch)`` for a training batch, ``None`` for the
plain, deterministic decoding (evaluation, teacher outputs). A source with random decoding
transforms (``random``: a random resized crop, a flip) draws them from a generator seeded by
``(seed, epoch, sample)``, so the same sample in the same epoch is decoded the same way in any
worker, with any number of workers, before and after a resume.
"""

from __future__ import annotations

import hashlib
import os
import sys

import numpy as np
import torch
from torch.utils.data import Dataset

from kdistill.data.fingerprint import fingerprint_text
from kdistill.data.labels import UNLABELLED, check_ids, label_ids


def stored_scale(dtype) -> float:
    """The one rule for the scale of stored inputs, whichever door they came through (arrays
    from Python, a ``.npy`` file, a dataset's items): bytes (``uint8``) are pixels, divided by
    255 to [0, 1]; any other dtype is taken as it is (floats as given, other integers are token
    ids). ``dtype``: a numpy or torch dtype."""
    return 255.0 if str(dtype).rsplit(".", 1)[-1] == "uint8" else 1.0


def sample_generator(view: tuple[int, int], sample: int) -> np.random.Generator:
    """The random draws of one sample's decoding in one epoch: a function of (seed, epoch, sample)."""
    seed, epoch = view
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(sample)])


class Source(Dataset):
    """A data source: ``len`` samples, labels ``y (N,)`` in memory, inputs fetched by index.

    Attributes:
        y: integer labels ``(N,)`` int64; ``-1`` marks an unlabelled sample.
        num_classes: the number of classes.
        classes: the class names (label ``i`` is ``classes[i]``) where the data names them, else None.
        divided_by: a fixed division already applied to the stored values (1: as they came).
        scale: the division the stored values take to reach the units kdistill fits and records
            statistics in (255 for pixels stored as bytes, 1 otherwise).
        random: whether a fetch with a ``view`` applies random decoding transforms.
        name: what the source is, for messages.
    """

    y: torch.Tensor
    num_classes: int = 0
    classes: list[str] | None = None
    divided_by: float = 1.0
    scale: float = 1.0
    random: bool = False
    name: str = "data"

    def __len__(self) -> int:
        return len(self.y)

    def fetch(self, index: torch.Tensor, view: tuple[int, int] | None = None) -> torch.Tensor:
        """The stored inputs of samples ``index (B,)``, stacked ``(B, ...)``, on the CPU."""
        raise NotImplementedError

    def __getitem__(self, i: int):
        """``(input, label)`` of sample ``i``, as a torch ``Dataset``."""
        return self.fetch(torch.tensor([int(i)]))[0], int(self.y[i])

    def __getitems__(self, index: list[int]):
        return list(zip(self.fetch(torch.as_tensor(index, dtype=torch.long)), self.y[index].tolist()))

    def fingerprint(self) -> str:
        """What identifies the stored inputs, cheaply (file names, sizes and modification times,
        not their bytes where they are files): cached teacher outputs are keyed by it."""
        raise NotImplementedError

    @property
    def in_memory(self) -> bool:
        """Whether the inputs are one tensor in memory (statistics and checks then read all of them)."""
        return False

    @property
    def tokens(self) -> bool:
        """Whether the inputs are token ids (integers the models embed), not values to normalise."""
        return False

    @property
    def units(self) -> float:
        """The division from the raw values to the units statistics are fitted in: ``divided_by * scale``."""
        return self.divided_by * self.scale

    def _finish(self) -> None:
        """Labels as int64, checked by the one label rule (``data/labels.py``), and the number of
        classes, for subclasses once ``y`` is set."""
        ids, names = label_ids(self.y, self.name)
        if names is not None and getattr(self, "classes", None) is None:  # labels given as names, sorted
            self.classes = names
        check_ids(ids, self.name, self.num_classes or None)
        self.y = torch.from_numpy(ids).to(self.y.device if torch.is_tensor(self.y) else "cpu")
        if not self.num_classes:
            self.num_classes = int(self.y.max()) + 1 if len(self.y) else 0


def stack_items(items: list, what: str) -> torch.Tensor:
    """Stack per-sample inputs (tensors or arrays of one shape) into one ``(B, ...)`` tensor."""
    from kdistill.errors import KDistillError

    tensors = [torch.as_tensor(np.asarray(item)) if not torch.is_tensor(item) else item for item in items]
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        raise KDistillError(f"{what}: samples of different shapes {sorted(shapes)[:3]} cannot form a batch; "
                            "resize them to one shape (image_folder's resize/crop options do) first.")
    return torch.stack(tensors)


def file_listing_fingerprint(paths, extra=()) -> str:
    """A fingerprint of files from their names, sizes and modification times (no byte is read),
    hashed file by file (nothing per file is kept)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(fingerprint_text(*extra).encode())
    for p in paths:
        st = os.stat(p)
        h.update(f"{os.fspath(p)}\0{st.st_size}\0{st.st_mtime_ns}\0".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def stratified_pick(y: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """Pick ``n`` indices of ``y`` with the classes in proportion (seeded, exact total)."""
    classes, counts = torch.unique(y, return_counts=True)
    quota = (counts.double() * n / len(y)).floor().long()
    remainder = n - int(quota.sum())
    # hand the leftover picks to the classes with the largest fractional parts
    fractions = counts.double() * n / len(y) - quota
    quota[torch.argsort(fractions, descending=True)[:remainder]] += 1
    picked = []
    for c, q in zip(classes, quota):
        members = torch.nonzero(y == c).flatten()
        picked.append(members[torch.randperm(len(members), generator=generator)[:q]])
    return torch.cat(picked).sort().values


class SubsetSource(Source):
    """Rows ``rows`` of another source, as a source (a held-out test part of one file list)."""

    def __init__(self, base: Source, rows: torch.Tensor):
        self.base, self.rows = base, rows.long()
        self.y = base.y[self.rows]
        self.num_classes, self.divided_by, self.scale = base.num_classes, base.divided_by, base.scale
        self.random, self.name = base.random, base.name
        self.classes = getattr(base, "classes", None)

    def fetch(self, index: torch.Tensor, view=None) -> torch.Tensor:
        return self.base.fetch(self.rows[index.cpu()], view)

    def fingerprint(self) -> str:
        from kdistill.data.fingerprint import fingerprint

        return fingerprint_text(self.base.fingerprint(), fingerprint([self.rows]))

    @property
    def tokens(self) -> bool:
        return self.base.tokens


def hold_out(source: Source, amount: float | int, seed: int, what: str) -> tuple[Source, Source]:
    """(train, test) of one source with no test part: ``amount`` (a count, or a fraction of the
    labelled samples) labelled samples drawn as the test set, stratified and seeded."""
    from kdistill.errors import KDistillError

    known = torch.nonzero(source.y != UNLABELLED).flatten()
    n = int(round(amount * len(known))) if isinstance(amount, float) and amount <= 1 else int(amount)
    if n <= 0 or n >= len(known):
        raise KDistillError(f"{what}: holding out {amount} of the {len(known)} labelled samples as the test set "
                            "leaves no test or no training set; set data.files.test, or give data.files.test_path.")
    g = torch.Generator().manual_seed(seed)
    test_rows = known[stratified_pick(source.y[known], n, g)]
    keep = torch.ones(len(source), dtype=torch.bool)
    keep[test_rows] = False
    return SubsetSource(source, torch.nonzero(keep).flatten()), SubsetSource(source, test_rows)


def say(line: str) -> None:
    """An information line about the data, on stderr (stdout is the command's answer: with
    ``--quiet``, the run directory alone)."""
    from kdistill import distributed

    if distributed.is_main():
        print(line, file=sys.stderr, flush=True)
