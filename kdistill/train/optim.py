"""The optimiser and the per-step learning-rate schedule of a stage, from the recipe's
``optimizer`` and ``schedule`` sections (whose defaults are the only ones)."""

from __future__ import annotations

import math

import torch

from kdistill.recipe import OptimizerSpec, ScheduleSpec


def make_optimizer(params, spec: OptimizerSpec) -> torch.optim.Optimizer:
    """SGD (Nesterov when it has momentum), Adam or AdamW over ``params``."""
    if spec.name == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum,
                               nesterov=spec.nesterov and spec.momentum > 0, weight_decay=spec.weight_decay)
    if spec.name == "adam":
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)


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
