"""Students that are sub-networks of their teacher, started from the teacher's weights.

Keep chosen blocks of the teacher's stacks (2 of a transformer's 6 layers, some of a ResNet
stage's blocks) and, for transformer encoders, fewer attention heads or a narrower
feed-forward layer. The teacher is copied, never changed. A narrower feed-forward layer is
a standard config (``intermediate_size``); fewer heads of the same size is not, so a
head-pruned student trains and evaluates here but does not export as a transformers folder. Heads and feed-forward units are
kept by importance: the L2 norm of the weights that write their output back to the
residual stream (the attention output projection's columns of a head; the second
feed-forward matrix's columns of a unit).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from kdistill.errors import KDistillError
from kdistill.models.taps import resolve_module


def pick_layers(n: int, count: int, how: str = "even") -> list[int]:
    """``count`` of ``n`` layer indices: ``first_last`` (the first and last, then evenly between),
    ``even`` (evenly spaced, the last always kept) or ``first`` (the first ``count``)."""
    if not 1 <= count <= n:
        raise KDistillError(f"student.from_teacher: cannot keep {count} of {n} layers; keep between 1 and {n}.")
    if how == "first":
        return list(range(count))
    if how not in ("even", "first_last"):
        raise KDistillError(f"student.from_teacher: unknown pick {how!r}; use even, first_last or first.")
    if count == 1:
        return [n - 1]
    if how == "first_last":
        return sorted({round(i * (n - 1) / (count - 1)) for i in range(count)})
    step = n / count
    return [round((i + 1) * step) - 1 for i in range(count)]


def _set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(resolve_module(model, parent) if parent else model, name, module)


def keep_blocks(model: nn.Module, path: str, indices: list[int]) -> None:
    """Keep only ``indices`` (in order) of the ``nn.Sequential``/``nn.ModuleList`` at ``path``."""
    stack = resolve_module(model, path, "student.from_teacher")
    if not isinstance(stack, (nn.Sequential, nn.ModuleList)):
        raise KDistillError(f"student.from_teacher: {path!r} is a {type(stack).__name__}, not a stack of "
                            "blocks (nn.Sequential or nn.ModuleList).")
    bad = [i for i in indices if not 0 <= i < len(stack)]
    if bad or not indices or len(set(indices)) != len(indices):
        raise KDistillError(f"student.from_teacher: keep {indices} of {path!r}, which has blocks "
                            f"0..{len(stack) - 1}; give distinct indices in that range.")
    blocks = [stack[i] for i in sorted(indices)]
    _set_module(model, path, nn.Sequential(*blocks) if isinstance(stack, nn.Sequential) else nn.ModuleList(blocks))


def _prune_linear(linear: nn.Linear, keep: torch.Tensor, dim: int) -> nn.Linear:
    """A copy of ``linear`` with only the output (dim 0) or input (dim 1) units ``keep``."""
    weight = linear.weight.index_select(dim, keep)
    out = nn.Linear(weight.shape[1], weight.shape[0], bias=linear.bias is not None)
    out.weight.data.copy_(weight)
    if linear.bias is not None:
        out.bias.data.copy_(linear.bias if dim == 1 else linear.bias[keep])
    return out.to(linear.weight.device, linear.weight.dtype)


def narrow_ffn(layer: nn.Module, width: int) -> None:
    """Keep the ``width`` feed-forward units of a BERT-style layer with the largest output weights."""
    up, down = layer.intermediate.dense, layer.output.dense
    if not 1 <= width <= up.out_features:
        raise KDistillError(f"student.from_teacher: ffn {width} must be between 1 and {up.out_features}.")
    keep = down.weight.norm(dim=0).topk(width).indices.sort().values
    layer.intermediate.dense = _prune_linear(up, keep, 0)
    layer.output.dense = _prune_linear(down, keep, 1)


def head_importance(layer: nn.Module, num_heads: int) -> torch.Tensor:
    """Norm of each head's columns of the attention output projection: ``(num_heads,)``."""
    weight = layer.attention.output.dense.weight  # (H, heads * head_dim)
    return weight.view(weight.shape[0], num_heads, -1).norm(dim=(0, 2))


def sub_network(teacher: nn.Module, keep: dict[str, list[int]] | list[int] | None = None,
                heads: int | None = None, ffn: int | None = None) -> nn.Module:
    """A copy of ``teacher`` reduced to the blocks ``keep`` names, with its weights.

    Args:
        keep: ``{stack path: block indices}``, or a list of indices of the teacher's
            ``layer_stack`` (a transformer's layers).
        heads: attention heads to keep in every layer (transformer encoders).
        ffn: feed-forward width to keep in every layer (transformer encoders).
    """
    student = copy.deepcopy(teacher)
    if isinstance(keep, list):
        stack = getattr(teacher, "layer_stack", None)
        if stack is None:
            raise KDistillError("student.from_teacher: keep as a list needs a transformer teacher; for other "
                                "models name the stack, e.g. keep: {stages.1: [0]}.")
        keep = {stack: keep}
    for path, indices in (keep or {}).items():
        keep_blocks(student, path, list(indices))
    if heads is not None or ffn is not None:
        _shrink_transformer(student, heads, ffn)
    config = getattr(getattr(student, "model", None), "config", None)
    if config is not None and hasattr(student, "layer_stack"):
        config.num_hidden_layers = len(resolve_module(student, student.layer_stack))
    for p in student.parameters():
        p.requires_grad_(True)
    student.train()
    return student


def prune_heads(layer: nn.Module, keep: torch.Tensor) -> None:
    """Keep only the heads ``keep`` of a BERT-style layer's self-attention."""
    attn = layer.attention.self
    size = attn.attention_head_size
    units = (keep.unsqueeze(1) * size + torch.arange(size, device=keep.device)).flatten()  # the kept heads' rows
    for name in ("query", "key", "value"):
        setattr(attn, name, _prune_linear(getattr(attn, name), units, 0))
    layer.attention.output.dense = _prune_linear(layer.attention.output.dense, units, 1)
    attn.num_attention_heads, attn.all_head_size = len(keep), len(keep) * size


def _shrink_transformer(student: nn.Module, heads: int | None, ffn: int | None) -> None:
    config = getattr(getattr(student, "model", None), "config", None)
    stack = getattr(student, "layer_stack", None)
    if config is None or stack is None:
        raise KDistillError("student.from_teacher: heads and ffn apply to transformer encoders (model: hf) only.")
    layers = resolve_module(student, stack)
    if heads is not None:
        total = config.num_attention_heads
        if not 1 <= heads <= total:
            raise KDistillError(f"student.from_teacher: heads {heads} must be between 1 and {total}.")
        for layer in layers:
            prune_heads(layer, head_importance(layer, total).topk(heads).indices.sort().values)
        student.pruned_heads = heads  # a standard config cannot describe it: export checks this
    if ffn is not None:
        for layer in layers:
            narrow_ffn(layer, ffn)
        config.intermediate_size = ffn
