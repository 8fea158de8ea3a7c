"""Checkpoints: all a run needs to continue exactly where it stopped.

A checkpoint is one ``torch.save`` file of tensors, numbers and strings (no code: it is read
back with ``weights_only=True``), written to a temporary name and renamed, so a file with the
final name is always whole. The newest ``keep`` are kept; one that cannot be read (cut short
by a crash, or damaged) is skipped, with a warning, for the one before it.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch.nn.parameter import is_lazy

from kdistill.paths import naming, no_links, open_own

PATTERN = "ckpt-*.pt"


def checkpoint_name(stage: int, epoch: int, step: int) -> str:
    """Names sort in training order: stage, then epoch, then step within the epoch."""
    return f"ckpt-s{stage:02d}-e{epoch:05d}-b{step:07d}.pt"


def has_checkpoint(folder: str | Path) -> bool:
    """Whether ``folder`` holds a checkpoint (readable or not: ``load_latest`` decides)."""
    return any(Path(folder).glob(PATTERN))


def save_checkpoint(folder: str | Path, name: str, state: dict, keep: int = 2) -> Path:
    folder = no_links(folder)  # a run's own folder, never one a link leads to
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    tmp = folder / f".{name}.tmp"
    try:
        with naming(path), open_own(tmp, "wb") as f:
            torch.save(state, f)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk: the part written is not left taking space
        raise
    os.replace(tmp, path)  # atomic: the final name only ever holds a whole file
    for old in sorted(folder.glob(PATTERN))[:-keep]:
        old.unlink()
    return path


def load_latest(folder: str | Path) -> tuple[dict, Path] | None:
    """The newest readable checkpoint in ``folder`` and its path, or None when there is none."""
    for path in sorted(Path(folder).glob(PATTERN), reverse=True):
        try:
            return torch.load(path, map_location="cpu", weights_only=True), path
        except Exception as err:  # truncated or corrupt: fall back to the one before
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            warnings.warn(f"checkpoint {path.name} cannot be read ({first}); using the one before it.")
    return None


def module_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` without lazy parameters not yet materialised (a later stage's
    ``LazyLinear``): they hold no values, and ``torch.load(weights_only=True)`` refuses them."""
    return {k: v for k, v in module.state_dict().items() if not is_lazy(v)}


def load_module_state(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load what :func:`module_state` saved: every key must match, except lazy parameters that
    were still unmaterialised when it was saved and are still so now."""
    missing, unexpected = module.load_state_dict(state, strict=False)
    current = module.state_dict()
    missing = [k for k in missing if not is_lazy(current[k])]
    if missing or unexpected:
        raise RuntimeError(f"missing keys {missing[:3]}, unexpected keys {unexpected[:3]}")


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
