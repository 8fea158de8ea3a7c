"""Loss registry: each distillation method is one module registered by a lowercase name.

Every loss has the same signature, ``forward(student, teacher=None, target=None) -> scalar``:
tensors in, scalar out. Losses never see a model, a module path or the recipe.
"""

from __future__ import annotations

import difflib

from torch import nn

from kdistill.errors import KDistillError

LOSSES: dict[str, type[nn.Module]] = {}


def register(name: str):
    """Register a loss class under ``name``. Set ``uses_teacher = False`` on labels-only losses."""

    def wrap(cls):
        LOSSES[name] = cls
        return cls

    return wrap


def check_loss_name(name: str) -> str:
    if name not in LOSSES:
        close = difflib.get_close_matches(name, LOSSES, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KDistillError(f"loss: unknown name {name!r}.{hint} Known: {', '.join(sorted(LOSSES))}.")
    return name


def build_loss(name: str, **kwargs) -> nn.Module:
    cls = LOSSES[check_loss_name(name)]
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise KDistillError(f"loss {name!r}: bad arguments {kwargs}: {err}") from None
