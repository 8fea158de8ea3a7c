"""What a checkpoint saves: every stateful object of a run, registered by name.

A stateful object has ``state_dict()`` and ``load_state_dict(state)`` (torch's own modules and
optimisers do). The run registers each once (``RunState.register``): the stages' progress
(``fit``), the models, the objectives, the feature providers, and the loop of the stage being
trained (``loop``: optimiser, schedule, scaler, generators, random state, position), which joins
while its stage trains. A checkpoint holds ``{name: obj.state_dict()}`` of every one registered
under ``"state"``, beside a header the runner reads before anything is built (the version, the
run's recipe, the lines of metrics.jsonl written so far); resumed, each object gets its own state
back when it registers. A new stateful object joins with one ``register`` call.

Checkpoints of version 2 (before this registry: every part a key of its own) are read in this
layout (``readable``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from torch import nn

from kdistill.errors import KDistillError
from kdistill.train.checkpoint import load_module_state, module_state

VERSION = 3  # 3: {"state": {name: state}} (2: the parts as top-level keys; 1: the PCA under "pca")
HEADER = {"version", "metrics_lines", "state"}  # and, since they were added, "recipe" (YAML text)
PARTS = {"fit", "models", "objectives", "features"}  # always registered ("loop": while a stage trains)
V2_KEYS = {"version", "stage", "loop", "ends", "starts", "stage_times", "teacher_changed", "metrics_lines",
           "models", "objectives", "features"}
V2_FIT = ("stage", "ends", "starts", "stage_times", "teacher_changed")


class Stateful(Protocol):
    def state_dict(self) -> dict: ...

    def load_state_dict(self, state) -> None: ...


class RunState:
    """The stateful objects of a run by name; ``saved``: the ``"state"`` of the checkpoint a
    resumed run continues from (each object gets its part when it registers)."""

    def __init__(self, saved: dict | None = None):
        self.objects: dict[str, Stateful] = {}
        self.saved = dict(saved or {})
        self._pending = set(self.saved)

    def register(self, name: str, obj: Stateful) -> None:
        """``obj`` saved under ``name`` in every checkpoint from now on (until ``unregister``);
        given its saved state now, if the checkpoint resumed from holds one not yet given."""
        self.objects[name] = obj
        if name in self._pending:
            self._pending.discard(name)
            obj.load_state_dict(self.saved[name])

    def unregister(self, name: str) -> None:
        self.objects.pop(name, None)

    def reload(self, name: str) -> None:
        """``name``'s saved state given again (after something reset it: a stage's ``prepare``)."""
        if name in self.saved:
            self.objects[name].load_state_dict(self.saved[name])

    def state_dict(self) -> dict:
        return {name: obj.state_dict() for name, obj in self.objects.items()}

    def checkpoint(self, **header) -> dict:
        """What a checkpoint file holds: the header and every registered object's state."""
        return {"version": VERSION, **header, "state": self.state_dict()}


class Modules:
    """Named modules (or a list of them) saved as their weights; with ``strict`` False, lazy
    parameters not yet materialised are left out (``checkpoint.module_state``)."""

    def __init__(self, modules: dict[str, nn.Module] | list[nn.Module], strict: bool = False):
        self.modules, self.strict = modules, strict

    def _save(self, module: nn.Module) -> dict:
        return module.state_dict() if self.strict else module_state(module)

    def _load(self, module: nn.Module, weights: dict) -> None:
        module.load_state_dict(weights) if self.strict else load_module_state(module, weights)

    def state_dict(self):
        if isinstance(self.modules, list):
            return [self._save(m) for m in self.modules]
        return {name: self._save(m) for name, m in self.modules.items()}

    def load_state_dict(self, state) -> None:
        if isinstance(self.modules, list):
            for module, weights in zip(self.modules, state):
                self._load(module, weights)
        else:
            for name, weights in state.items():
                self._load(self.modules[name], weights)


def _from_v2(old: dict) -> dict:
    """A version-2 checkpoint (every part a top-level key) in this version's layout."""
    fit = {key: old[key] for key in V2_FIT} | {"best": old.get("best", {})}  # "best": since keep_best
    state = {"fit": fit, **{part: old[part] for part in ("models", "objectives", "features")}}
    if old["loop"] is not None:  # None: written between stages
        state["loop"] = old["loop"]
    header = {"recipe": old["recipe"]} if "recipe" in old else {}
    return {"version": VERSION, **header, "metrics_lines": old["metrics_lines"], "state": state}


def readable(state, where: Path) -> dict:
    """The checkpoint ``state`` read from ``where``, in this version's layout (one of version 2
    converted); refused, in one line, when another version of kdistill wrote it or kdistill did not."""
    version = state.get("version") if isinstance(state, dict) else None
    if isinstance(version, int) and version not in (2, VERSION):
        raise KDistillError(f"resume: {where} was written by another version of kdistill (checkpoint version "
                            f"{version}, this one reads {VERSION}); start the run again (--overwrite).")
    if version == 2:
        missing = sorted(V2_KEYS - set(state))
    elif isinstance(state, dict) and isinstance(state.get("state"), dict):
        missing = sorted(HEADER - set(state)) + sorted(PARTS - set(state["state"]))
    else:
        missing = sorted(HEADER - set(state)) if isinstance(state, dict) else sorted(HEADER)
    if missing:
        raise KDistillError(f"resume: {where} is not a checkpoint kdistill wrote (no {', '.join(missing[:3])}); "
                            "delete it to resume from the one before, or start the run again (--overwrite).")
    return _from_v2(state) if version == 2 else state
