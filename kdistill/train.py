"""The training loop: one stage, read top to bottom.

The teacher is frozen (eval mode, no gradients). Its outputs are computed once and reused
every epoch: in memory when the stage has no random augmentation, or on disk (``cache:``),
augmented views included, read back memory-mapped.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm

from kdistill import distributed
from kdistill.cache import build_cache, fingerprint
from kdistill.checkpoint import rng_state, set_rng_state
from kdistill.errors import KDistillError
from kdistill.data.augment import random_shift_flip, shift_flip
from kdistill.models.taps import OUTPUT, WEIGHTS, FeatureTaps, apply_derived
from kdistill.objective import Objective


@dataclass
class StageConfig:
    """Plain settings of one stage (the recipe's stage section, minus data and losses)."""

    epochs: int = 1
    batch_size: int = 128
    optimizer: dict = field(default_factory=lambda: {"name": "sgd", "lr": 0.05})
    schedule: dict = field(default_factory=lambda: {"name": "cosine"})
    grad_clip: float | None = 5.0
    augment: dict = field(default_factory=dict)
    amp: str | bool = False
    cache_teacher: bool = True
    cache: dict | None = None  # a teacher-output cache on disk: dir, views, topk, dtype
    channels_last: bool = False  # NHWC memory layout for image batches (faster convolutions on GPUs)
    compile: bool | str = False  # torch.compile the student (True: inductor; or a backend name)
    seed: int = 0


def make_optimizer(params, name: str = "sgd", lr: float = 0.05, momentum: float = 0.9,
                   nesterov: bool = True, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0,
                               weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def make_schedule(optimizer, total_steps: int, steps_per_epoch: int, name: str = "cosine",
                  warmup_epochs: float = 0.0, step_size: int = 10, gamma: float = 0.1):
    """A per-step LR multiplier: linear warm-up, then cosine to 0, step decay or constant."""
    warmup = int(warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if name == "cosine":
            progress = (step - warmup) / max(1, total_steps - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        if name == "step":
            return gamma ** (step // (step_size * steps_per_epoch))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# set by SIGINT/SIGTERM while a run trains: the loop writes a checkpoint and stops cleanly
STOP = threading.Event()

# Teacher outputs of the last few (teacher, data) pairs, tap by tap: later stages and runs in
# the same process that ask for the same teacher on the same inputs reuse them.
_memo: OrderedDict = OrderedDict()
MEMO_ENTRIES = 2


@torch.no_grad()
def teacher_outputs(teacher: nn.Module, names: list[str], x: torch.Tensor, device: torch.device,
                    batch_size: int = 512) -> dict[str, torch.Tensor]:
    """Run the frozen teacher once over ``x``; returns {tap: (N, ...)} on ``device``.

    Keyed by a fingerprint of the teacher's state and of ``x``, so a changed teacher or data
    set never reuses stale outputs. Intermediate features are kept in half precision to halve
    their memory; logits in fp32.
    """
    key = (fingerprint(teacher.state_dict().values()), fingerprint([x]), str(device))
    outputs = _memo.pop(key, {})
    _memo[key] = outputs  # most recently used last
    while len(_memo) > MEMO_ENTRIES:
        _memo.popitem(last=False)
    missing = [n for n in names if n not in outputs]
    if missing:
        chunks: dict[str, list[torch.Tensor]] = {n: [] for n in missing}
        with FeatureTaps(teacher, missing, "teacher") as taps:
            for i in range(0, len(x), batch_size):
                feats = taps.collect(teacher(x[i : i + batch_size].to(device)))
                for n in missing:
                    chunks[n].append(feats[n].float() if n == OUTPUT else feats[n].half())
        outputs.update({n: torch.cat(parts) for n, parts in chunks.items()})
    return {n: outputs[n] for n in names}


def _autocast(device: torch.device, amp: str | bool):
    if not amp or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def train_stage(
    model: nn.Module,
    objective: Objective,
    x: torch.Tensor,
    y: torch.Tensor,
    config: StageConfig,
    device: torch.device,
    teacher: nn.Module | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    desc: str = "train",
    progress: bool = True,
    checkpoint: Callable[[dict], None] | None = None,
    checkpoint_every: int = 0,
    resume: dict | None = None,
) -> dict[str, float]:
    """Train ``model`` (and the objective's adapters) on ``(x, y)`` for ``config.epochs``.

    Args:
        x: inputs ``(N, ...)``; y: labels ``(N,)``, ``-1`` where a label is withheld.
        teacher: the frozen teacher, needed when the objective reads teacher features.
        on_epoch_end: called with (epoch, mean of each logged term) after every epoch.
        checkpoint: called with the loop's state after every epoch, every ``checkpoint_every``
            steps (0: epoch ends only) and when SIGINT/SIGTERM asked the run to stop.
        resume: a state ``checkpoint`` was given: training continues exactly from it.
    Returns:
        the last epoch's mean terms, plus ``seconds``.
    """
    generator = torch.Generator().manual_seed(config.seed)
    student_names, teacher_names = objective.taps()
    student_taps = FeatureTaps(model, student_names, "student", objective.student_derived)
    teacher_taps = None
    if objective.uses_teacher:
        teacher_taps = FeatureTaps(teacher, teacher_names, "teacher", objective.teacher_derived)

    trainable = [p for p in model.parameters() if p.requires_grad]
    objective_params = [p for p in objective.parameters() if p.requires_grad]
    params = trainable + objective_params
    optimizer = make_optimizer(params, **config.optimizer)
    steps_per_epoch = math.ceil(len(x) / config.batch_size)
    schedule = make_schedule(optimizer, config.epochs * steps_per_epoch, steps_per_epoch, **config.schedule)
    scaler = torch.amp.GradScaler("cuda", enabled=config.amp == "fp16" and device.type == "cuda")
    augment = config.augment.get("shift", 0) or config.augment.get("flip", False)

    forward = model
    if distributed.world_size() > 1:  # the student in DistributedDataParallel; the frozen teacher is not
        forward = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        forward = torch.compile(forward, backend=config.compile if isinstance(config.compile, str) else "inductor")
    layout = torch.channels_last if config.channels_last and x.dim() == 4 else torch.contiguous_format
    if config.channels_last:
        model.to(memory_format=layout)
        if teacher is not None:
            teacher.to(memory_format=layout)
    if device.type == "cuda" and x.numel() * x.element_size() < 2**31:
        x, y = x.to(device), y.to(device)  # small data sets live on the GPU: no copy per step

    cached, store = None, None
    if teacher_taps is not None and config.cache:  # on disk, views included; every rank builds its shards
        store = build_cache(teacher, teacher_taps.sources, x, config.cache["dir"], device,
                            config.augment if augment else None, config.cache.get("views", 1), config.seed,
                            config.cache.get("topk"), config.cache.get("dtype", "float16"))
    elif teacher_taps is not None and config.cache_teacher and not augment:
        teacher.eval()
        cached = teacher_outputs(teacher, teacher_taps.sources, x, device)

    start_epoch, skip, elapsed, means = 0, 0, 0.0, {}
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        schedule.load_state_dict(resume["schedule"])
        scaler.load_state_dict(resume["scaler"])
        generator.set_state(resume["generator"])
        set_rng_state(resume["rng"])
        start_epoch, skip, elapsed, means = resume["epoch"], resume["step"], resume["elapsed"], resume["means"]
    start = time.perf_counter()

    def loop_state(epoch: int, step: int, order, sums: dict) -> dict:
        return {"epoch": epoch, "step": step, "order": order, "sums": dict(sums), "means": dict(means),
                "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                "scaler": scaler.state_dict(), "generator": generator.get_state(), "rng": rng_state(),
                "elapsed": elapsed + time.perf_counter() - start}

    try:
        for epoch in range(start_epoch, config.epochs):
            model.train()
            objective.train()
            if skip:  # resumed inside this epoch: its order and running sums
                order, sums = resume["order"], dict(resume["sums"])
            else:
                order, sums = torch.randperm(len(x), generator=generator), {}
            batches = order.split(config.batch_size)
            bar = tqdm(batches[skip:], desc=f"{desc} {epoch + 1}/{config.epochs}", initial=skip,
                       total=len(batches), disable=not progress or not distributed.is_main(), leave=False,
                       dynamic_ncols=True)
            for done, index in enumerate(bar, start=skip + 1):
                index = distributed.local_share(index)  # the whole batch on one process
                xb = x[index].to(device, non_blocking=True)  # (B, ...), x stays on the CPU (small sets: on the GPU)
                yb = y[index].to(device, non_blocking=True)  # (B,)
                view = None
                if store is not None and augment:  # one of the cached views, the teacher's own
                    view = torch.randint(store.views, (len(index),), generator=generator)
                    xb = shift_flip(xb, store.params[index, view], config.augment.get("shift", 0))
                elif augment:
                    xb = random_shift_flip(xb, config.augment.get("shift", 0),
                                           config.augment.get("flip", False), generator)
                xb = xb.contiguous(memory_format=layout)
                teacher_feats = None
                if store is not None:
                    teacher_feats = apply_derived(store.get(teacher_taps.sources, index, view, device),
                                                  teacher_taps.derived)
                index = index.to(device)  # for cached teacher outputs and losses that keep a memory
                if cached is not None:
                    teacher_feats = {k: v[index].float() for k, v in cached.items()}
                    teacher_feats = apply_derived(teacher_feats, teacher_taps.derived)
                elif teacher_taps is not None and store is None:  # the textbook loop: a live teacher
                    with torch.no_grad(), _autocast(device, config.amp):
                        teacher_feats = teacher_taps.collect(teacher(xb))
                with _autocast(device, config.amp):
                    student_feats = student_taps.collect(forward(xb))
                    if WEIGHTS in student_names:
                        student_feats[WEIGHTS] = trainable
                    loss, terms = objective(student_feats, teacher_feats, yb, index)

                if not torch.isfinite(loss.detach()):
                    bad = next((k for k, v in terms.items() if not math.isfinite(float(v))), "loss")
                    raise KDistillError(
                        f"{desc}: loss term {bad!r} became {float(terms.get(bad, loss)):.3g} at epoch {epoch + 1}, "
                        f"step {done}; lower the learning rate or that term's weight")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                # several processes: DDP has averaged the student's gradients; the objective's own
                # modules (adapters, heads, learned variances) are averaged here
                distributed.average_gradients(objective_params)
                if config.grad_clip:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                schedule.step()

                step = {"loss": loss.detach(), **terms}
                for name, value in step.items():
                    sums[name] = sums.get(name, 0.0) + float(value) * len(index)
                bar.set_postfix({k: f"{float(v):.3f}" for k, v in step.items()}, refresh=False)
                last = done == len(batches)
                if checkpoint is not None and not last and (STOP.is_set() or (
                        checkpoint_every and (epoch * len(batches) + done) % checkpoint_every == 0)):
                    checkpoint(loop_state(epoch, done, order, sums))
                if STOP.is_set() and not last:
                    raise KDistillError(f"{desc}: stopped by a signal at epoch {epoch + 1}, step {done}")
            skip = 0
            means = {name: total / len(x) for name, total in distributed.sum_across(sums, device).items()}
            means["lr"] = schedule.get_last_lr()[0]
            if on_epoch_end is not None:
                on_epoch_end(epoch, means)
            if checkpoint is not None:
                checkpoint(loop_state(epoch + 1, 0, None, {}))
            if STOP.is_set():
                raise KDistillError(f"{desc}: stopped by a signal after epoch {epoch + 1}")
    finally:
        student_taps.remove()
        if teacher_taps is not None:
            teacher_taps.remove()
    return {**means, "seconds": elapsed + time.perf_counter() - start}
