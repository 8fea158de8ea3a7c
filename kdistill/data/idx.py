"""Fashion-MNIST / MNIST from the standard IDX ``.gz`` files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from kdistill.data.arrays import ArraySource
from kdistill.data.preprocess import stored_arrays
from kdistill.errors import KDistillError
from kdistill.recipe.schema import DataSpec
from kdistill.recipe.sources import register_source

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
DIVIDE_BY = 255.0  # the files hold uint8 pixels 0..255; the loader gives them in [0, 1]
INSTALL_HINT = (
    "install the default with `sudo apt-get install -y dataset-fashion-mnist`, "
    "or set data.path to a folder holding the four IDX .gz files of (Fashion-)MNIST"
)
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (gzipped or not) into a numpy array of its stored shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise KDistillError(f"data: {path} is not an unsigned-byte IDX file.")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / name.removesuffix(".gz")):
        if candidate.exists():
            return candidate
    raise KDistillError(f"data: {folder / name} not found; {INSTALL_HINT}.")


def load_idx_folder(path: str | None = None) -> tuple[ArraySource, ArraySource]:
    """Load the train and test splits of (Fashion-)MNIST.

    Returns:
        (train, test) sources with images ``(N, 1, 28, 28)`` uint8 (``scale`` 255: [0, 1] in
        units), labels ``(N,)``.
    """
    folder = Path(path or DEFAULT_DIR)
    if not folder.is_dir():
        raise KDistillError(f"data: folder {folder} not found; {INSTALL_HINT}.")
    splits = []
    for split in ("train", "test"):
        images_file, labels_file = FILES[split]
        images = read_idx(_find(folder, images_file))
        labels = read_idx(_find(folder, labels_file))
        x = torch.from_numpy(images.copy())[:, None]  # (N, 1, 28, 28) uint8: made float on the batch
        splits.append(ArraySource(x, labels.astype(np.int64), num_classes=int(labels.max()) + 1,
                                  scale=DIVIDE_BY, name="fashion_mnist"))
    return splits[0], splits[1]


FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"]


class IdxData(DataSpec):
    """``fashion_mnist``: an IDX folder at ``data.path`` (MNIST's work the same); none: the
    Fashion-MNIST files kdistill fetches."""

    def class_names(self) -> list[str] | None:
        return list(FASHION_MNIST_CLASSES) if self.path is None else None

    def raw_inputs(self, input_shape: list):
        return stored_arrays("uint8", "pixels 0..255 as stored in the IDX files", input_shape)


def load_idx_data(spec: IdxData, recipe=None) -> tuple[ArraySource, ArraySource]:
    return load_idx_folder(spec.path)


register_source("fashion_mnist", IdxData, tasks=("classify", "embed"), loader=load_idx_data)
