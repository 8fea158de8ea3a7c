"""The ``image_folder`` source: image files in class subfolders, or listed in a CSV / JSONL file.

A folder ``path`` holds one subfolder per class (labels 0..K-1 in the order of
``data.classes``, else in the sorted order of the folders' names; folders named by integers
are class ids, as integer labels are); each class's images are found anywhere inside its
subfolder. A subfolder named ``unlabelled`` (or ``unlabeled``) holds
images without a label (label -1: transfer data only); an empty class folder is refused. A
``.csv`` / ``.jsonl`` list names one file a row (``data.files.path_column``, relative to the
list's folder or absolute) and its label (``data.files.label_column``: a class name or an
integer; missing or empty: unlabelled). Labels follow ``data/labels.py``'s one rule. The test set is the folder's ``train/`` + ``test/`` pair, else
``data.files.test_path`` (a folder or list read the same way), else held out of the data.

Files are decoded when their samples are fetched (``data.images``: mode, resize, crop, and
for training batches a random resized crop and a flip), so the data may exceed memory.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from kdistill.data.files import FilesSpec
from kdistill.data.image_files import ImageFilesData, load_image_files
from kdistill.data.images import EXTENSIONS, decode_batch, random_view
from kdistill.data.preprocess import decode_step
from kdistill.data.labels import UNLABELLED_NAMES, label_ids, names_shown
from kdistill.data.source import Source, file_listing_fingerprint, hold_out, sample_generator
from kdistill.data.rows import jsonl_rows
from kdistill.errors import KDistillError, shown
from kdistill.paths import user_path
from kdistill.recipe.sources import register_source

LISTS = (".csv", ".jsonl")
_INTEGER = re.compile(r"[+-]?\d+")


class ImageFolderSource(Source):
    """Image files with labels, decoded on fetch as ``uint8 (B, C, H, W)``.

    Args:
        paths: the image files, one per sample (absolute, or relative to ``root``).
        y: integer labels ``(N,)``, ``-1`` for unlabelled samples.
        images: the recipe's ``data.images`` (an ``ImageSpec``).
        classes: the class names (label ``i`` is ``classes[i]``), or None for integer labels.
        num_classes: the number of classes (default ``len(classes)``, else ``max(y) + 1``).
        root: the folder relative paths are read from.
    """

    divided_by = 1.0
    scale = 255.0  # pixels stored as bytes: [0, 1] in units

    def __init__(self, paths, y, images, classes: list[str] | None = None, num_classes: int = 0,
                 root: str | os.PathLike = "", name: str = "image_folder"):
        # file names as one array of bytes: cheap to hold and to send to DataLoader workers
        self.files = np.array([os.fsencode(p) for p in paths], dtype=bytes)
        self.root = os.fsdecode(root)
        self.images, self.name = images, name
        self.classes = list(classes) if classes is not None else None
        self.y = np.asarray(y, dtype=np.int64)
        if len(self.y) != len(self.files):
            raise KDistillError(f"{name}: {len(self.files)} files but {len(self.y)} labels; give one label per file.")
        self.num_classes = num_classes or (len(self.classes) if self.classes else 0)
        self._finish()
        self.random = random_view(images)
        self._fp = None

    def path(self, i: int) -> str:
        """The file of sample ``i``."""
        return os.path.join(self.root, os.fsdecode(self.files[i]))

    def fetch(self, index: torch.Tensor, view: tuple[int, int] | None = None) -> torch.Tensor:
        rows = index.cpu().reshape(-1).tolist()
        rand = view is not None and self.random
        return decode_batch([self.path(i) for i in rows], self.images,
                            [sample_generator(view, i) if rand else None for i in rows])

    def fingerprint(self) -> str:
        if self._fp is None:
            paths = (Path(self.path(i)) for i in range(len(self.files)))
            try:
                self._fp = file_listing_fingerprint(
                    paths, ("image_folder", self.images.model_dump(), self.classes))
            except OSError as err:
                raise KDistillError(f"{self.name}: cannot read {err.filename} ({err.strerror}); "
                                    "restore it, or remove it from the data.") from None
        return self._fp


def load_image_folder_source(path, spec=None) -> tuple[Source, Source]:
    """(train, test) image sources for ``data.path`` (a folder of class subfolders, or a
    ``.csv`` / ``.jsonl`` list) and the recipe's ``data`` section ``spec``."""
    if spec is None:
        from kdistill.recipe.schema import DataSpec

        spec = DataSpec(source="image_folder", path=str(path))
    root = _existing(path, "data.path")
    train_dir, test_dir = root / "train", root / "test"
    split_folders = root.is_dir() and train_dir.is_dir() and test_dir.is_dir()
    if split_folders:
        train = read_images(train_dir, spec, "data.path (train/)", classes=spec.classes)
    else:
        train = read_images(root, spec, "data.path", classes=spec.classes)
    test_root, test_what = None, None
    if spec.files.test_path is not None:  # given: it wins over a test/ folder
        test_root, test_what = _existing(spec.files.test_path, "data.files.test_path"), "data.files.test_path"
    elif split_folders:
        test_root, test_what = test_dir, "data.path (test/)"
    if test_root is not None:
        test = read_images(test_root, spec, test_what, classes=train.classes, num_classes=train.num_classes)
        if train.classes is None and test.num_classes > train.num_classes:  # integer labels
            train.num_classes = test.num_classes
        return train, test
    return hold_out(train, spec.files.test, spec.split_seed or 0, "data.files.test (image_folder)")


def read_images(path: Path, spec, what: str, classes: list[str] | None = None,
                num_classes: int = 0) -> ImageFolderSource:
    """One image source: a folder of class subfolders or a CSV / JSONL list at ``path``.

    ``classes``: the class names labels map to: ``data.classes`` or the training set's (None:
    the sorted names the data gives, or integer labels)."""
    if path.is_dir():
        return _from_folder(path, spec, what, classes)
    if path.suffix.lower() not in LISTS:
        raise KDistillError(f"{what}: {path} is neither a folder of class subfolders nor a .csv / .jsonl list "
                            "of image files; give one of those.")
    return _from_list(path, spec, what, classes, num_classes)


def _existing(value, what: str) -> Path:
    path = user_path(value, what).expanduser().absolute()
    if not path.exists():
        raise KDistillError(f"{what}: {path} not found; give a folder of class subfolders or a .csv / .jsonl list.")
    return path


def _visible(name: str) -> bool:
    return not name.startswith(".")  # skip .DS_Store, ._name (macOS), .ipynb_checkpoints


def _images_under(folder: Path) -> list[str]:
    """The image files anywhere under ``folder`` (by extension, any case), relative to it, sorted."""
    found = []
    for top, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if _visible(d)]
        rel = os.path.relpath(top, folder)
        for name in names:
            if _visible(name) and os.path.splitext(name)[1].lower() in EXTENSIONS:
                found.append(name if rel == "." else os.path.join(rel, name))
    return sorted(found)


def _from_folder(folder: Path, spec, what: str, classes: list[str] | None) -> ImageFolderSource:
    """Labels from the class subfolders of ``folder``: their names, mapped through ``classes``
    when given (else sorted), or their numbers when every folder is named by an integer (class
    ids, as integer labels are); the images of an ``unlabelled`` subfolder get label -1."""
    found = sorted(e.name for e in os.scandir(folder) if _visible(e.name) and e.is_dir())
    names = [n for n in found if n.lower() not in UNLABELLED_NAMES]
    if not names:
        loose = _images_under(folder)
        hint = (f"it holds {len(loose)} images but no class subfolders; put each class's images in a folder "
                "named after the class, or list them in a .csv / .jsonl file (labels optional)"
                if loose else "it is empty; give a folder with one subfolder of images per class")
        raise KDistillError(f"{what}: {folder}: {hint}.")
    unknown = [n for n in names if classes is not None and n not in classes and not _INTEGER.fullmatch(n)]
    if unknown:
        raise KDistillError(f"{what}: {folder} has class folder {shown(unknown[0])}, not one of the classes "
                            f"{names_shown(classes)} (its folders: {names_shown(names)}); "
                            f"{'add it to data.classes' if spec.classes else 'give both sets the same classes'}"
                            " or rename the folder.")
    paths, raw = [], []
    for name in found:
        files = _images_under(folder / name)
        if not files:
            raise KDistillError(f"{what}: the class folder {folder / name} holds no images "
                                f"({', '.join(EXTENSIONS)}); add its images or remove it (images without a "
                                "label go in a folder named unlabelled).")
        paths += [os.path.join(name, f) for f in files]
        raw += [name if name in names else None] * len(files)
    y, classes = label_ids(raw, f"{what}: {folder}", classes, row=lambda i: f"folder {raw[i]}")
    return ImageFolderSource(paths, y, spec.images, classes, len(classes) if classes else int(y.max()) + 1,
                             root=folder)


def _read_rows(path: Path, what: str) -> list[dict]:
    """The rows of a CSV (with a header) or JSONL (one object a line) list."""
    try:
        if path.suffix.lower() == ".csv":
            with open(path, newline="", encoding="utf-8-sig") as f:
                return list(csv.DictReader(f))
        with open(path, encoding="utf-8-sig") as f:
            return jsonl_rows(f, path, what)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise KDistillError(f"{what}: cannot read {path} ({' '.join(str(err).split())[:120]}); "
                            "give a UTF-8 .csv with a header row or a .jsonl list.") from None


def _from_list(path: Path, spec, what: str, classes: list[str] | None, num_classes: int) -> ImageFolderSource:
    """Files and labels from the rows of a CSV / JSONL list at ``path``."""
    rows = _read_rows(path, what)
    column, label_column = spec.files.path_column, spec.files.label_column
    if not rows:
        raise KDistillError(f"{what}: {path} lists no images; give one row per image file.")
    if column not in rows[0]:
        raise KDistillError(f"{what}: {path} has no column {shown(column)} (it has {', '.join(map(str, rows[0]))[:120]}); "
                            "name the image file column in data.files.path_column.")
    base = path.parent
    paths = []
    for number, row in enumerate(rows, 1):
        value = row.get(column)
        if value is None or not str(value).strip():
            raise KDistillError(f"{what}: {path} row {number} has no file in column {shown(column)}; "
                                "give every row an image file.")
        paths.append(str(base / os.path.expanduser(str(value).strip())))
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise KDistillError(f"{what}: {len(missing)} listed file(s) not found, the first {missing[0]}; "
                            f"paths in {path.name} are read relative to {base}.")
    raw = [row.get(label_column) if label_column else None for row in rows]
    y, classes = label_ids(raw, f"{what}: {path}", classes, row=lambda i: f"row {i + 1}")
    top = int(y.max()) + 1 if len(y) else 0
    return ImageFolderSource(paths, y, spec.images, classes, len(classes) if classes else max(num_classes, top))


class FolderFiles(FilesSpec):
    label_column: str | None = Field("label", description="a CSV/JSONL list's label column; null: unlabelled")
    path_column: str = Field("path", description="a CSV/JSONL list's image file column, relative to the list")


class ImageFolderData(ImageFilesData):
    """``image_folder``: a folder of class subfolders, or a CSV/JSONL list of image files."""

    files: FolderFiles = Field(default_factory=FolderFiles, description="data.files: the test set of a source read from files")

    def raw_inputs(self, input_shape: list):
        if len(input_shape) != 4:  # not images
            return None
        raw = {"dtype": "image", "shape": [None], "values": "one image (a file, or its bytes) a sample"}
        return raw, [decode_step(self.images)], []


def load_image_folder_data(spec: ImageFolderData, recipe=None) -> tuple[Source, Source]:
    return load_image_files(load_image_folder_source, spec, recipe)


register_source("image_folder", ImageFolderData, tasks=("classify", "embed"), loader=load_image_folder_data)
