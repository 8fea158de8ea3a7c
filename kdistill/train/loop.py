"""The training loop of one stage: setup, step and epoch, read top to bottom.

The teacher is frozen (eval mode, no gradients); where its features come from (live, memory,
disk) is the ``TeacherSource``'s business, and the view of a batch the student sees is the
data layer's ``Augment``'s (a disk cache's views, when it has some). The loop knows no loss, feature or model family by
name: it feeds the objective the student's taps and the source's teacher features.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from kdistill import distributed, progress
from kdistill.data.augment import Augment
from kdistill.data.batch import Batch
from kdistill.data.loader import BatchLoader
from kdistill.data.samples import Inputs, as_inputs
from kdistill.errors import KDistillError, shown
from kdistill.models.taps import FeatureTaps
from kdistill.objective.core import Objective
from kdistill.recipe.schema import LoaderSpec
from kdistill.train.checkpoint import rng_state, set_rng_state
from kdistill.train.optim import make_optimizer, make_schedule, no_decay_params
from kdistill.train.state import RunState
from kdistill.train.teacher import TeacherMemo, TeacherSource, autocast, teacher_source


@dataclass
class Hooks:
    """What the run asks of the loop besides training.

    Args:
        on_epoch_end: called with (epoch, mean of each logged term) after every epoch.
        checkpoint: called (to write one) after every epoch, every ``checkpoint_every`` steps (0:
            epoch ends only) and when ``stop`` is set, the ``Trainer`` at the position it saves.
        state: the run's stateful objects, which the stage's loop joins (``loop``) while it
            trains: a checkpoint saves it, and one resumed from gives it its state back.
        stop: set (by SIGINT/SIGTERM) to write a checkpoint and stop cleanly.
        desc: the stage's name in messages and the bar (shown where the job shows progress:
            ``kdistill.progress``).
        log_every: steps between readings of the terms (the bar's figures, the check that they
            are finite); the steps between stay on the device, never waiting for it.
    """

    on_epoch_end: Callable[[int, dict], None] | None = None
    checkpoint: Callable[[], None] | None = None
    checkpoint_every: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    desc: str = "train"
    log_every: int = 25
    state: RunState | None = None


@dataclass
class Trainer:
    """One stage's training state: built by ``setup``, advanced by ``step`` and ``run_epoch``."""

    model: nn.Module
    forward: nn.Module  # the model as called: wrapped for DDP and torch.compile where asked
    objective: Objective
    stage: object  # the recipe's StageSpec
    device: torch.device
    x: Inputs
    y: torch.Tensor
    source: TeacherSource
    augment: Augment  # the student's view of each batch
    loader: BatchLoader
    student_taps: FeatureTaps
    params: list
    objective_params: list
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    generator: torch.Generator
    seed: int = 0
    layout: torch.memory_format = torch.contiguous_format
    # the loop's position, saved in checkpoints
    epoch: int = 0
    skip: int = 0  # steps of the current epoch already done (resumed inside an epoch)
    order: torch.Tensor | None = None
    sums: dict = field(default_factory=dict)
    means: dict = field(default_factory=dict)
    elapsed: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def set_position(self, epoch: int, step: int, order: torch.Tensor | None = None, sums: dict | None = None) -> None:
        """The loop's position, as a checkpoint written now saves it: ``step`` steps of ``epoch``
        done, in the epoch's ``order``, with the running ``sums`` of its terms."""
        self.epoch, self.skip, self.order, self.sums = epoch, step, order, sums if sums is not None else {}

    def state_dict(self) -> dict:
        """Everything a resumed run needs to continue exactly from this step."""
        return {"epoch": self.epoch, "step": self.skip, "order": self.order,
                "sums": {k: float(v) for k, v in self.sums.items()}, "means": dict(self.means),
                "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                "scaler": self.scaler.state_dict(), "generator": self.generator.get_state(), "rng": rng_state(),
                "elapsed": self.elapsed + time.perf_counter() - self.started}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])
        self.generator.set_state(state["generator"])
        set_rng_state(state["rng"])
        self.epoch, self.skip, self.elapsed, self.means = state["epoch"], state["step"], state["elapsed"], state["means"]
        self.order, self.sums = state["order"], dict(state["sums"])

    def close(self) -> None:
        self.student_taps.remove()
        self.source.close()
        self.loader.close()


def setup(model: nn.Module, objective: Objective, x, y: torch.Tensor, stage, device: torch.device,
          teacher: nn.Module | None = None, seed: int = 0, memo: TeacherMemo | None = None,
          loader: LoaderSpec | None = None) -> Trainer:
    """The stage's optimiser, schedule, wrapped model, data placement, batch loader and teacher source."""
    generator = torch.Generator().manual_seed(seed)
    x = as_inputs(x)
    objective.bind(model)
    params = objective.params  # the model's trainable parameters
    objective_params = [p for p in objective.parameters() if p.requires_grad]
    optimizer = make_optimizer(params + objective_params, stage.optimizer, no_decay_params(model, objective))
    steps_per_epoch = math.ceil(len(x) / stage.batch_size)
    schedule = make_schedule(optimizer, stage.epochs * steps_per_epoch, steps_per_epoch, stage.schedule)
    scaler = torch.amp.GradScaler("cuda", enabled=stage.amp == "fp16" and device.type == "cuda")
    forward = model
    if distributed.active():  # the student in DistributedDataParallel; the frozen teacher is not
        ids = None if device.type != "cuda" else [device.index if device.index is not None
                                                  else torch.cuda.current_device()]
        forward = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if stage.compile:
        forward = torch.compile(forward, backend=stage.compile if isinstance(stage.compile, str) else "inductor")
    layout = torch.channels_last if stage.channels_last and len(x.shape) == 4 else torch.contiguous_format
    if stage.channels_last:
        for m in (model, teacher):
            if m is not None:
                m.to(memory_format=layout)
    stored = x.in_memory_bytes()
    on_device = device.type == "cuda" and stored is not None and stored < 2**31
    if on_device:  # small data sets held in memory live on the GPU, as stored: no copy per step
        x, y = x.to(device), y.to(device)
    source = teacher_source(teacher, objective, x, stage, seed, device, memo)
    augment = Augment(stage.augment.shift, stage.augment.flip, views=source.views)
    loader = loader or LoaderSpec()
    workers = 0 if on_device else loader.workers  # data on the GPU is indexed in place
    batches = BatchLoader(x, y, workers, loader.prefetch, pin=device.type == "cuda", nice=loader.nice)
    # hooks last: a teacher source that fails (a bad cache) leaves no hook on the student
    student_taps = FeatureTaps(model, objective.taps()[0], "student", objective.student_derived)
    return Trainer(model, forward, objective, stage, device, x, y, source, augment, batches, student_taps, params,
                   objective_params, optimizer, schedule, scaler, generator, seed, layout)


def _losses(t: Trainer, batch: Batch, shares: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    """The objective on ``batch``, each term weighted by the batch's ``shares`` of the step's items:
    (total loss, {term: value})."""
    xb, view = t.augment(batch.x, batch.index, t.generator)  # with a disk cache: a cached view
    xb = xb.contiguous(memory_format=t.layout)
    teacher_feats = t.source.features(xb, batch.index, view, t.device)
    index = batch.index.to(t.device)  # for losses that keep a memory of samples
    with autocast(t.device, t.stage.amp):
        student_feats = t.student_taps.collect(t.forward(xb))
        return t.objective(student_feats, teacher_feats, batch.y, index, xb, shares)


def micro_batches(batch: Batch, parts: int) -> list[Batch]:
    """``batch`` split into at most ``parts`` consecutive micro-batches (gradient accumulation)."""
    if parts <= 1 or len(batch.index) <= 1:
        return [batch]
    rows = torch.arange(len(batch.index)).tensor_split(min(parts, len(batch.index)))
    return [Batch(batch.index[r], batch.x[r.to(batch.x.device)], batch.y[r.to(batch.y.device)]) for r in rows]


def step(t: Trainer, batch: Batch, counted: bool = True) -> dict[str, torch.Tensor]:
    """One optimisation step on ``batch``, this process's share of the global batch; returns this
    share's part of the step's terms (``loss`` first), on the device: over the processes they
    add up to the step's values.

    Each term is a mean over some kind of item (samples, labelled samples, counted tokens: its
    loss's contract says). The batch is split into ``stage.accumulate`` micro-batches whose
    gradients add up before the one update (the activations of one at a time), and under DDP
    each process holds a share: the items are counted over all of them first (one all-reduce),
    and each micro-batch's mean is weighted by its share of the count, so that the update is the
    one that one process would make on the whole batch. ``counted`` False: a stand-in batch of a
    process whose share is empty (``distributed.local_share``), weighted 0."""
    stage = t.stage
    parts = micro_batches(batch, stage.accumulate)
    counts = [t.objective.counts(part.x, part.y) * counted for part in parts]
    whole = distributed.sum_tensor(torch.stack(counts).sum(0)).clamp_min(1)
    world = distributed.world_size()  # DDP averages gradients over the processes: undone here
    kinds = t.objective.kinds()
    t.optimizer.zero_grad(set_to_none=True)
    totals: dict[str, torch.Tensor] = {}
    for k, (part, count) in enumerate(zip(parts, counts)):
        shares = dict(zip(kinds, count / whole))
        # several processes: gradients are averaged across them on the last micro-batch only
        sync = k == len(parts) - 1 or not hasattr(t.forward, "no_sync")
        with contextlib.nullcontext() if sync else t.forward.no_sync():
            loss, terms = _losses(t, part, shares)
            t.scaler.scale(loss * world if world > 1 else loss).backward()
        for name, value in {"loss": loss.detach(), **terms}.items():
            totals[name] = totals[name] + value if name in totals else value
    # DDP has averaged the student's gradients; the objective's own modules (adapters, heads,
    # learned variances) are averaged here
    distributed.average_gradients(t.objective_params)
    if stage.grad_clip:
        t.scaler.unscale_(t.optimizer)
        torch.nn.utils.clip_grad_norm_(t.params + t.objective_params, stage.grad_clip)
    t.scaler.step(t.optimizer)
    t.scaler.update()
    t.schedule.step()
    return totals


def _read(sums: dict[str, torch.Tensor], bad: torch.Tensor, desc: str, epoch: int) -> dict[str, float]:
    """The epoch's running sums of the terms, summed over the processes, on the host: the loop's
    one wait for the device, every ``log_every`` steps. Raises if a term stopped being finite on
    any process (``bad``: the first step where this process's loss was not, or -1)."""
    if not sums:
        return {}
    keys = sorted(sums)
    summed = distributed.sum_tensor(torch.stack([sums[k] for k in keys]))  # a NaN anywhere is a NaN everywhere
    *values, first = torch.cat([summed, bad.to(summed.dtype).view(1)]).tolist()
    totals = dict(zip(keys, values))
    if not all(math.isfinite(v) for v in values):
        name = next((k for k in keys if k != "loss" and not math.isfinite(totals[k])), "loss")
        when = f"step {int(first)}" if first >= 0 else "a step of another process"
        raise KDistillError(f"{desc}: loss term {shown(name)} became {totals[name]:.3g} at epoch {epoch + 1}, {when}; "
                            "lower the learning rate or that term's weight")
    return totals


def run_epoch(t: Trainer, epoch: int, hooks: Hooks) -> None:
    """One pass over the stage's data in a seeded order (or the rest of one, when resumed inside it)."""
    stage = t.stage
    t.model.train()
    t.objective.train()
    dtype = torch.float32 if t.device.type == "mps" else torch.float64
    if t.skip:  # resumed inside this epoch: its order and running sums
        order = t.order
        sums = {k: torch.tensor(v, dtype=dtype, device=t.device) for k, v in t.sums.items()}
    else:
        order, sums = torch.randperm(len(t.x), generator=t.generator), {}
    batches = order.split(stage.batch_size)
    # this process's share of each batch still to do, fetched in order (by workers, if any)
    shares = [distributed.local_share(index) for index in batches[t.skip:]]
    todo = t.loader.epoch([share for share, _ in shares], view=(t.seed, epoch))
    bar = progress.over(todo, f"{hooks.desc} {epoch + 1}/{stage.epochs}", len(batches), t.skip)
    bad = torch.tensor(-1, device=t.device)  # the first step whose loss was not finite
    totals: dict[str, float] = {}
    for done, ((index, xb, yb), (_, counted)) in enumerate(zip(bar, shares), start=t.skip + 1):
        # x stays where it is stored (small sets: on the GPU); a batch is moved as it is drawn
        batch = Batch.fetched(index, xb, yb, t.device, t.x)
        terms = step(t, batch, counted)
        size = len(batches[done - 1])  # the global batch: terms are this process's share of its means
        for name, value in terms.items():
            sums[name] = sums[name] + value.to(dtype) * size if name in sums else value.to(dtype) * size
        bad = torch.where((bad < 0) & ~torch.isfinite(terms["loss"]), done, bad)
        last = done == len(batches)
        stopping = hooks.stop.is_set()
        saving = hooks.checkpoint is not None and not last and (stopping or (
            hooks.checkpoint_every and (epoch * len(batches) + done) % hooks.checkpoint_every == 0))
        if last or saving or stopping or done % hooks.log_every == 0:
            totals = _read(sums, bad, hooks.desc, epoch)  # nothing non-finite reaches a checkpoint
            seen = min(done * stage.batch_size, len(t.x))  # samples so far (only the last batch is short)
            bar.set_postfix({k: f"{v / seen:.3f}" for k, v in totals.items()}, refresh=False)
        if saving:
            t.set_position(epoch, done, order, sums)
            hooks.checkpoint()
        if stopping and not last:
            raise KDistillError(f"{hooks.desc}: stopped by a signal at epoch {epoch + 1}, step {done}")
    t.skip = 0
    t.means = {name: total / len(t.x) for name, total in totals.items()}
    t.means["lr"] = t.schedule.get_last_lr()[0]


def train_stage(model: nn.Module, objective: Objective, x, y: torch.Tensor, stage,
                device: torch.device, teacher: nn.Module | None = None, *, seed: int = 0,
                memo: TeacherMemo | None = None, hooks: Hooks | None = None,
                loader: LoaderSpec | None = None) -> dict[str, float]:
    """Train ``model`` (and the objective's adapters) on ``(x, y)`` as ``stage`` (the recipe's
    ``StageSpec``) says.

    Args:
        x: inputs ``(N, ...)``: ``Inputs`` (a view of a source, fetched batch by batch) or a
            tensor; y: labels ``(N,)``, ``-1`` where a label is withheld.
        teacher: the frozen teacher, needed when the objective reads teacher features.
        seed: the stage's seed (order, augmentation); memo: teacher outputs shared across stages.
        loader: how batches are fetched (``data.loader``: workers, prefetch); default in-process.
        A resumed run's loop gets its state from ``hooks.state`` (the checkpoint's ``loop``), and
        training continues exactly from it.
    Returns:
        the last epoch's mean terms, plus ``seconds``.
    """
    hooks = hooks or Hooks(desc=stage.name)
    t = setup(model, objective, x, y, stage, device, teacher, seed, memo, loader)
    try:
        if hooks.state is not None:
            hooks.state.register("loop", t)  # resumed: its state given back here, after setup
        t.started = time.perf_counter()
        for epoch in range(t.epoch, stage.epochs):
            run_epoch(t, epoch, hooks)
            if hooks.on_epoch_end is not None:
                hooks.on_epoch_end(epoch, t.means)
            if hooks.checkpoint is not None:
                t.set_position(epoch + 1, 0)
                hooks.checkpoint()
            if hooks.stop.is_set():
                raise KDistillError(f"{hooks.desc}: stopped by a signal after epoch {epoch + 1}")
    finally:
        if hooks.state is not None:
            hooks.state.unregister("loop")
        t.close()
    return {**t.means, "seconds": t.elapsed + time.perf_counter() - t.started}
