"""Model weights as safetensors: no pickle is ever loaded."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from kdistill.errors import KDistillError
from kdistill.paths import naming, no_links, open_own, user_path


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write tensors to a .safetensors file, byte for byte the same for the same tensors and
    metadata (the header's keys sorted), readable like any other output file (mode 0666 less
    the umask), written to a temporary name and renamed so the final name is always whole."""
    raw = save(_own_storage(tensors), metadata=metadata)
    size = int.from_bytes(raw[:8], "little")
    header = json.dumps(json.loads(raw[8 : 8 + size]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    path = no_links(path)  # a link there is refused, not replaced
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with naming(path), open_own(tmp, "wb") as f:  # honours the umask, unlike safetensors' own writer (0600)
            f.write(len(header).to_bytes(8, "little") + header + raw[8 + size :])
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk: the part written is not left taking space
        raise
    os.replace(tmp, path)


def _own_storage(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU tensors that each hold a storage of their own: tied weights (one tensor under two
    names) and views into a larger storage are copied, as safetensors refuses shared memory."""
    seen, out = set(), {}
    for name, value in tensors.items():
        value = value.detach().cpu().contiguous()
        storage = value.untyped_storage()
        if storage.data_ptr() in seen or storage.nbytes() != value.numel() * value.element_size():
            value = value.clone()
        seen.add(value.untyped_storage().data_ptr())
        out[name] = value
    return out


def make_readable(folder: str | Path) -> None:
    """Give every file under ``folder`` the mode a new file gets (0666 less the umask): writers
    such as safetensors' create weight files readable by their owner alone."""
    mask = os.umask(0)
    os.umask(mask)
    for path in Path(folder).rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.chmod(path, 0o666 & ~mask)


def save_weights(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write the model's state dict (parameters and buffers) to a .safetensors file."""
    save_tensors(model.state_dict(), path, metadata)


def load_weights(model: nn.Module, path: str | Path, owner: str = "model") -> nn.Module:
    """Load a .safetensors file into ``model`` in place; every key must match."""
    path = user_path(path, f"{owner}.weights")
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
