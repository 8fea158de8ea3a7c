"""The optimiser and the per-step learning-rate schedule of a stage, from the recipe's
``optimizer`` and ``schedule`` sections (whose defaults are the only ones)."""

from __future__ import annotations

import math

import torch
from torch.nn.parameter import is_lazy

from kdistill.recipe import OptimizerSpec, ScheduleSpec


def param_groups(params, spec: OptimizerSpec) -> list[dict]:
    """``params`` in groups by weight decay: weight matrices and kernels (2 or more dimensions)
    decayed by ``spec.weight_decay``, the rest (biases, normalisation weights, scales) only with
    ``spec.decay_bias_and_norm``. Parameters not yet shaped when the stage starts (the lazily built
    heads and variances of some losses, e.g. CRD's and VID's) are counted with the rest. One group
    where all decay alike (as before the split, so that a run started then resumes with its
    optimiser state)."""
    params = list(params)
    if spec.decay_bias_and_norm or spec.weight_decay == 0:
        return [{"params": params, "weight_decay": spec.weight_decay}]
    matrix = [not is_lazy(p) and p.dim() >= 2 for p in params]
    groups = [{"params": [p for p, m in zip(params, matrix) if m], "weight_decay": spec.weight_decay},
              {"params": [p for p, m in zip(params, matrix) if not m], "weight_decay": 0.0}]
    return [g for g in groups if g["params"]] or groups[:1]


def make_optimizer(params, spec: OptimizerSpec) -> torch.optim.Optimizer:
    """SGD (Nesterov when it has momentum), Adam or AdamW over ``params`` (``param_groups``)."""
    groups = param_groups(params, spec)
    if spec.name == "sgd":
        return torch.optim.SGD(groups, lr=spec.lr, momentum=spec.momentum, nesterov=spec.nesterov and spec.momentum > 0)
    if spec.name == "adam":
        return torch.optim.Adam(groups, lr=spec.lr)
    return torch.optim.AdamW(groups, lr=spec.lr)


def make_schedule(optimizer, total_steps: int, steps_per_epoch: int, spec: ScheduleSpec):
    """A per-step LR multiplier: linear warm-up, then cosine to 0, step decay or constant."""
    warmup = int(spec.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if spec.name == "cosine":
            progress = (step - warmup) / max(1, total_steps - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        if spec.name == "step":
            return spec.gamma ** (step // (spec.step_size * steps_per_epoch))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
