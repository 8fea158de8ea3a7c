"""Data sources and splits: recipe -> (labelled, transfer, val, test)."""

from __future__ import annotations

import numpy as np
import torch

from kdistill.data.arrays import ArraySource
from kdistill.data.preprocess import Preprocess, read_preprocess
from kdistill.data.splits import UNLABELLED, Splits, split
from kdistill.errors import KDistillError

__all__ = ["ArraySource", "Preprocess", "Splits", "UNLABELLED", "load_source", "as_source", "normalize",
           "read_preprocess", "split"]


def load_source(source: str, path: str | None = None) -> tuple[ArraySource, ArraySource]:
    """(train, test) for a named source."""
    if source == "fashion_mnist":
        from kdistill.data.idx import load_idx_folder

        return load_idx_folder(path)
    if source == "digits":
        from kdistill.data.sklearn_sets import load_digits

        return load_digits()
    raise KDistillError(
        f"data.source: {source!r} needs the data passed from Python: run(recipe, data=(train, test))."
    )


def as_source(obj, what: str) -> ArraySource:
    """Turn a user's data into an ArraySource: an ArraySource, an ``(x, y)`` pair of
    tensors / numpy arrays, or a map-style dataset of ``(x, y)`` items (stacked in memory)."""
    if isinstance(obj, ArraySource):
        return obj
    if isinstance(obj, (tuple, list)) and len(obj) == 2 and hasattr(obj[0], "shape"):
        return ArraySource(obj[0], obj[1])
    if hasattr(obj, "__getitem__") and hasattr(obj, "__len__"):
        items = [obj[i] for i in range(len(obj))]
        x = torch.stack([torch.as_tensor(np.asarray(item[0])) for item in items])
        y = torch.as_tensor([int(item[1]) for item in items])
        return ArraySource(x, y)
    raise KDistillError(
        f"data: cannot use {type(obj).__name__} as the {what} set; pass (x, y) arrays, "
        "an ArraySource or a dataset of (x, y) items."
    )


def normalize(train: ArraySource, *others: ArraySource) -> tuple[list[float], list[float]]:
    """Standardise every source in place with the per-channel mean and std of ``train``.

    Returns (mean, std), one value per channel (axis 1).
    """
    preprocess = Preprocess.fit(train.x)
    for source in (train, *others):
        source.x = preprocess.standardize(source.x)
    return list(preprocess.mean), list(preprocess.std)

