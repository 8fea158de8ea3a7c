"""The optimiser and the per-step learning-rate schedule of a stage, from the recipe's
``optimizer`` and ``schedule`` sections (whose defaults are the only ones)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from kdistill.recipe.schema import OptimizerSpec, ScheduleSpec

NORMS = (_NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.RMSNorm)


def no_decay_params(*modules: nn.Module) -> set[int]:
    """The ids of the parameters that weight decay leaves alone unless ``decay_bias_and_norm``:
    biases, and the weights of normalisation layers (batch, layer, group, RMS norms, and any module
    whose class is named for one, as transformers' ``LlamaRMSNorm``). The rule of the Hugging Face
    Trainer; judged by names and module types, never by shapes, so a lazily built layer (a loss's
    head, a ``LazyLinear``) falls in the same group before and after it has its shape, and a
    resumed run rebuilds the groups its checkpoint holds."""
    ids = set()
    for module in modules:
        for m in module.modules():
            norm = isinstance(m, NORMS) or "norm" in type(m).__name__.lower()
            ids.update(id(p) for name, p in m.named_parameters(recurse=False) if norm or name.endswith("bias"))
    return ids


def param_groups(params, spec: OptimizerSpec, no_decay: set[int] = frozenset()) -> list[dict]:
    """``params`` in groups by weight decay: ``spec.weight_decay`` on all but those in
    ``no_decay`` (``no_decay_params``), which decay only with ``spec.decay_bias_and_norm``. One group
    where all decay alike (as before the split, so that a run started then resumes with its
    optimiser state)."""
    params = list(params)
    if spec.decay_bias_and_norm or spec.weight_decay == 0 or not no_decay:
        return [{"params": params, "weight_decay": spec.weight_decay}]
    groups = [{"params": [p for p in params if id(p) not in no_decay], "weight_decay": spec.weight_decay},
              {"params": [p for p in params if id(p) in no_decay], "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def make_optimizer(params, spec: OptimizerSpec, no_decay: set[int] = frozenset()) -> torch.optim.Optimizer:
    """SGD (Nesterov when it has momentum), Adam or AdamW over ``params`` (``param_groups``)."""
    groups = param_groups(params, spec, no_decay)
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
