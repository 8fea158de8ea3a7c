"""A model folder written whole or not at all, and the sentence-transformers files every
exported encoder folder shares (modules.json, config_sentence_transformers.json)."""

from __future__ import annotations

import contextlib
import json
import shutil
from importlib import metadata
from pathlib import Path

import torch

from kdistill.errors import KDistillError
from kdistill.models.weights import make_readable
from kdistill.paths import no_links, write_own


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_own(path, json.dumps(data, indent=2) + "\n")


@contextlib.contextmanager
def staged_folder(out_dir: Path, overwrite: bool):
    """Yield ``<out_dir>.incomplete`` to write into; once the block ends it replaces ``out_dir``
    (refused if that is a file, or a non-empty folder without ``overwrite``); a failed block
    leaves nothing."""
    if out_dir.exists() and not out_dir.is_dir():
        raise KDistillError(f"export: {out_dir} is a file; give a folder path.")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise KDistillError(f"export: {out_dir} exists and is not empty; choose a new folder or pass overwrite=True.")
    staging = out_dir.with_name(out_dir.name + ".incomplete")
    for path in (out_dir, staging, out_dir.with_name(out_dir.name + ".old")):  # each replaced or removed below
        no_links(path)
    if staging.exists():
        shutil.rmtree(staging)  # left over from an export that failed half-way
    staging.mkdir(parents=True)
    try:
        yield staging
        make_readable(staging)
        _move_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _move_into_place(staging: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` (if any) by the finished ``staging`` folder."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(out_dir.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        out_dir.rename(old)
    staging.rename(out_dir)
    if old is not None:
        shutil.rmtree(old)


def write_sentence_transformer_modules(folder: Path, modules: list[tuple[str, str]], normalize: bool) -> None:
    """``modules.json`` listing ``modules`` ((path, sentence_transformers.models class) in order),
    then a Normalize module when ``normalize``, and ``config_sentence_transformers.json``."""
    listed = [(path, kind) for path, kind in modules]
    if normalize:
        listed.append((f"{len(listed)}_Normalize", "Normalize"))
        (folder / listed[-1][0]).mkdir()
    write_json(folder / "modules.json", [{"idx": i, "name": str(i), "path": path,
                                          "type": f"sentence_transformers.models.{kind}"}
                                         for i, (path, kind) in enumerate(listed)])
    versions = {"pytorch": torch.__version__}
    for name in ("sentence-transformers", "transformers"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name.replace("-", "_")] = metadata.version(name)
    write_json(folder / "config_sentence_transformers.json", {
        "model_type": "SentenceTransformer", "__version__": versions, "prompts": {},
        "default_prompt_name": None, "similarity_fn_name": "cosine"})
