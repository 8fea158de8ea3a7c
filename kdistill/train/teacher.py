"""Where a stage's teacher features come from, behind one interface.

A frozen teacher's outputs are computed once and reused every epoch when they can be:
- **memory**: no random augmentation: one pass over the stage's inputs, kept in memory (tap by
  tap, keyed by fingerprints of the teacher's weights and of the inputs, so later stages and
  runs that share a ``TeacherMemo`` reuse them);
- **disk**: ``cache:`` in the stage: a memory-mapped cache built once (``train.cache``), with
  augmented views; the batch shows the student the very view the teacher saw;
- **live**: otherwise (random augmentation without a cache, or ``cache_teacher: false``): the
  textbook loop, a teacher forward pass every step.

``kdistill cache`` and ``kdistill run`` build their disk caches through ``TeacherSource`` alike,
so they can never compute different keys.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict

import torch
from torch import nn

from kdistill import distributed
from kdistill.data.augment import random_shift_flip, shift_flip
from kdistill.errors import KDistillError
from kdistill.models.infer import eval_mode, forward_batches
from kdistill.models.taps import OUTPUT, FeatureTaps, apply_derived
from kdistill.data.samples import fingerprint_of
from kdistill.train.cache import TeacherCache, build_cache, fingerprint


def autocast(device: torch.device, amp: str | bool):
    """The autocast ``amp`` asks for: bfloat16 on CUDA or the CPU, float16 on CUDA; nothing
    otherwise (float16 on the CPU, other devices)."""
    if amp == "bf16" and device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if amp == "fp16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


class TeacherMemo:
    """Teacher outputs of the last few (teacher, inputs, device), tap by tap, in memory."""

    def __init__(self, entries: int = 2):
        self.entries = entries
        self._store: OrderedDict = OrderedDict()

    def outputs(self, teacher: nn.Module, names: list[str], x: torch.Tensor, device: torch.device,
                batch_size: int = 512) -> dict[str, torch.Tensor]:
        """The teacher's taps ``names`` over ``x``, ``{tap: (N, ...)}`` on ``device``: logits in
        float32, intermediate features in float16 (half the memory). Computed once per
        (teacher weights, inputs, device); a changed teacher or data set never reuses stale outputs.
        A bar while they are computed, where the job shows progress (``kdistill.progress``)."""
        key = (fingerprint(teacher.state_dict().values()), fingerprint_of(x), str(device))
        outputs = self._store.pop(key, {})
        self._store[key] = outputs  # most recently used last
        while len(self._store) > self.entries:
            self._store.popitem(last=False)
        missing = [n for n in names if n not in outputs]
        if missing:
            outputs.update(forward_batches(
                teacher, x, device, missing, owner="teacher", batch_size=batch_size,
                desc="teacher outputs", each=lambda feats: {n: feats[n].float() if n == OUTPUT else feats[n].half()
                                                            for n in missing}))
        return {n: outputs[n] for n in names}


class TeacherSource:
    """The teacher features of a stage's batches, and the augmentation of its inputs.

    Args:
        teacher: the frozen teacher, or None for a stage whose terms read no teacher feature.
        names: the teacher features the terms read; ``derived``: those computed from a tap.
        augment: the stage's ``AugmentSpec``.
        store, memory: a disk cache, or the in-memory outputs (at most one of them).
    """

    def __init__(self, teacher: nn.Module | None, names: list[str], derived: dict, augment,
                 store: TeacherCache | None = None, memory: dict | None = None, amp: str | bool = False):
        self.teacher, self.store, self.memory, self.amp = teacher, store, memory, amp
        self.taps = FeatureTaps(teacher, names, "teacher", derived) if teacher is not None else None
        self.shift, self.flip = int(augment.shift), bool(augment.flip)

    @property
    def mode(self) -> str:
        return ("none" if self.taps is None else "disk" if self.store is not None
                else "memory" if self.memory is not None else "live")

    def inputs(self, xb: torch.Tensor, index: torch.Tensor, generator: torch.Generator):
        """The batch as the student sees it, augmented, and the cached view it is (or None)."""
        if self.store is not None and (self.shift or self.flip):  # one of the cached views, the teacher's own
            view = torch.randint(self.store.views, (len(index),), generator=generator)
            return shift_flip(xb, self.store.params[index, view], self.shift), view
        if self.shift or self.flip:
            return random_shift_flip(xb, self.shift, self.flip, generator), None
        return xb, None

    def features(self, xb: torch.Tensor, index: torch.Tensor, view, device) -> dict | None:
        """The teacher features of the batch ``xb`` (``index``: its samples' positions, on the CPU)."""
        if self.taps is None:
            return None
        if self.store is not None:
            feats = self.store.get(self.taps.sources, index, view, device)
            return apply_derived({**feats, **self.taps.constants()}, self.taps.derived)
        if self.memory is not None:
            index = index.to(device)
            feats = {k: v[index].float() for k, v in self.memory.items()}
            return apply_derived({**feats, **self.taps.constants()}, self.taps.derived)
        with torch.no_grad(), autocast(device, self.amp):  # the textbook loop: a live teacher
            return self.taps.collect(self.teacher(xb))

    def close(self) -> None:
        if self.taps is not None:
            self.taps.remove()


def teacher_source(teacher: nn.Module | None, objective, x: torch.Tensor, stage, seed: int, device,
                   memo: TeacherMemo | None = None) -> TeacherSource:
    """The source of a stage's teacher features (see the module docstring for which one).

    ``stage``: the recipe's stage (``StageSpec``); under torchrun every rank builds its shards of
    a disk cache. A bar (on the main process) while outputs are computed ahead, where the job
    shows progress (``kdistill.progress``).
    """
    names = objective.taps()[1] if objective.uses_teacher else []
    if not names or teacher is None:
        return TeacherSource(None, [], {}, stage.augment)
    source = TeacherSource(teacher, names, objective.teacher_derived, stage.augment, amp=stage.amp)
    augment = source.shift or source.flip
    decoded_at_random = getattr(x, "random", False)  # a source drawing random crops / flips as it decodes
    if decoded_at_random and stage.cache is not None:
        raise KDistillError(f"stages ({stage.name}): cache stores the teacher's outputs of fixed views, but the "
                            "source decodes every sample at random (data.images random_crop or flip); turn those "
                            "off for a cached stage (the stage's augment shift/flip is cached by views), or drop cache.")
    if decoded_at_random:  # a new view every epoch: the teacher sees each one live
        return source
    if stage.cache is not None or (stage.cache_teacher and not augment):
        source.taps.remove()  # outputs computed ahead: the hooks would only hold on to a batch
    if stage.cache is not None:
        cache = stage.cache
        source.store = build_cache(teacher, source.taps.sources, x, cache.dir, device,
                                   stage.augment.model_dump() if augment else None, cache.views, seed, cache.topk,
                                   cache.dtype, field=f"stages ({stage.name}): cache.dir")
    elif stage.cache_teacher and not augment:
        with eval_mode(teacher):
            source.memory = (memo or TeacherMemo()).outputs(teacher, source.taps.sources, x, device)
    return source
