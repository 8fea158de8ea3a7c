"""Running a model for its outputs, not for training: in batches, without gradients, in eval
mode, with every module's own mode restored afterwards even when the model raises.

Texts (token ids and attention masks packed ``(N, 2, L)``, every one padded to the set's longest)
are run longest first, in batches of similar length, each cut to its own longest text, and the
outputs put back in the order of the inputs: the padding no text of a batch uses costs nothing.
Training batches never pass through here; they keep the order the loop draws.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm

from kdistill import progress
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


def _reordered(out, order: torch.Tensor):
    """Results of the samples ``order`` (in that order) put back in the order of the inputs."""
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order))
    if isinstance(out, dict):
        return {k: v[inverse.to(v.device)] if torch.is_tensor(v) else v for k, v in out.items()}
    return out[inverse.to(out.device)]


def text_lengths(x) -> torch.Tensor | None:
    """Each text's length in tokens (up to the last 1 of its attention mask), ``(N,)``, when ``x``
    is a view of token inputs packed ``(N, 2, L)`` (ids, mask); None for any other inputs."""
    if not isinstance(x, Inputs) or not x.source.tokens or not len(x):
        return None
    first = x.raw(slice(0, 1))
    if first.dim() != 3 or first.shape[1] != 2:  # not (ids, mask): a language model's blocks, say
        return None
    lengths = []
    for i in range(0, len(x), 4096):
        used = x.raw(slice(i, min(i + 4096, len(x))))[:, 1].ne(0)  # (B, L)
        lengths.append(torch.where(used.any(1), used.shape[1] - used.flip(1).int().argmax(1), 0))
    return torch.cat(lengths)


def _cut_padding(xb: torch.Tensor) -> torch.Tensor:
    """``(B, 2, L) -> (B, 2, l)``: the columns after the batch's longest text dropped."""
    used = xb[:, 1].ne(0).any(0).nonzero()
    return xb[..., : int(used.max()) + 1 if len(used) else 1]


def _same(a, b) -> bool:
    """Whether two results of one batch agree: the same shapes, values equal to float tolerance."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if torch.is_tensor(a):
        return (torch.is_tensor(b) and a.shape == b.shape
                and torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-5, equal_nan=True))
    return True  # not a tensor (a model's head): the same in every batch


@torch.no_grad()
def forward_batches(model: nn.Module, x, device, names: list[str] | None = None, *,
                    owner: str = "model", derived: dict | None = None, batch_size: int = 512,
                    transform: Callable[[torch.Tensor, slice | torch.Tensor], torch.Tensor] | None = None,
                    each: Callable | None = None, desc: str | None = None, bar: tqdm | None = None):
    """``model`` over ``x (N, ...)`` in batches of ``batch_size`` (``x`` a tensor or ``Inputs``,
    fetched and moved to ``device`` batch by batch, or any sliceable sequence that ``transform``
    turns into inputs).

    Texts (``Inputs`` of token ids and masks, ``(N, 2, L)``) are batched by length, longest
    first, and each batch is cut to its longest text, unless the model's outputs change when
    it is (checked once, on the batch of the shortest texts: outputs of one row per token, or
    a model that reads the padding); the results come back in the order of ``x``.

    Args:
        names: feature taps to collect (``models.taps``; ``"logits"`` is the output); None:
            the model's output alone.
        derived: features computed from tapped ones, as for ``FeatureTaps``.
        transform: applied to each batch on ``device`` with the positions of its samples in ``x``
            (a slice, or an index tensor for texts batched by length), e.g. augmentation.
        each: applied to each batch's result (a tensor, or ``{name: tensor}``) before the
            batches are joined, e.g. ``lambda t: t.float().cpu()``.
        desc: the pass's name on a bar of the samples done, shown where the job shows progress
            (``kdistill.progress``: a pass of more than a few seconds, on a terminal); None: no bar.
        bar: a bar to advance instead (a pass run in parts).
    Returns:
        the joined results: ``(N, ...)``, or ``{name: (N, ...)}`` when ``names`` is given.
    """
    if not len(x):
        raise ValueError("forward_batches: no inputs (x is empty)")
    lengths = text_lengths(x)
    order = lengths.argsort(descending=True, stable=True) if lengths is not None else None
    batches = (list(order.split(batch_size)) if order is not None else
               [slice(i, min(i + batch_size, len(x))) for i in range(0, len(x), batch_size)])
    with eval_mode(model), contextlib.ExitStack() as stack:
        taps = stack.enter_context(FeatureTaps(model, names, owner, derived)) if names is not None else None
        if bar is None:
            bar = stack.enter_context(progress.bar(len(x), desc))

        def run(xb, where):
            out = model(transform(xb, where) if transform is not None else xb)
            return taps.collect(out) if taps is not None else out

        def fetch(where):
            return take(x, where, device) if isinstance(x, (torch.Tensor, Inputs)) else x[where]

        cut, last = _probe_cut(run, fetch(batches[-1]), batches[-1]) if order is not None else (False, None)
        parts = []
        for i, where in enumerate(batches):
            if i == len(batches) - 1 and last is not None:
                out = last
            else:
                xb = fetch(where)
                out = run(_cut_padding(xb) if cut else xb, where)
            parts.append(each(out) if each is not None else out)
            bar.update(len(where) if isinstance(where, torch.Tensor) else where.stop - where.start)
    out = _cat(parts)
    parts.clear()  # at most two copies of the results at once: joined, and put back in order
    return _reordered(out, order) if order is not None else out


def predict(model: nn.Module, x: torch.Tensor, device: torch.device, batch_size: int = 512,
            desc: str | None = None) -> torch.Tensor:
    """Outputs of ``model`` (in eval mode) for inputs ``x`` ``(N, ...)``, float32 on the CPU ``(N, K)``;
    ``desc``: the pass's name on a bar, shown where the job shows progress (``kdistill.progress``)
    for a pass of more than a few seconds; None: no bar."""
    return forward_batches(model, x, device, batch_size=batch_size, each=lambda out: out.float().cpu(),
                           desc=desc)


def _probe_cut(run: Callable, xb: Inputs, where: torch.Tensor) -> tuple[bool, object]:
    """Whether cutting the padding off the batch of the shortest texts ``xb`` changes nothing
    (the same shapes and values), and that batch's outputs (None when there is nothing to cut)."""
    short = _cut_padding(xb)
    if short.shape[-1] == xb.shape[-1]:
        return False, None
    full, cut = run(xb, where), run(short, where)
    same = _same(full, cut)
    return same, cut if same else full


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
