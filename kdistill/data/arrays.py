"""Data sources held in memory (a user's tensors or numpy arrays) or memory-mapped from disk
(``.npy`` arrays), and a user's own ``torch.utils.data.Dataset`` used as it is."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kdistill.data.fingerprint import fingerprint, fingerprint_text
from kdistill.data.labels import label_ids
from kdistill.data.source import Source, file_listing_fingerprint, stack_items, stored_scale
from kdistill.errors import KDistillError

PIXELS = (torch.uint8, torch.int8, torch.bool)  # stored as they are, made float32 on the batch


@dataclass(eq=False)
class ArraySource(Source):
    """Inputs and labels in memory.

    Args:
        x: inputs, ``(N, ...)``; images as ``(N, C, H, W)`` (uint8 stays uint8 until a batch is
            made ready), token ids as int64 ``(N, 2, L)`` (ids and attention mask, for the HF encoders).
        y: integer class labels ``(N,)``; ``-1`` marks an unlabelled sample.
        num_classes: number of classes (default: ``max(y) + 1``).
        divided_by: the fixed division already applied to the raw inputs (255 for inputs given
            in [0, 1] that were bytes; 1: the inputs as they came).
        scale: the division the stored values take before statistics are fitted; default
            ``source.stored_scale``'s rule, the npy source's: 255 for uint8 (pixels), else 1.
    """

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int = 0
    divided_by: float = 1.0
    scale: float | None = None
    name: str = "data"

    def __post_init__(self):
        self.x = torch.as_tensor(np.asarray(self.x) if not torch.is_tensor(self.x) else self.x)
        self.scale = stored_scale(self.x.dtype) if self.scale is None else float(self.scale)
        if self.x.is_floating_point() and self.x.dtype != torch.float32:
            self.x = self.x.float()
        if len(self.x) != len(self.y):
            raise KDistillError(
                f"data: {len(self.x)} inputs but {len(self.y)} labels; give one label per input."
            )
        self._finish()
        self._fp = None

    def fetch(self, index: torch.Tensor, view=None) -> torch.Tensor:
        return self.x[index.to(self.x.device)]

    def fingerprint(self) -> str:
        if self._fp is None:
            self._fp = fingerprint([self.x, torch.tensor([self.divided_by, self.scale])])
        return self._fp

    @property
    def in_memory(self) -> bool:
        return True

    @property
    def tokens(self) -> bool:
        return not self.x.is_floating_point() and self.x.dtype not in PIXELS

    def subset(self, index: torch.Tensor) -> "ArraySource":
        """A copy of samples ``index`` (splits are views instead: ``data.samples.Samples``)."""
        return ArraySource(self.x[index], self.y[index], self.num_classes, self.divided_by, self.scale, self.name)


class NpySource(Source):
    """Inputs in a ``.npy`` file opened with ``mmap_mode="r"``: only the fetched rows are read.

    Args:
        path: the inputs ``(N, ...)`` (uint8 images are kept as bytes until the batch).
        labels: a ``.npy`` file of ``(N,)`` integer labels (-1: unlabelled), an array, or None
            (every sample unlabelled).
        scale: the division to units (default ``source.stored_scale``: 255 for uint8 inputs, else 1).
    """

    random = False

    def __init__(self, path, labels=None, num_classes: int = 0, scale: float | None = None, name: str = "npy"):
        self.path = Path(path)
        self.name = name
        self.array = self._open()
        if isinstance(labels, (str, Path)):
            labels = read_labels(labels, f"{name} labels")
        self.y = np.full(len(self.array), -1, dtype=np.int64) if labels is None else np.asarray(labels)
        if len(self.y) != len(self.array):
            raise KDistillError(f"{name}: {self.path} holds {len(self.array)} inputs but the labels "
                                f"{len(self.y)}; give one label per input.")
        self.num_classes = num_classes
        self._finish()
        self.scale = float(scale) if scale is not None else stored_scale(self.array.dtype)

    def _open(self) -> np.ndarray:
        """The file's array, memory-mapped (nothing is read until rows are fetched)."""
        try:
            array = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise KDistillError(f"{self.name}: cannot open {self.path} as a .npy array "
                                f"({' '.join(str(err).split())[:120]}); write it with numpy.save.") from None
        if not isinstance(array, np.ndarray):  # an .npz archive of several arrays
            array.close()
            raise KDistillError(f"{self.name}: {self.path} is an .npz archive, not one array; save the inputs "
                                "with numpy.save.")
        if array.dtype.kind not in "biuf":
            raise KDistillError(f"{self.name}: {self.path} holds {array.dtype} values; give numbers (uint8 "
                                "pixels, floats, or integer token ids).")
        if array.ndim == 0:
            raise KDistillError(f"{self.name}: {self.path} holds a single value, not (N, ...) inputs; "
                                "save one row per sample.")
        return array

    def __getstate__(self):
        # DataLoader workers started by spawn / forkserver get the path, not the mapped bytes
        # (pickling a memmap copies the whole array)
        state = self.__dict__.copy()
        state["array"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.array = self._open()

    def fetch(self, index: torch.Tensor, view=None) -> torch.Tensor:
        rows = index.cpu().numpy()
        order = np.argsort(rows, kind="stable")  # read the file forwards
        native = self.array.dtype.newbyteorder("=")  # torch takes native byte order only
        out = np.empty((len(rows), *self.array.shape[1:]), dtype=native)
        out[order] = self.array[rows[order]]
        x = torch.from_numpy(out)
        return x.float() if x.is_floating_point() and x.dtype != torch.float32 else x

    def fingerprint(self) -> str:
        return file_listing_fingerprint([self.path], ("npy", self.array.shape, str(self.array.dtype)))

    @property
    def tokens(self) -> bool:
        return self.array.dtype.kind in "iu" and self.array.dtype != np.uint8 and self.array.dtype != np.int8


def read_labels(path: str | Path, what: str) -> np.ndarray:
    """``(N,)`` int64 labels from a ``.npy`` file of integers (-1: unlabelled), checked."""
    file = Path(path)
    if not file.is_file():
        raise KDistillError(f"{what}: {file} does not exist; give a .npy file of integer labels (-1: unlabelled).")
    try:
        y = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise KDistillError(f"{what}: cannot read {file} as a .npy array ({' '.join(str(err).split())[:120]}); "
                            "write the labels with numpy.save.") from None
    if not isinstance(y, np.ndarray):  # an .npz archive
        y.close()
        raise KDistillError(f"{what}: {file} is an .npz archive, not one array; save the labels with numpy.save.")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise KDistillError(f"{what}: {file} holds an array of shape {tuple(y.shape)}; labels are one "
                            "integer per sample, shape (N,).")
    if y.dtype.kind not in "biuf":
        raise KDistillError(f"{what}: {file} holds {y.dtype} values; labels are integers (classes 0..K-1, "
                            "-1 for an unlabelled sample).")
    return label_ids(y, f"{what}: {file}")[0]


class DatasetSource(Source):
    """A user's map-style ``torch.utils.data.Dataset`` of ``(input, label)`` items, used as it is:
    items are read when fetched, never copied into memory.

    The labels are read once: from the dataset's ``targets`` or ``labels`` attribute when it has
    one (torchvision's datasets do), else item by item. ``fingerprint`` is the dataset's own
    ``fingerprint`` attribute (a string) when it has one, else a hash of its length and of 16
    items spread over it: give one to key caches by content you know has changed.
    """

    def __init__(self, dataset, name: str = "data", scale: float | None = None):
        self.dataset, self.name = dataset, name
        labels = getattr(dataset, "targets", None)
        if labels is None:
            labels = getattr(dataset, "labels", None)
        if labels is None:
            labels = [_scalar(dataset[i][1]) for i in range(len(dataset))]
        self.y = labels  # checked and made int64 by _finish
        if len(self.y) != len(dataset):
            raise KDistillError(f"{name}: the dataset has {len(dataset)} items but {len(self.y)} labels; "
                                "its targets must give one label per item.")
        self._finish()
        first = self._item(0) if len(dataset) else torch.zeros(0)
        self._dtype = first.dtype
        self.scale = float(scale) if scale is not None else stored_scale(first.dtype)
        self._fp = None

    def _item(self, i: int) -> torch.Tensor:
        x = self.dataset[int(i)][0]
        if hasattr(x, "mode") and hasattr(x, "size") and not hasattr(x, "shape"):  # a PIL image
            from kdistill.data.images import pil_to_tensor

            return pil_to_tensor(x)
        x = torch.as_tensor(np.asarray(x)) if not torch.is_tensor(x) else x
        return x.float() if x.is_floating_point() and x.dtype != torch.float32 else x

    def fetch(self, index: torch.Tensor, view=None) -> torch.Tensor:
        return stack_items([self._item(i) for i in index.tolist()], self.name)

    def fingerprint(self) -> str:
        own = getattr(self.dataset, "fingerprint", None)
        if isinstance(own, str):
            return fingerprint_text("dataset", type(self.dataset).__qualname__, own)
        if self._fp is None:
            n = len(self)
            picks = torch.linspace(0, max(0, n - 1), min(n, 16)).long().unique()
            self._fp = fingerprint_text("dataset", type(self.dataset).__qualname__, n,
                                        fingerprint([self.fetch(picks), self.y]))
        return self._fp

    @property
    def tokens(self) -> bool:
        return not self._dtype.is_floating_point and self._dtype not in PIXELS


def _scalar(label):
    """One item's label as a Python value (a 0-d tensor or numpy number gives its number)."""
    if isinstance(label, np.generic) or (torch.is_tensor(label) and label.numel() == 1):
        return label.item()
    return label
