"""Data sources and splits: recipe -> (labelled, transfer, val, test).

Every source is a ``Source`` (``data/source.py``): map-style, indexed, decoded on demand. The
built-in ones are named in ``SOURCES``; a user passes any ``Source``, ``(x, y)`` arrays, or a
``torch.utils.data.Dataset`` of ``(input, label)`` items from Python.
"""

from __future__ import annotations

import importlib

from kdistill.data.arrays import ArraySource, DatasetSource, NpySource
from kdistill.data.preprocess import Preprocess, read_preprocess
from kdistill.data.samples import Inputs, Samples
from kdistill.data.source import Source
from kdistill.data.splits import UNLABELLED, Splits, split
from kdistill.errors import KDistillError, shown

__all__ = ["ArraySource", "DatasetSource", "Inputs", "NpySource", "Preprocess", "Samples", "Source", "Splits",
           "UNLABELLED", "SOURCES", "load_source", "as_source", "normalize", "read_preprocess", "split"]

# source name -> "module:function" taking (path, data spec) and returning (train, test) sources
SOURCES = {
    "fashion_mnist": "kdistill.data.idx:load_idx_source",
    "digits": "kdistill.data.sklearn_sets:load_digits_source",
    "npy": "kdistill.data.npy_files:load_npy_source",
    "image_folder": "kdistill.data.image_folder:load_image_folder_source",
    "hf_dataset": "kdistill.data.hf_dataset:load_hf_dataset_source",
    "lm_text": "kdistill.data.lm_text:load_lm_text_source",
    "lm_pairs": "kdistill.data.lm_text:load_lm_pairs_source",
}


def load_source(source: str, path: str | None = None, spec=None, **options) -> tuple[Source, Source]:
    """(train, test) for a named source; ``spec``: the recipe's ``data`` section (its options);
    ``options``: what that source's loader takes besides (the language-model sources' ``seed``)."""
    if source not in SOURCES:
        raise KDistillError(
            f"data.source: {shown(source)} needs the data passed from Python: run(recipe, data=(train, test))."
        )
    module, name = SOURCES[source].split(":")
    return getattr(importlib.import_module(module), name)(path, spec, **options)


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
