"""Data sources and splits: recipe -> (labelled, transfer, val, test).

Every source is a ``Source`` (``data/source.py``): map-style, indexed, decoded on demand. The
sources a recipe names declare themselves, each in its module with one ``register_source`` line
(``kdistill/recipe/sources.py``), imported here so that they are registered before any recipe is
validated; a user passes any ``Source``, ``(x, y)`` arrays, or a ``torch.utils.data.Dataset`` of
``(input, label)`` items from Python.
"""

from __future__ import annotations

from kdistill.data.arrays import ArraySource, DatasetSource, NpySource
from kdistill.data.preprocess import Preprocess, read_preprocess
from kdistill.data.samples import Inputs, Samples
from kdistill.data.source import Source
from kdistill.data.splits import UNLABELLED, Splits, split
from kdistill.errors import KDistillError

# the recipe's sources, registered in this order (the order messages list them in)
from kdistill.data import idx, sklearn_sets, custom, text_sources  # noqa: F401, E402, I001
from kdistill.data import image_folder, hf_dataset, npy_files, lm_text  # noqa: F401, E402, I001

__all__ = ["ArraySource", "DatasetSource", "Inputs", "NpySource", "Preprocess", "Samples", "Source", "Splits",
           "UNLABELLED", "as_source", "normalize", "read_preprocess", "split"]


def as_source(obj, what: str) -> Source:
    """Turn a user's data into a Source: a Source as it is, an ``(x, y)`` pair of tensors /
    numpy arrays (held in memory), or a map-style dataset of ``(input, label)`` items (read
    item by item when fetched, never copied)."""
    if isinstance(obj, Source):
        return obj
    if isinstance(obj, (tuple, list)) and len(obj) == 2 and hasattr(obj[0], "shape"):
        return ArraySource(obj[0], obj[1], name=f"data ({what} set)")
    if hasattr(obj, "__getitem__") and hasattr(obj, "__len__"):
        return DatasetSource(obj, name=f"data ({what} set)")
    raise KDistillError(
        f"data: cannot use {type(obj).__name__} as the {what} set; pass (x, y) arrays, "
        "a kdistill.data.Source or a dataset of (input, label) items."
    )


def normalize(train: ArraySource, *others: ArraySource) -> tuple[list[float], list[float]]:
    """Standardise every in-memory source in place with the per-channel mean and std of ``train``.

    Returns (mean, std), one value per channel (axis 1).
    """
    preprocess = Preprocess.fit(train.x.float() / train.scale)
    for source in (train, *others):
        source.x = preprocess.standardize(source.x.float() / source.scale)
        source.scale, source._fp = 1.0, None
    return list(preprocess.mean), list(preprocess.std)
