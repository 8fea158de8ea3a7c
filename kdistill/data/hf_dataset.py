"""The ``hf_dataset`` source: a Hugging Face ``datasets`` dataset on disk, read batch by batch.

``data.path`` is a folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``,
or a file or folder of ``.parquet``, ``.arrow``, ``.json`` / ``.jsonl`` or ``.csv`` files (the
non-Arrow ones are converted once into ``datasets``' own cache, never into the data folder; no
file is downloaded). The data stays memory-mapped Arrow: a batch is one Arrow ``take`` of its
rows, and only its images are decoded.

Columns (``data.files``): ``image_column`` holds the inputs -- images (the ``datasets.Image``
feature, ``{bytes, path}`` structs, encoded bytes, or file paths, relative to the data's folder),
decoded as ``data.images`` asks, or arrays of numbers (lists, ``Array2D``/``Array3D``), taken as
they are (uint8 stays uint8; floats become float32; an ``(H, W)`` array gets a channel axis).
``label_column`` holds integer labels (-1 or missing: unlabelled), a ``ClassLabel`` (its names
become the classes) or class names; null: every sample unlabelled.

The test set is the ``test_split`` of a saved ``DatasetDict`` (or the files named after it in a
folder of files), else ``data.files.test_path`` read the same way, else ``data.files.test``
labelled samples held out of the training data.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from kdistill.data.files import FilesSpec
from kdistill.data.image_files import ImageFilesData, load_image_files
from kdistill.data.source import (
    Source,
    file_listing_fingerprint,
    hold_out,
    sample_generator,
)
from kdistill.data.labels import label_ids, names_shown
from kdistill.errors import KDistillError, shown
from kdistill.paths import user_path
from kdistill.recipe.sources import register_source

EXTENSIONS = {".parquet": "parquet", ".arrow": "arrow", ".json": "json", ".jsonl": "json", ".csv": "csv"}


class HFDatasetSource(Source):
    """One split of a ``datasets.Dataset`` as a source.

    Args:
        dataset: the split (memory-mapped; only its input column is kept).
        files: the files the split was read from (their names, sizes and mtimes enter the fingerprint).
        base: the folder that relative image paths in the input column are relative to (or None).
        spec: the recipe's ``data`` section (its ``files`` columns and ``images`` decoding).
        classes: the class names to map labels onto (the training split's, for a test split).
        name: how the source is named in messages.
    """

    def __init__(self, dataset, files, base: Path | None, spec, classes: list[str] | None = None,
                 name: str = "hf_dataset"):
        self.name, self.base = name, base
        self.column = spec.files.image_column
        self.images = spec.images
        self.files = [Path(f) for f in files]
        _need_column(dataset, self.column, "data.files.image_column", name)
        self.kind, self.dtype = _input_kind(dataset, self.column, name)
        self.y, self.classes = _read_labels(dataset, spec.files.label_column, classes, name)
        self.num_classes = len(self.classes) if self.classes is not None else 0
        self._finish()
        self.fp_parts = (getattr(dataset, "_fingerprint", None), getattr(dataset, "split", None),
                         self.column, spec.files.label_column, len(dataset),
                         self.images.model_dump_json() if self.kind != "array" else self.dtype)
        # only the input column, served as Arrow: a batch is one take, nothing decoded by datasets
        self.data = dataset.select_columns([self.column]).with_format("arrow")
        if self.kind == "array":
            self.scale, self.random = (255.0 if self.dtype == np.uint8 else 1.0), False
        else:
            from kdistill.data.images import random_view

            self.scale, self.random = 255.0, random_view(self.images)

    def fetch(self, index: torch.Tensor, view: tuple[int, int] | None = None) -> torch.Tensor:
        rows = index.cpu().tolist()
        if not rows:
            return torch.zeros(0, dtype=torch.uint8)
        column = self.data[rows].column(0)
        if self.kind == "array":
            return _array_batch(column, self.name, self.column)
        from kdistill.data.images import decode_batch

        items = column.to_pylist()  # this batch's bytes / paths only
        rand = view is not None and self.random
        return decode_batch([self._image(item, row) for row, item in zip(rows, items)], self.images,
                            [sample_generator(view, row) if rand else None for row in rows],
                            [self._what(item, row) for row, item in zip(rows, items)])

    def _image(self, item, row: int):
        """What ``decode_batch`` reads for one cell: encoded bytes, or a file path."""
        if isinstance(item, dict):
            item = item.get("bytes") or item.get("path")
        if item is None:
            raise KDistillError(f"{self.name}: row {row} of column {shown(self.column)} holds no image; "
                                "fill it, or drop the row from the dataset.")
        if isinstance(item, str):
            path = Path(item)
            if not path.is_absolute() and self.base is not None and not path.exists():
                path = self.base / path
            return path
        return item

    def _what(self, item, row: int) -> str:
        """How an image is named in an error: its path, else its row."""
        path = item.get("path") if isinstance(item, dict) else item if isinstance(item, str) else None
        return f"{path} (row {row} of {self.name})" if path else f"at row {row} of {self.name}"

    def fingerprint(self) -> str:
        return file_listing_fingerprint(self.files, ("hf_dataset", *self.fp_parts))

    @property
    def tokens(self) -> bool:
        return self.kind == "array" and self.dtype.kind in "iu" and self.dtype not in (np.uint8, np.int8)


def load_hf_dataset_source(path: str, spec) -> tuple[Source, Source]:
    """(train, test) sources of the ``hf_dataset`` source; ``spec``: the recipe's ``data`` section."""
    files = spec.files
    with offline_and_quiet():
        train_part, test_part = open_dataset(path, files.train_split, files.test_split, "data.path")
        train = HFDatasetSource(*train_part, spec, classes=spec.classes, name="hf_dataset")
        if test_part is None and files.test_path is not None:
            test_part, _ = open_dataset(files.test_path, files.test_split, None, "data.files.test_path")
        elif test_part is not None and files.test_path is not None:
            raise KDistillError(f"data.files.test_path: {path} has a {shown(files.test_split)} split already; drop "
                                "test_path, or set data.files.test_split to a split that is not there.")
    if test_part is None:
        return hold_out(train, files.test, spec.split_seed or 0, "data.files.test")
    test = HFDatasetSource(*test_part, spec, classes=train.classes, name="hf_dataset (test set)")
    if train.kind != test.kind or (train.kind == "array" and train.dtype != test.dtype):
        raise KDistillError(f"data: the test set's {shown(train.column)} column holds "
                            f"{_describe(test)} but the training set's {_describe(train)}; give both the same way.")
    train.num_classes = test.num_classes = max(train.num_classes, test.num_classes)
    return train, test


def _describe(source: HFDatasetSource) -> str:
    return f"{source.dtype} arrays" if source.kind == "array" else "images"


# -- opening ---------------------------------------------------------------------------------

Part = tuple  # (dataset, files, base folder)


def open_dataset(path: str, split: str, test_split: str | None, what: str) -> tuple[Part, Part | None]:
    """The dataset at ``path`` as (``split``'s part, ``test_split``'s part or None); a part is
    ``(datasets.Dataset, files it was read from, base folder of relative image paths)``.

    ``path``: a ``save_to_disk`` folder (of a Dataset, or a DatasetDict holding ``split``), or a
    data file, or a folder of data files (files named after a split, or in a folder named after
    it, belong to that split; the others to ``split`` when no file is named after it)."""
    root = user_path(path, what)
    if not root.exists():
        raise KDistillError(f"{what}: {root} does not exist; give a save_to_disk folder, or parquet / arrow / "
                            "json / csv files.")
    if root.is_dir() and (root / "dataset_dict.json").is_file():
        return _saved_dict(root, split, test_split, what)
    if root.is_dir() and (root / "state.json").is_file():
        ds = _load_from_disk(root, what)
        return (ds, _saved_files(root, ds), root), None
    data_files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS
                                                      and p.is_file() and not _hidden(p, root))
    if not data_files:
        raise KDistillError(f"{what}: {root} is neither a save_to_disk folder nor a .parquet, .arrow, .json, "
                            ".jsonl or .csv file (or a folder of them); give one of those.")
    kinds = {EXTENSIONS.get(p.suffix.lower()) for p in data_files}
    if None in kinds or len(kinds) > 1:
        raise KDistillError(f"{what}: {root} holds {' and '.join(sorted(map(str, kinds)))} files; give files of one "
                            "kind (.parquet, .arrow, .json/.jsonl or .csv).")
    kind = kinds.pop()
    base = root if root.is_dir() else root.parent
    if root.is_file():
        return (_read_files(kind, data_files, what), data_files, base), None
    train_files, test_files = _split_files(data_files, root, split, test_split)
    train = (_read_files(kind, train_files, what), train_files, base)
    test = (_read_files(kind, test_files, what), test_files, base) if test_files else None
    return train, test


def _hidden(p: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in p.relative_to(root).parts)


def _named(p: Path, root: Path, split: str) -> bool:
    """Whether the data file ``p`` belongs to split ``split`` by its name or a folder's."""
    rel = p.relative_to(root)
    stem = rel.name.split(".")[0].lower()
    split = split.lower()
    by_name = stem == split or (stem.startswith(split) and not stem[len(split)].isalnum())
    return by_name or any(part.lower() == split for part in rel.parts[:-1])


def _split_files(files: list[Path], root: Path, split: str, test_split: str | None):
    """(training files, test files) of a folder of data files."""
    test = [p for p in files if test_split is not None and _named(p, root, test_split)]
    named = [p for p in files if _named(p, root, split) and p not in test]
    train = named or [p for p in files if p not in test]
    if not train:
        raise KDistillError(f"data.path: every data file in {root} is named after the test split "
                            f"{shown(test_split)}; add the training files, named after {shown(split)}.")
    return train, test


def _saved_dict(root: Path, split: str, test_split: str | None, what: str):
    dd = _load_from_disk(root, what)
    names = list(dd.keys())
    if split not in dd:
        if test_split is not None or len(names) != 1:
            raise KDistillError(f"{what}: {root} holds the splits {names} but no {shown(split)}; set "
                                f"data.files.{'train' if test_split is not None else 'test'}_split to one of them.")
        split = names[0]  # a test_path holding one split: that one
    train = (dd[split], _saved_files(root, dd[split]), root)
    test = (dd[test_split], _saved_files(root, dd[test_split]), root) if test_split in dd else None
    return train, test


def _load_from_disk(root: Path, what: str):
    import datasets

    try:
        return datasets.load_from_disk(str(root))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise KDistillError(f"{what}: cannot load {root} as a saved dataset ({_short(err)}); write it with "
                            "save_to_disk again.") from None


def _saved_files(root: Path, ds) -> list[Path]:
    """The Arrow files of a split loaded from ``root``, and the saved state beside them."""
    files = [Path(f["filename"]) for f in ds.cache_files]
    state = [p for p in {f.parent / "state.json" for f in files} if p.is_file()]
    return sorted(files) + sorted(state)


def _read_files(kind: str, files: list[Path], what: str):
    """A Dataset from data files of one kind: Arrow streams memory-mapped where they lie, the others
    (and Arrow IPC files) converted once into ``datasets``' cache."""
    import datasets
    import pyarrow as pa

    names = [str(f) for f in files]
    try:
        if kind == "arrow":
            try:
                parts = [datasets.Dataset.from_file(n) for n in names]
                return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
            except pa.ArrowInvalid:  # the IPC file format, not the stream datasets writes
                return datasets.load_dataset("arrow", data_files=names, split="train")
        reader = {"parquet": datasets.Dataset.from_parquet, "json": datasets.Dataset.from_json,
                  "csv": datasets.Dataset.from_csv}[kind]
        return reader(names)
    except (OSError, ValueError, pa.ArrowException, datasets.exceptions.DatasetsError) as err:
        which = names[0] if len(names) == 1 else f"{len(names)} {kind} files under {files[0].parent}"
        raise KDistillError(f"{what}: cannot read {which} as {kind} ({_short(err)}); check the files.") from None


@contextlib.contextmanager
def offline_and_quiet():
    """No download, no progress bars, while ``datasets`` opens local files."""
    import datasets

    was_offline, bars_on = datasets.config.HF_HUB_OFFLINE, datasets.is_progress_bar_enabled()
    datasets.config.HF_HUB_OFFLINE = True
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE = was_offline
        if bars_on:
            datasets.enable_progress_bars()


def _short(err: BaseException) -> str:
    return " ".join(str(err).split())[:160] or type(err).__name__


# -- columns ---------------------------------------------------------------------------------

def _need_column(dataset, column: str, field: str, name: str) -> None:
    if column not in dataset.column_names:
        raise KDistillError(f"{field}: {name} has no column {shown(column)}; its columns are "
                            f"{dataset.column_names}; set {field} to one of them.")


def _input_kind(dataset, column: str, name: str) -> tuple[str, np.dtype | None]:
    """How the input column is read: ("image", None) for images (an ``Image`` feature, a
    ``{bytes, path}`` struct, encoded bytes or file paths), ("array", dtype) for arrays of numbers."""
    import datasets
    import pyarrow as pa

    if isinstance(dataset.features[column], datasets.Image):
        return "image", None
    kind = dataset.data.schema.field(column).type
    if pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0:
        return "image", None
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind) \
            or pa.types.is_large_binary(kind):
        return "image", None
    depth, value = 0, kind
    while True:
        if isinstance(value, pa.ExtensionType):
            value = value.storage_type
        elif pa.types.is_list(value) or pa.types.is_large_list(value) or pa.types.is_fixed_size_list(value):
            value, depth = value.value_type, depth + 1
        else:
            break
    if depth == 0 or not (pa.types.is_integer(value) or pa.types.is_floating(value) or pa.types.is_boolean(value)):
        raise KDistillError(f"data.files.image_column: {name}'s column {shown(column)} holds {kind}; give images, "
                            "or arrays of numbers per sample.")
    dtype = np.dtype(value.to_pandas_dtype())
    return "array", np.dtype(np.float32) if dtype.kind == "f" else dtype


def _array_batch(column, name: str, field: str) -> torch.Tensor:
    """An Arrow column of equal-shaped nested lists (or ``Array2D``/``3D``) -> ``(B, ...)`` tensor;
    an ``(H, W)`` sample gains a channel axis."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    shape = [len(arr)]
    while True:
        if isinstance(arr, pa.ExtensionArray):
            arr = arr.storage
        elif pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type) or pa.types.is_fixed_size_list(arr.type):
            if arr.null_count:
                raise KDistillError(f"{name}: a sample of column {shown(field)} is missing (null); fill or drop it.")
            lengths = pc.list_value_length(arr)
            bounds = pc.min_max(lengths)
            low, high = bounds["min"].as_py(), bounds["max"].as_py()
            if low != high:
                raise KDistillError(f"{name}: the samples of column {shown(field)} have different shapes; give "
                                    "arrays of one shape.")
            shape.append(low)
            arr = arr.flatten()
        else:
            break
    if arr.null_count:
        raise KDistillError(f"{name}: column {shown(field)} holds missing (null) numbers; fill them first.")
    values = arr.to_numpy(zero_copy_only=False).reshape(shape)
    x = torch.from_numpy(np.array(values, dtype=values.dtype.newbyteorder("=")))  # a writable copy of the batch
    if x.is_floating_point() and x.dtype != torch.float32:
        x = x.float()
    return x[:, None] if x.dim() == 3 else x


def _read_labels(dataset, column: str | None, classes: list[str] | None, name: str):
    """(labels (N,) int64 with -1 for unlabelled, class names or None) of the label column, read
    once through Arrow."""
    import datasets
    import pyarrow as pa
    import pyarrow.compute as pc

    if column is None:
        return np.full(len(dataset), -1, dtype=np.int64), classes
    if column not in dataset.column_names:
        raise KDistillError(f"data.files.label_column: {name} has no column {shown(column)}; its columns are "
                            f"{dataset.column_names}; set data.files.label_column to one of them, or to null "
                            "for unlabelled data.")
    feature = dataset.features[column]
    # the label column alone, as Arrow (the dataset's row order applied)
    values = dataset.select_columns([column]).with_format("arrow")[:].column(0)
    kind, what = values.type, f"data.files.label_column: {name}'s column {shown(column)}"
    if isinstance(feature, datasets.ClassLabel):  # its ids name its own classes: mapped by name
        names = list(feature.names)
        if classes is not None and sorted(names) != sorted(classes):
            raise KDistillError(f"{what} is a ClassLabel of {names_shown(names)}, but the classes are {names_shown(classes)} "
                                "(data.classes, or the training set's); give the same class names.")
        ids, _ = label_ids(pc.fill_null(values, -1).to_numpy(zero_copy_only=False), what, names)
        if classes is None:
            return ids, names
        order = np.array([list(classes).index(n) for n in names] + [-1], dtype=np.int64)
        return order[ids], list(classes)  # -1 indexes the last entry: stays -1
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return label_ids(values.to_pylist(), what, classes)
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
        raise KDistillError(f"{what} holds {kind}; labels are integers (-1: unlabelled), a ClassLabel or class names.")
    y = pc.fill_null(values, -1).to_numpy(zero_copy_only=False) if len(values) else np.zeros(0, dtype=np.int64)
    return label_ids(y, what, classes)


class HfFiles(FilesSpec):
    image_column: str = Field("image", description="images (or arrays)")
    label_column: str | None = Field("label", description="null: unlabelled")
    train_split: str = Field("train", description="a dataset saved as a DatasetDict: the training split's name")
    test_split: str = Field("test", description="a dataset saved as a DatasetDict: the test split's name")


class HfDatasetData(ImageFilesData):
    """``hf_dataset``: a save_to_disk folder or parquet / JSON / CSV / Arrow files."""

    files: HfFiles = Field(default_factory=HfFiles, description="data.files: the test set of a source read from files")


def load_hf_dataset_data(spec: HfDatasetData, recipe=None) -> tuple[Source, Source]:
    return load_image_files(load_hf_dataset_source, spec, recipe)


register_source("hf_dataset", HfDatasetData, tasks=("classify", "embed"), loader=load_hf_dataset_data)
