"""Model weights as safetensors: no pickle is ever loaded."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from kdistill.errors import KDistillError


def save_weights(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write the model's state dict (parameters and buffers) to a .safetensors file."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata=metadata)


def load_weights(model: nn.Module, path: str | Path, owner: str = "model") -> nn.Module:
    """Load a .safetensors file into ``model`` in place; every key must match."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise KDistillError(f"{owner}.weights: {path} is not a .safetensors file; convert it first.")
    if not path.is_file():
        raise KDistillError(f"{owner}.weights: {path} not found.")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise KDistillError(f"{owner}.weights: cannot read {path}: {err}") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and expected[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        raise KDistillError(
            f"{owner}.weights: {path} does not fit the {owner} model "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {wrong[:3]}); "
            f"check {owner}.model and {owner}.args."
        )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    return model


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the model's state, to start a later stage from."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
