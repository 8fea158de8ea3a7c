"""Running a model for its outputs, not for training: in batches, without gradients, in eval
mode, with every module's own mode restored afterwards even when the model raises."""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import nn

from kdistill.data.samples import Inputs, take
from kdistill.errors import KDistillError
from kdistill.models.taps import FeatureTaps


@contextlib.contextmanager
def eval_mode(*models: nn.Module):
    """Every module of ``models`` in eval mode inside the block; each module's own mode after."""
    modes = [(m, m.training) for model in models for m in model.modules()]
    try:
        for model in models:
            model.eval()
        yield
    finally:
        for module, training in modes:
            module.training = training


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode and no gradients: a teacher while a student learns from it."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _cat(parts: list):
    """Batches joined; a feature that is not a tensor (a model's ``head``) is the same in every
    batch and kept once."""
    if isinstance(parts[0], dict):
        return {name: torch.cat([p[name] for p in parts]) if torch.is_tensor(value) else value
                for name, value in parts[0].items()}
    return torch.cat(parts)


@torch.no_grad()
def forward_batches(model: nn.Module, x, device, names: list[str] | None = None, *,
                    owner: str = "model", derived: dict | None = None, batch_size: int = 512,
                    transform: Callable[[torch.Tensor, slice], torch.Tensor] | None = None,
                    each: Callable | None = None):
    """``model`` over ``x (N, ...)`` in batches of ``batch_size`` (``x`` a tensor or ``Inputs``,
    fetched and moved to ``device`` batch by batch, or any sliceable sequence that ``transform``
    turns into inputs).

    Args:
        names: feature taps to collect (``models.taps``; ``"logits"`` is the output); None:
            the model's output alone.
        derived: features computed from tapped ones, as for ``FeatureTaps``.
        transform: applied to each batch on ``device`` with its slice of ``x`` (e.g. augmentation).
        each: applied to each batch's result (a tensor, or ``{name: tensor}``) before the
            batches are joined, e.g. ``lambda t: t.float().cpu()``.
    Returns:
        the joined results: ``(N, ...)``, or ``{name: (N, ...)}`` when ``names`` is given.
    """
    parts = []
    with eval_mode(model), contextlib.ExitStack() as stack:
        taps = stack.enter_context(FeatureTaps(model, names, owner, derived)) if names is not None else None
        for i in range(0, len(x), batch_size):
            where = slice(i, min(i + batch_size, len(x)))
            xb = take(x, where, device) if isinstance(x, (torch.Tensor, Inputs)) else x[where]
            if transform is not None:
                xb = transform(xb, where)
            out = model(xb)
            out = taps.collect(out) if taps is not None else out
            parts.append(each(out) if each is not None else out)
    if not parts:
        raise ValueError("forward_batches: no inputs (x is empty)")
    return _cat(parts)


def dry_features(model: nn.Module, names: list[str], owner: str, sample: torch.Tensor,
                 derived: dict | None = None) -> dict[str, torch.Tensor]:
    """The features ``names`` of one forward pass on ``sample`` (for the shapes adapters need).
    A model that refuses the data's inputs fails in one line naming the inputs' shape."""
    try:
        return forward_batches(model, sample, sample.device, names, owner=owner, derived=derived,
                               batch_size=max(1, len(sample)))
    except (RuntimeError, ValueError, TypeError, IndexError) as err:  # the model refused the data
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise KDistillError(
            f"{owner}: the model fails on the data's inputs of shape {tuple(sample.shape[1:])} "
            f"({sample.dtype}): {first[:300]}; make {owner}.args fit the data (e.g. in_features, "
            "image_size, in_channels).") from None
