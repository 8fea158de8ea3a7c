"""Feature taps: forward hooks on modules named by their dotted path.

No model's ``forward`` is edited, so any ``nn.Module`` works as it is. ``"logits"`` is not a
module name: it means the model's own output and is filled in by the caller.
"""

from __future__ import annotations

import difflib

import torch
from torch import nn

from kdistill.errors import KDistillError

OUTPUT = "logits"


def resolve_module(model: nn.Module, name: str, owner: str = "model") -> nn.Module:
    """Return the submodule at dotted path ``name``; unknown names fail with the closest ones."""
    modules = dict(model.named_modules())
    if name not in modules:
        valid = [n for n in modules if n]
        close = difflib.get_close_matches(name, valid, n=3, cutoff=0.4)
        hint = f" Closest: {', '.join(close)}." if close else f" Valid: {', '.join(valid[:12])} ..."
        raise KDistillError(f"{owner}: no module named {name!r}.{hint}")
    return modules[name]


def _first_tensor(output) -> torch.Tensor:
    # transformer blocks return tuples; the hidden state comes first
    if isinstance(output, (tuple, list)):
        output = output[0]
    if hasattr(output, "last_hidden_state"):
        output = output.last_hidden_state
    return output


class FeatureTaps:
    """Capture the outputs of named modules on every forward pass.

    Args:
        model: any module.
        names: dotted module paths (``model.named_modules()``); ``"logits"`` is skipped.
        owner: a word for error messages ("student", "teacher").

    After a forward pass, ``taps.features`` maps each name to its output tensor.
    Use as a context manager, or call ``remove()`` when done.
    """

    def __init__(self, model: nn.Module, names: list[str], owner: str = "model"):
        self.features: dict[str, torch.Tensor] = {}
        self._handles = []
        for name in dict.fromkeys(names):
            if name == OUTPUT:
                continue
            module = resolve_module(model, name, owner)
            self._handles.append(module.register_forward_hook(self._hook(name)))

    def _hook(self, name: str):
        def store(module, inputs, output):
            self.features[name] = _first_tensor(output)

        return store

    def collect(self, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """The captured features plus the model output under ``"logits"``; clears the store."""
        feats, self.features = {**self.features, OUTPUT: logits}, {}
        return feats

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> "FeatureTaps":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
