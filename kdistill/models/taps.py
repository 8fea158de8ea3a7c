"""Feature taps: forward hooks on modules named by their dotted path.

No model's ``forward`` is edited, so any ``nn.Module`` works as it is. ``"logits"`` is not a
module name: it means the model's own output and is filled in by the caller; nor is
``"weights"``, the model's trainable parameters (for a pull to the starting weights), nor
``"head"``, a language model's output projection (for losses that project chunk by chunk).
"""

from __future__ import annotations

import difflib

import torch
from torch import nn

from kdistill.errors import KDistillError, shown

OUTPUT = "logits"
WEIGHTS = "weights"  # not a module either: the trainable parameters, for losses on the weights
HEAD = "head"  # nor this: the model's output projection (weight, bias), of models with output_head()


def resolve_module(model: nn.Module, name: str, owner: str = "model") -> nn.Module:
    """Return the submodule at dotted path ``name``; unknown names fail with the closest ones."""
    modules = dict(model.named_modules())
    if name not in modules:
        valid = [n for n in modules if n]
        close = difflib.get_close_matches(name, valid, n=3, cutoff=0.4) if len(name) <= 100 else []
        hint = f" Closest: {', '.join(close)}." if close else f" Valid: {', '.join(valid[:12])} ..."
        raise KDistillError(f"{owner}: no module named {shown(name)}.{hint}")
    return modules[name]


def _first_tensor(output) -> torch.Tensor:
    # transformer blocks return tuples; the hidden state comes first
    if isinstance(output, (tuple, list)):
        output = output[0]
    if hasattr(output, "last_hidden_state"):
        output = output.last_hidden_state
    return output


def apply_derived(feats: dict[str, torch.Tensor], derived: dict) -> dict[str, torch.Tensor]:
    """Add features computed from tapped ones: ``derived = {name: (source, fn)}``."""
    for name, (source, fn) in derived.items():
        feats[name] = fn(feats[source])
    return feats


class FeatureTaps:
    """Capture the outputs of named modules on every forward pass.

    Args:
        model: any module.
        names: dotted module paths (``model.named_modules()``); ``"logits"`` is skipped.
        owner: a word for error messages ("student", "teacher").
        derived: features computed from a tapped one, ``{name: (source path, fn)}``, e.g. a
            teacher layer projected to a low-dimensional embedding.

    After a forward pass, ``taps.features`` maps each name to its output tensor.
    Use as a context manager, or call ``remove()`` when done.
    """

    def __init__(self, model: nn.Module, names: list[str], owner: str = "model", derived: dict | None = None):
        self.features: dict[str, torch.Tensor] = {}
        self._handles = []
        self.derived = {n: fn for n, fn in (derived or {}).items() if n in names}
        sources = [self.derived[n][0] if n in self.derived else n for n in names]
        self._sources = [n for n in dict.fromkeys(sources) if n not in (WEIGHTS, HEAD)]
        self._head = model if HEAD in names else None
        if self._head is not None and not hasattr(model, "output_head"):
            raise KDistillError(f"{owner}: a loss reads its {shown(HEAD)} (the output projection), which only models "
                                f"with output_head() have (model: hf_causal), not {type(model).__name__}.")
        # a model that holds several models (a teacher ensemble) maps tap names to its own paths
        tap_path = getattr(model, "tap_path", lambda name: name)
        for name in dict.fromkeys(sources):
            if name in (OUTPUT, WEIGHTS, HEAD):
                continue
            module = resolve_module(model, tap_path(name), owner)
            self._handles.append(module.register_forward_hook(self._hook(name)))

    def _hook(self, name: str):
        def store(module, inputs, output):
            self.features[name] = _first_tensor(output)

        return store

    def collect(self, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """The captured features plus the model output under ``"logits"`` (and the constants);
        clears the store."""
        feats, self.features = {**self.features, OUTPUT: logits, **self.constants()}, {}
        return apply_derived(feats, self.derived)

    def constants(self) -> dict:
        """The features that are the same for every sample: ``head``, the output projection
        ``(weight, bias)``, when it is asked for (never cached per sample)."""
        return {HEAD: tuple(self._head.output_head())} if self._head is not None else {}

    @property
    def sources(self) -> list[str]:
        """The module paths (and ``logits``) the taps read, derived features mapped to their source."""
        return list(dict.fromkeys([*self._sources, OUTPUT]))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> "FeatureTaps":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
