"""Where a stage's teacher features come from, behind one interface.

A frozen teacher's outputs are computed once and reused every epoch when they can be:
- **memory**: one pass over the stage's inputs, kept in memory (tap by tap, in float32, keyed
  by fingerprints of the teacher's weights and of the inputs, so later stages and runs that
  share a ``TeacherMemo`` reuse them): the numbers of the live teacher;
- **disk**: ``cache:`` in the stage: a memory-mapped cache built once (``train.cache``), with
  augmented views, stored as ``cache.dtype`` (float16 by default: half the disk and page cache,
  features within float16's rounding of the live teacher's; float32 for the live numbers);
- **live**: the textbook loop, a teacher forward pass every step.

Which one is one declared rule (``MODE_RULE``, read by ``teacher_mode``), one row for every
case:

=============  =================  =====  =============  =========  =====================
reads teacher  decoded at random  cache  cache_teacher  augmented  mode
=============  =================  =====  =============  =========  =====================
no             any                any    any            any        none
yes            yes                yes    any            any        refused (fixed views)
yes            yes                no     any            any        live (new every epoch)
yes            no                 yes    any            any        disk
yes            no                 no     yes            no         memory
yes            no                 no     yes            yes        live
yes            no                 no     no             any        live
=============  =================  =====  =============  =========  =====================

The student's augmentation is the data layer's (``data.augment.Augment``): the loop draws the
batch's view there and asks the source for the teacher's features of it (of the cached view it
drew, with a disk cache). ``kdistill cache`` and ``kdistill run`` build their disk caches
through ``teacher_source`` alike, so they can never compute different keys.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict

import torch
from torch import nn

from kdistill.errors import KDistillError
from kdistill.models.infer import eval_mode, forward_batches
from kdistill.models.taps import FeatureTaps, apply_derived
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
        """The teacher's taps ``names`` over ``x``, ``{tap: (N, ...)}`` on ``device``, in float32,
        logits and intermediate features alike: a stage reads the numbers a live teacher gives
        it (within float32 rounding: the passes batch the inputs otherwise). Computed once per
        (teacher weights, inputs, device); a changed teacher or data set never reuses stale
        outputs. A bar while they are computed, where the job shows progress (``kdistill.progress``)."""
        key = (fingerprint(teacher.state_dict().values()), fingerprint_of(x), str(device))
        outputs = self._store.pop(key, {})
        self._store[key] = outputs  # most recently used last
        while len(self._store) > self.entries:
            self._store.popitem(last=False)
        missing = [n for n in names if n not in outputs]
        if missing:
            outputs.update(forward_batches(
                teacher, x, device, missing, owner="teacher", batch_size=batch_size,
                desc="teacher outputs", each=lambda feats: {n: feats[n].float() for n in missing}))
        return {n: outputs[n] for n in names}


ANY = None
# (reads_teacher, decoded_at_random, cache, cache_teacher, augmented) -> mode: the module
# docstring's table, row for row; ANY matches either value, and every input matches one row
MODE_RULE: tuple[tuple[tuple[bool | None, ...], str], ...] = (
    ((False, ANY, ANY, ANY, ANY), "none"),  # no term reads a teacher feature, or no teacher
    ((True, True, True, ANY, ANY), "refused"),  # a cache holds fixed views; the source decodes new ones
    ((True, True, False, ANY, ANY), "live"),  # a new view of every sample every epoch
    ((True, False, True, ANY, ANY), "disk"),  # cache: (augmented views, when augmented)
    ((True, False, False, True, False), "memory"),  # the same inputs every epoch: computed once
    ((True, False, False, True, True), "live"),  # random augmentation and no cache
    ((True, False, False, False, ANY), "live"),  # cache_teacher: false
)


def teacher_mode(reads_teacher: bool, decoded_at_random: bool, cache: bool, cache_teacher: bool,
                 augmented: bool) -> str:
    """Where a stage's teacher features come from: ``"none"``, ``"live"``, ``"memory"``,
    ``"disk"``, or ``"refused"`` (a disk cache of a source that decodes at random), by the row
    of ``MODE_RULE`` (the module docstring's table) that the stage's case matches.

    Args:
        reads_teacher: a term reads a teacher feature and there is a teacher.
        decoded_at_random: the source draws random crops / flips as it decodes (``Inputs.random``).
        cache: the stage has a ``cache:`` section (a disk cache).
        cache_teacher: the stage's ``cache_teacher``.
        augmented: the stage's ``augment`` shifts or flips.
    """
    case = (reads_teacher, decoded_at_random, cache, cache_teacher, augmented)
    return next(mode for row, mode in MODE_RULE if all(r is ANY or r == bool(c) for r, c in zip(row, case)))


class TeacherSource:
    """The teacher features of a stage's batches (the student's view of a batch is drawn by
    ``data.augment.Augment``; with a disk cache, the source gives the features of that view).

    Args:
        teacher: the frozen teacher, or None for a stage whose terms read no teacher feature.
        names: the teacher features the terms read; ``derived``: those computed from a tap.
        store, memory: a disk cache, or the in-memory outputs (at most one of them).
    """

    def __init__(self, teacher: nn.Module | None, names: list[str], derived: dict,
                 store: TeacherCache | None = None, memory: dict | None = None, amp: str | bool = False):
        self.teacher, self.store, self.memory, self.amp = teacher, store, memory, amp
        self.taps = FeatureTaps(teacher, names, "teacher", derived) if teacher is not None else None

    @property
    def mode(self) -> str:
        return ("none" if self.taps is None else "disk" if self.store is not None
                else "memory" if self.memory is not None else "live")

    @property
    def views(self) -> torch.Tensor | None:
        """The parameters of the disk cache's views of every sample, ``(N, V, 3)``, for the
        student's ``Augment``; None without a disk cache."""
        return self.store.params if self.store is not None else None

    def features(self, xb: torch.Tensor, index: torch.Tensor, view, device) -> dict | None:
        """The teacher features of the batch ``xb`` as the student sees it (``index``: its samples'
        positions, on the CPU; ``view``: the cached view of each that ``Augment`` drew, or None)."""
        if self.taps is None:
            return None
        if self.store is not None:
            feats = self.store.get(self.taps.sources, index, view, device)
            return apply_derived({**feats, **self.taps.constants()}, self.taps.derived)
        if self.memory is not None:
            index = index.to(device)
            feats = {k: v[index] for k, v in self.memory.items()}  # float32 already
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
    augment = bool(stage.augment.shift or stage.augment.flip)
    decoded_at_random = bool(getattr(x, "random", False))  # a source drawing random crops / flips as it decodes
    mode = teacher_mode(bool(names) and teacher is not None, decoded_at_random, stage.cache is not None,
                        stage.cache_teacher, augment)
    if mode == "none":
        return TeacherSource(None, [], {})
    if mode == "refused":
        raise KDistillError(f"stages ({stage.name}): cache stores the teacher's outputs of fixed views, but the "
                            "source decodes every sample at random (data.images random_crop or flip); turn those "
                            "off for a cached stage (the stage's augment shift/flip is cached by views), or drop cache.")
    source = TeacherSource(teacher, names, objective.teacher_derived, amp=stage.amp)
    if mode == "live":
        return source
    source.taps.remove()  # outputs computed ahead: the hooks would only hold on to a batch
    if mode == "disk":
        cache = stage.cache
        source.store = build_cache(teacher, source.taps.sources, x, cache.dir, device,
                                   stage.augment.model_dump() if augment else None, cache.views, seed, cache.topk,
                                   cache.dtype, field=f"stages ({stage.name}): cache.dir")
    else:
        with eval_mode(teacher):
            source.memory = (memo or TeacherMemo()).outputs(teacher, source.taps.sources, x, device)
    return source
