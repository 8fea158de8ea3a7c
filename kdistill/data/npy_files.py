"""The ``npy`` source: inputs in an ``(N, ...)`` ``.npy`` file, memory-mapped, read row by row.

The recipe's ``data.path`` is the training inputs; ``data.files.labels`` a ``.npy`` of their
integer labels (-1: unlabelled; default: every sample unlabelled). The test set is
``data.files.test_path`` (with ``data.files.test_labels``) when given, else ``data.files.test``
labelled samples held out of the training file.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from kdistill.data.arrays import NpySource, read_labels
from kdistill.data.files import FileData, FilesSpec
from kdistill.data.source import Source, hold_out
from kdistill.errors import KDistillError
from kdistill.paths import user_path
from kdistill.recipe.sources import register_source


def load_npy_source(path: str, spec) -> tuple[Source, Source]:
    """(train, test) sources of the ``npy`` source; ``spec``: the recipe's ``data`` section."""
    files = spec.files
    train = _open(path, files.labels, "data.path", "data.files.labels")
    if files.test_path is None:
        if files.test_labels is not None:
            raise KDistillError("data.files.test_labels: given without data.files.test_path; give the test "
                                "inputs as data.files.test_path, or drop test_labels.")
        return hold_out(train, files.test, spec.split_seed or 0, "data.files.test")
    if files.labels is not None and files.test_labels is None:
        raise KDistillError("data.files.test_labels: the training inputs have labels (data.files.labels) but the "
                            "test inputs (data.files.test_path) none; give the test labels' .npy file.")
    test = _open(files.test_path, files.test_labels, "data.files.test_path", "data.files.test_labels")
    if train.array.shape[1:] != test.array.shape[1:]:
        raise KDistillError(f"data.files.test_path: its samples are {tuple(test.array.shape[1:])} but the "
                            f"training samples {tuple(train.array.shape[1:])}; give arrays of one sample shape.")
    if train.array.dtype != test.array.dtype and np.uint8 in (train.array.dtype, test.array.dtype):
        raise KDistillError(f"data.files.test_path: its inputs are {test.array.dtype} but the training inputs "
                            f"{train.array.dtype}; store both as bytes (uint8) or both as numbers.")
    train.num_classes = test.num_classes = max(train.num_classes, test.num_classes)
    return train, test


def _open(path: str, labels: str | None, what: str, labels_what: str) -> NpySource:
    """One ``.npy`` file of inputs as a source, its labels read (if given) and checked."""
    file = user_path(path, what)
    if not file.is_file():
        why = "is a folder" if file.is_dir() else "does not exist"
        raise KDistillError(f"{what}: {file} {why}; give an (N, ...) .npy file written by numpy.save.")
    y = read_labels(user_path(labels, labels_what), labels_what) if labels is not None else None
    return NpySource(file, y, name=what)


class NpyFiles(FilesSpec):
    labels: str | None = Field(None, description=(
        "a .npy file of integer labels (-1: unlabelled); default: all unlabelled"))
    test_labels: str | None = Field(None, description="the test set's labels (with test_path)")


class NpyData(FileData):
    """``npy``: an (N, ...) .npy array, memory-mapped."""

    files: NpyFiles = Field(default_factory=NpyFiles, description="data.files: the test set of a source read from files")
    says_scaling = True


def load_npy_data(spec: NpyData, recipe=None) -> tuple[Source, Source]:
    return load_npy_source(spec.path, spec)


register_source("npy", NpyData, tasks=("classify", "embed"), loader=load_npy_data)
