"""Checkpoints: all a run needs to continue exactly where it stopped (what that is: the run's
registry of stateful objects, ``train/state.py``); here, the files.

A checkpoint is one ``torch.save`` file of tensors, numbers and strings (no code: it is read
back with ``weights_only=True``), written to a temporary name and renamed, so a file with the
final name is always whole. Beside it, written (atomically) just before it, a sidecar
``<name>.blake2b`` records its size and checksum; a checkpoint that does not match its sidecar
was damaged after it was written. The newest ``keep`` are kept; one that cannot be read (cut
short by a crash, damaged, or not written by kdistill) is skipped, with a warning, for the one
before it. A checkpoint without a sidecar (written before sidecars were) is read as before.
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import torch
from torch.nn.parameter import is_lazy

from kdistill.data.fingerprint import file_sum
from kdistill.errors import KDistillWarning
from kdistill.paths import naming, no_links, open_own, write_own

PATTERN = "ckpt-*.pt"
SIDECAR = ".blake2b"  # the checksum file of ckpt-....pt is ckpt-....pt.blake2b


def checkpoint_name(stage: int, epoch: int, step: int) -> str:
    """Names sort in training order: stage, then epoch, then step within the epoch."""
    return f"ckpt-s{stage:02d}-e{epoch:05d}-b{step:07d}.pt"


def has_checkpoint(folder: str | Path) -> bool:
    """Whether ``folder`` holds a checkpoint (readable or not: ``load_latest`` decides)."""
    return any(Path(folder).glob(PATTERN))


def _checksum(path: Path) -> str:
    """What a checkpoint's sidecar records of it: its checksum and size."""
    return f"{file_sum(path)} {path.stat().st_size}"


def save_checkpoint(folder: str | Path, name: str, state: dict, keep: int = 2) -> Path:
    folder = no_links(folder)  # a run's own folder, never one a link leads to
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    tmp, sidecar = folder / f".{name}.tmp", folder / (name + SIDECAR)
    sidecar_tmp = folder / f".{sidecar.name}.tmp"
    try:
        with naming(path), open_own(tmp, "wb") as f:
            _save(state, f)
        # the sidecar first: a checkpoint written here always has one (a crash between the two
        # leaves a sidecar without its checkpoint, which the pruning below removes)
        write_own(sidecar_tmp, _checksum(tmp))
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk: the part written is not left taking space
        sidecar_tmp.unlink(missing_ok=True)
        raise
    os.replace(sidecar_tmp, sidecar)
    os.replace(tmp, path)  # atomic: the final name only ever holds a whole file
    for old in sorted(folder.glob(PATTERN))[:-keep]:
        old.unlink()
    for orphan in folder.glob(PATTERN + SIDECAR):
        if not orphan.with_name(orphan.name.removesuffix(SIDECAR)).exists():
            orphan.unlink()
    return path


def _save(state: dict, file) -> None:
    """``torch.save``; a write that failed (a full disk) raises its OSError, not the RuntimeError
    torch's zip writer raises over it as it closes the file (which depends on where it failed)."""
    try:
        torch.save(state, file)
    except RuntimeError as err:
        if isinstance(err.__context__, OSError):
            raise err.__context__ from None
        raise


def _damage(path: Path) -> str | None:
    """Why the checkpoint ``path`` does not match its sidecar (None: it does, or it has none)."""
    sidecar = path.with_name(path.name + SIDECAR)
    try:
        want = sidecar.read_text(encoding="utf8").strip()
    except FileNotFoundError:
        return None  # written before sidecars were
    except (OSError, UnicodeDecodeError):
        return f"its checksum file {sidecar.name} cannot be read"
    if _checksum(path) != want:
        return f"it does not match its checksum in {sidecar.name}: damaged after it was written"
    return None


def _reason(err: Exception) -> str:
    """Why torch could not read a checkpoint, in a few words, never torch's advice to load it
    with ``weights_only=False`` (which would run whatever code the file holds)."""
    text = str(err).strip()
    if isinstance(err, pickle.UnpicklingError) or "weights_only" in text or "Weights only" in text:
        return "it holds objects other than tensors, numbers and strings, which kdistill never writes"
    first = text.splitlines()[0] if text else type(err).__name__
    return first if len(first) <= 100 else first[:97] + "..."


def load_latest(folder: str | Path) -> tuple[dict, Path] | None:
    """The newest readable checkpoint in ``folder`` and its path, or None when there is none."""
    for path in sorted(Path(folder).glob(PATTERN), reverse=True):
        try:
            problem = _damage(path)
            if problem is None:
                with warnings.catch_warnings():  # torch's own warnings about the file are not the user's to read
                    warnings.simplefilter("ignore")
                    return torch.load(path, map_location="cpu", weights_only=True), path
        except Exception as err:  # truncated or corrupt: fall back to the one before
            problem = _reason(err)
        warnings.warn(f"checkpoint {path.name} cannot be read ({problem}); using the one before it.", KDistillWarning,
                      stacklevel=2)
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
