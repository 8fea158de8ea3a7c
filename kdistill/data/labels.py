"""Class labels: one rule for every data source, checked before anything is sized by them.

A label is a class id, a whole number ``0..K-1``, or ``-1`` for a sample without a label (a
missing or empty value in a file means the same). A label may instead be a class name: names
map to ids through ``data.classes`` when the recipe gives it (its order is the classes' order),
else through their sorted order. Refused, in one line naming the source, the first bad value
and its row:

- NaN, infinite and fractional values (``nan``, ``inf``, ``1.5``), and ids below -1;
- names mixed with integer ids (a stray ``cat`` among ``0`` and ``1``), or a name that
  ``data.classes`` lacks, or an id at or beyond the number of ``data.classes``;
- ids far beyond the data's classes: ``MAX_CLASS_ID`` or more, or ``SPARSE_FLOOR`` or more and
  at least ``SPARSE_FACTOR`` times the number of distinct labels (``0, 1, 1000000000``): a
  model's head and every per-class table are sized by the largest id.
"""

from __future__ import annotations

import math
import re
from typing import Callable, Sequence

import numpy as np
import torch

from kdistill.errors import KDistillError

UNLABELLED = -1  # the label of a sample without one (and of every transfer-set sample): no loss can use it
MAX_CLASS_ID = 99_999  # ids of 100,000 and more are refused
SPARSE_FACTOR = 100  # ... and ids of 1,000 or more that are 100 times the number of distinct labels
SPARSE_FLOOR = 1_000
UNLABELLED_NAMES = ("unlabelled", "unlabeled")  # an image folder's subfolder of images without a label
_INTEGER = re.compile(r"[+-]?\d+")


def sample_row(i: int) -> str:
    return f"sample {i}"


def names_shown(values: Sequence, limit: int = 80) -> str:
    """A list of names for a message, shortened to about ``limit`` characters."""
    text = ", ".join(str(v) for v in values)
    return f"[{text if len(text) <= limit else text[:limit].rsplit(', ', 1)[0] + ', ...'}]"


def label_ids(values, what: str, classes: Sequence[str] | None = None,
              row: Callable[[int], str] = sample_row) -> tuple[np.ndarray, list[str] | None]:
    """Labels as class ids, checked by the one rule above.

    Args:
        values: ``(N,)`` labels: a tensor or array of numbers, or a list of numbers, strings
            (names, or numbers as text) and ``None`` / ``""`` (unlabelled), as files give them.
        what: the source, for messages (``data.path: labels.csv``).
        classes: the class names (``data.classes``, or a training set's) that names map to.
        row: how sample ``i`` is named in a message (``row 3`` for a file's rows).

    Returns:
        (ids ``(N,)`` int64, -1 for unlabelled; the class names: ``classes``, the sorted names
        when the labels are names and no ``classes`` is given, else None).
    """
    if torch.is_tensor(values):
        values = values.detach().cpu().numpy()
    elif not isinstance(values, np.ndarray):
        try:
            as_array = np.asarray(values)
        except (ValueError, TypeError):  # ragged: the loop below names the bad value
            as_array = None
        values = as_array if as_array is not None and as_array.dtype.kind in "biuf" else values
    if isinstance(values, np.ndarray) and values.dtype.kind in "biuf":
        ids = _numeric_ids(values.reshape(-1) if values.ndim == 0 else values, what, row)
    else:
        ids, classes = _mixed_ids(list(np.asarray(values, dtype=object).reshape(-1)), what, classes, row)
    check_ids(ids, what, len(classes) if classes is not None else None, row)
    return ids, (list(classes) if classes is not None else None)


def _numeric_ids(y: np.ndarray, what: str, row) -> np.ndarray:
    if y.ndim != 1:
        raise KDistillError(f"{what}: the labels have shape {tuple(y.shape)}; give one integer label per sample, "
                            "shape (N,).")
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y)
        bad[~bad] = y[~bad] != np.round(y[~bad])
        if bad.any():
            i = int(np.argmax(bad))
            raise _not_an_id(what, y[i].item(), row(i))
        if len(y) and (y.min() < np.iinfo(np.int64).min / 2 or y.max() > np.iinfo(np.int64).max / 2):
            i = int(np.argmax(np.abs(y)))
            raise _too_far(what, y[i].item(), row(i), 1) if y[i] > 0 else _negative(what, y[i].item(), row(i))
    if y.dtype.kind == "u" and len(y) and y.max() > 2**62:  # would wrap round to a negative int64
        i = int(np.argmax(y))
        raise _too_far(what, y[i].item(), row(i), 1)
    return y.astype(np.int64)


def _not_an_id(what: str, value, where: str) -> KDistillError:
    return KDistillError(f"{what}: label {_short(value)} at {where} is not a class id; labels are whole numbers "
                         "0..K-1 (-1: unlabelled) or class names: fix or drop that sample.")


def _short(value) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _mixed_ids(values: list, what: str, classes, row) -> tuple[np.ndarray, list[str] | None]:
    """Ids of labels read from a file or a list: numbers, names, blanks."""
    ids = np.full(len(values), UNLABELLED, dtype=np.int64)
    names: dict[int, str] = {}  # sample -> name, for the labels that are names
    first_id = None  # the first sample labelled by a number
    named = set(classes) if classes is not None else set()
    for i, value in enumerate(values):
        if isinstance(value, (np.generic, torch.Tensor)):
            value = value.item()
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if isinstance(value, str):
            text = value.strip()
            if text in named:
                names[i] = text
                continue
            number = _number(text)
            if number is None:
                names[i] = text
                continue
            value = number
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _not_an_id(what, value, row(i))
        if isinstance(value, float):
            if not math.isfinite(value) or not value.is_integer():
                raise _not_an_id(what, value, row(i))
            value = int(value)
        if abs(value) > 2**62:  # beyond int64: refused here, with the value as given
            raise _too_far(what, value, row(i), 1) if value > 0 else _negative(what, value, row(i))
        ids[i] = value
        first_id = i if first_id is None else first_id
    if names and classes is not None:
        unknown = [i for i, name in names.items() if name not in named]
        if unknown:
            found = sorted(set(names.values()))
            raise KDistillError(f"{what}: label {_short(names[unknown[0]])} at {row(unknown[0])} is not one of "
                                f"the classes {names_shown(classes)} (the data's names: {names_shown(found)}); list it in "
                                "data.classes, or fix the label.")
    if names and first_id is not None:
        i = max(first_id, min(names))  # the first label of the kind that came second
        value = names[i] if i in names else int(ids[i])
        raise KDistillError(f"{what}: label {_short(value)} at {row(i)} mixes class names and integer ids (the "
                            f"first name at {row(min(names))}, the first id at {row(first_id)}); give every label "
                            "as an id, or every label as a name (listed in data.classes).")
    if names:
        classes = list(classes) if classes is not None else sorted(set(names.values()))
        index = {c: k for k, c in enumerate(classes)}
        for i, name in names.items():
            ids[i] = index[name]
    return ids, classes


def _number(text: str) -> int | float | None:
    """``text`` as a number (an int, or a float: ``1.5``, ``nan``, ``1e9``), or None for a name."""
    if _INTEGER.fullmatch(text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return None


def check_ids(ids: np.ndarray, what: str, num_names: int | None = None, row: Callable[[int], str] = sample_row) -> None:
    """The range of class ids (``(N,)`` int64): none below -1, none at or beyond ``num_names``
    (the class names, when known), none far beyond the data's classes (see the module)."""
    if not len(ids):
        return
    low, high = int(ids.min()), int(ids.max())
    if low < UNLABELLED:
        i = int(np.argmax(ids < UNLABELLED))
        raise _negative(what, int(ids[i]), row(i))
    if num_names is not None and high >= num_names:
        i = int(np.argmax(ids >= num_names))
        raise KDistillError(f"{what}: label {int(ids[i])} at {row(i)} is beyond the {num_names} class names "
                            f"(ids 0..{num_names - 1}); fix the label, or name every class in data.classes.")
    if high >= SPARSE_FLOOR:
        distinct = len(np.unique(ids[ids >= 0]))
        if high > MAX_CLASS_ID or high >= SPARSE_FACTOR * distinct:
            raise _too_far(what, high, row(int(np.argmax(ids == high))), distinct)


def _negative(what: str, value, where: str) -> KDistillError:
    return KDistillError(f"{what}: label {_short(value)} at {where} is negative; labels are classes 0..K-1, and -1 "
                         "marks a sample without a label.")


def _too_far(what: str, value, where: str, distinct: int) -> KDistillError:
    return KDistillError(f"{what}: label {_short(value)} at {where} is far beyond the data's {distinct} distinct "
                        f"label(s) (ids stop at {MAX_CLASS_ID:,} and below {SPARSE_FACTOR} times the distinct "
                        "labels); number the classes 0..K-1.")


def _loose(name: str) -> str:
    """A class name as compared across sources: case, spaces and punctuation aside (a folder
    ``t-shirt_top`` is the class ``T-shirt/top``, which no folder can be named)."""
    return re.sub(r"[\W_]+", "", str(name).casefold())


def names_differ(found: Sequence[str], expected: Sequence[str]) -> str | None:
    """How two class lists differ, for a message (None when they name the same classes in the
    same order, compared loosely: ``_loose``)."""
    keys, wanted = [_loose(n) for n in found], [_loose(n) for n in expected]
    if keys == wanted:
        return None
    how = "in another order" if sorted(keys) == sorted(wanted) else "different names"
    return f"{how}: {names_shown(found)} vs {names_shown(expected)}"
