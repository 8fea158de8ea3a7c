"""``kdistill init TEMPLATE [DIR]``: starter recipes, one a workflow, shipped with the package
(``recipes/templates/*.yaml``). Each is a whole recipe that validates as written;
the lines a user must change carry the comment ``# change:``."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from kdistill.errors import KDistillError, shown
from kdistill.paths import user_path, write_own

# name -> what it starts; the file is recipes/templates/<name>.yaml
TEMPLATES: dict[str, str] = {
    "classify": "an image classifier with few labels (your image folder, a CNN student)",
    "embed": "a sentence encoder (your texts, a Hugging Face teacher, a 2-layer sub-network of it)",
    "static": "a static embedding model from a sentence-encoder teacher",
    "lm": "a causal language model on your text (lm_text)",
    "lm-pairs": "a causal language model on prompt/response pairs (lm_pairs)",
}


def template_text(name: str) -> str:
    """The starter recipe ``name`` as text; an unknown name is a one-line error listing them."""
    if name not in TEMPLATES:
        known = "; ".join(f"{n}: {what}" for n, what in TEMPLATES.items())
        raise KDistillError(f"init: unknown template {shown(name)}; known: {known}.")
    return (resources.files("kdistill") / "recipes" / "templates" / f"{name}.yaml").read_text(encoding="utf8")


def write_template(name: str, folder: str | Path = ".", overwrite: bool = False) -> Path:
    """Write the starter recipe ``name`` into ``folder`` (made if absent) as ``<name>.yaml``.

    Returns the file written. An existing file is kept unless ``overwrite``: a one-line error."""
    text = template_text(name)
    folder = user_path(folder, "init: DIR")
    path = folder / f"{name}.yaml"
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise KDistillError(f"init: {path} exists; pass --overwrite to replace it, or give another DIR.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return write_own(path, text, root=folder)
    except OSError as err:
        raise KDistillError(f"init: cannot write {path}: {err.strerror or err}; give a folder you can write to.") \
            from None
