"""What a weights file records about the data its model was trained on: the class names, in the
order of the model's outputs, as safetensors metadata (the preprocessing is recorded beside them:
``Preprocess.to_metadata`` in ``data/preprocess.py``). The data layer reads them before any model
is built, to refuse a teacher trained on other classes; the runner writes them with the student.
"""

from __future__ import annotations

import json
from pathlib import Path

from kdistill.errors import KDistillError, shown
from kdistill.paths import user_path

CLASSES_KEY = "classes"  # the metadata key of the class names, one JSON list, in the order of the outputs


def classes_metadata(names: list[str] | None) -> dict[str, str]:
    """The metadata that records a model's class names (nothing when they are not known)."""
    return {CLASSES_KEY: json.dumps(list(names), ensure_ascii=False)} if names else {}


def read_classes(path: str | Path, owner: str = "teacher") -> list[str] | None:
    """The class names a .safetensors file records (``classes_metadata``), or None when it records
    none (or is not a readable .safetensors file: loading the weights says what is wrong)."""
    from safetensors import SafetensorError, safe_open

    path = user_path(path, f"{owner}.weights")
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            text = (f.metadata() or {}).get(CLASSES_KEY)
    except (SafetensorError, OSError):
        return None
    if text is None:
        return None
    try:
        names = json.loads(text)
    except ValueError:
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise KDistillError(f"{owner}.weights: {path} records unreadable class names under {shown(CLASSES_KEY)}; "
                            "rewrite the weights' metadata or train the model again.")
    return names
