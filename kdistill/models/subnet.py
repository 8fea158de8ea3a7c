"""Students that are sub-networks of their teacher, started from the teacher's weights.

Keep chosen blocks of the teacher's stacks (2 of a transformer's 6 layers, some of a ResNet
stage's blocks) and, for transformer encoders, fewer attention heads or a narrower
feed-forward layer. The teacher is copied, never changed. A narrower feed-forward layer is
a standard config (``intermediate_size``); fewer heads of the same size is not, so a
head-pruned student trains and evaluates here but does not export as a transformers folder. Heads and feed-forward units are
kept by importance: the L2 norm of the weights that write their output back to the
residual stream (the attention output projection's columns of a head; the second
feed-forward matrix's columns of a unit). Heads and feed-forward units are pruned only in the
families whose layers ``LAYER_PARTS`` maps (by the config's ``model_type``); layers are cut in
any model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from kdistill.errors import KDistillError, shown
from kdistill.models.taps import resolve_module


def pick_layers(n: int, count: int, how: str = "even") -> list[int]:
    """``count`` of ``n`` layer indices: ``first_last`` (the first and last, then evenly between),
    ``even`` (evenly spaced, the last always kept) or ``first`` (the first ``count``)."""
    if not 1 <= count <= n:
        raise KDistillError(f"student.from_teacher: cannot keep {count} of {n} layers; keep between 1 and {n}.")
    if how == "first":
        return list(range(count))
    if how not in ("even", "first_last"):
        raise KDistillError(f"student.from_teacher: unknown pick {shown(how)}; use even, first_last or first.")
    if count == 1:
        return [n - 1]
    if how == "first_last":
        return sorted({round(i * (n - 1) / (count - 1)) for i in range(count)})
    step = n / count
    return [round((i + 1) * step) - 1 for i in range(count)]


def set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    """Put ``module`` in ``model`` at the dotted ``path`` (``encoder.layer``), replacing what was there."""
    parent, _, name = path.rpartition(".")
    setattr(resolve_module(model, parent) if parent else model, name, module)


def keep_blocks(model: nn.Module, path: str, indices: list[int]) -> None:
    """Keep only ``indices`` (in order) of the ``nn.Sequential``/``nn.ModuleList`` at ``path``."""
    stack = resolve_module(model, path, "student.from_teacher")
    if not isinstance(stack, (nn.Sequential, nn.ModuleList)):
        raise KDistillError(f"student.from_teacher: {shown(path)} is a {type(stack).__name__}, not a stack of "
                            "blocks (nn.Sequential or nn.ModuleList).")
    bad = [i for i in indices if not 0 <= i < len(stack)]
    if bad or not indices or len(set(indices)) != len(indices):
        raise KDistillError(f"student.from_teacher: keep {indices} of {shown(path)}, which has blocks "
                            f"0..{len(stack) - 1}; give distinct indices in that range.")
    blocks = [stack[i] for i in sorted(indices)]
    set_module(model, path, nn.Sequential(*blocks) if isinstance(stack, nn.Sequential) else nn.ModuleList(blocks))


def prune_linear(linear: nn.Linear, keep: torch.Tensor, dim: int) -> nn.Linear:
    """A copy of ``linear`` with only the output (dim 0) or input (dim 1) units ``keep``."""
    weight = linear.weight.index_select(dim, keep)
    out = nn.Linear(weight.shape[1], weight.shape[0], bias=linear.bias is not None)
    out.weight.data.copy_(weight)
    if linear.bias is not None:
        out.bias.data.copy_(linear.bias if dim == 1 else linear.bias[keep])
    return out.to(linear.weight.device, linear.weight.dtype)


@dataclass(frozen=True)
class LayerParts:
    """Where one layer of a transformer family keeps what head and FFN pruning rewrite: module
    paths inside the layer. ``self_attention`` is None where heads cannot be pruned one layer at a
    time (``why_not_heads`` says why).

    Args:
        self_attention: the module holding the query, key and value projections and the head
            counts (``num_attention_heads``, ``attention_head_size``, ``all_head_size``).
        qkv: the query, key and value projections' names in it.
        attention_out: the attention output projection (input columns: the heads, in order).
        ffn_in, ffn_out: the feed-forward layer's first and second linear maps.
    """

    self_attention: str | None
    qkv: tuple[str, str, str] | None
    attention_out: str | None
    ffn_in: str
    ffn_out: str
    why_not_heads: str = ""


BERT_LAYER = LayerParts("attention.self", ("query", "key", "value"), "attention.output.dense",
                        "intermediate.dense", "output.dense")
# families (config.model_type) whose layers are known; tests/models/test_subnet.py builds each
LAYER_PARTS = {
    "bert": BERT_LAYER,  # all-MiniLM-L6-v2 too
    "electra": BERT_LAYER,
    "roberta": BERT_LAYER,
    "xlm-roberta": BERT_LAYER,
    "mpnet": LayerParts(None, None, None, "intermediate.dense", "output.dense",
                        why_not_heads="its relative position bias is computed once for every head of every layer"),
}


def layer_parts(model_type: str | None, what: str) -> LayerParts:
    """The ``LayerParts`` of a family, or a one-line refusal naming it (``what``: heads or ffn)."""
    parts = LAYER_PARTS.get(model_type or "")
    known = ", ".join(sorted(name for name, each in LAYER_PARTS.items() if what == "ffn" or each.self_attention))
    if parts is None:
        raise KDistillError(f"student.from_teacher.{what}: pruning {what} is known for the {known} families, not "
                            f"{shown(model_type or 'this model')}; drop {what} and cut layers only (layers or keep).")
    if what == "heads" and parts.self_attention is None:
        raise KDistillError(f"student.from_teacher.heads: attention heads of {shown(model_type)} cannot be pruned "
                            f"({parts.why_not_heads}); drop heads and cut layers (layers or keep), or narrow ffn.")
    return parts


def narrow_ffn(layer: nn.Module, width: int, parts: LayerParts = BERT_LAYER) -> None:
    """Keep the ``width`` feed-forward units of a layer with the largest output weights."""
    up, down = resolve_module(layer, parts.ffn_in), resolve_module(layer, parts.ffn_out)
    if not 1 <= width <= up.out_features:
        raise KDistillError(f"student.from_teacher: ffn {width} must be between 1 and {up.out_features}.")
    keep = down.weight.norm(dim=0).topk(width).indices.sort().values
    set_module(layer, parts.ffn_in, prune_linear(up, keep, 0))
    set_module(layer, parts.ffn_out, prune_linear(down, keep, 1))


def head_importance(layer: nn.Module, num_heads: int, parts: LayerParts = BERT_LAYER) -> torch.Tensor:
    """Norm of each head's columns of the attention output projection: ``(num_heads,)``."""
    weight = resolve_module(layer, parts.attention_out).weight  # (H, heads * head_dim)
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
    parts = _check_shrinkable(teacher, heads, ffn)
    student = copy.deepcopy(teacher)
    if isinstance(keep, list):
        stack = getattr(teacher, "layer_stack", None)
        if stack is None:
            raise KDistillError("student.from_teacher: keep as a list needs a transformer teacher; for other "
                                "models name the stack, e.g. keep: {stages.1: [0]}.")
        keep = {stack: keep}
    for path, indices in (keep or {}).items():
        keep_blocks(student, path, list(indices))
    if parts is not None:
        _shrink_transformer(student, parts, heads, ffn)
    config = getattr(getattr(student, "model", None), "config", None)
    if config is not None and hasattr(student, "layer_stack"):
        config.num_hidden_layers = len(resolve_module(student, student.layer_stack))
    for p in student.parameters():
        p.requires_grad_(True)
    student.train()
    return student


def prune_heads(layer: nn.Module, keep: torch.Tensor, parts: LayerParts = BERT_LAYER) -> None:
    """Keep only the heads ``keep`` of a layer's self-attention."""
    attn = resolve_module(layer, parts.self_attention)
    size = attn.attention_head_size
    units = (keep.unsqueeze(1) * size + torch.arange(size, device=keep.device)).flatten()  # the kept heads' rows
    for name in parts.qkv:
        setattr(attn, name, prune_linear(getattr(attn, name), units, 0))
    set_module(layer, parts.attention_out, prune_linear(resolve_module(layer, parts.attention_out), units, 1))
    attn.num_attention_heads, attn.all_head_size = len(keep), len(keep) * size


def _check_shrinkable(teacher: nn.Module, heads: int | None, ffn: int | None) -> LayerParts | None:
    """The teacher's ``LayerParts`` when heads or ffn are asked for (None otherwise), or a one-line
    refusal: before anything is copied."""
    if heads is None and ffn is None:
        return None
    config = getattr(getattr(teacher, "model", None), "config", None)
    if config is None or getattr(teacher, "layer_stack", None) is None:
        raise KDistillError("student.from_teacher: heads and ffn apply to transformer encoders (model: hf) only.")
    model_type = getattr(config, "model_type", None)
    parts = layer_parts(model_type, "ffn") if ffn is not None else None
    return layer_parts(model_type, "heads") if heads is not None else parts


def _shrink_transformer(student: nn.Module, parts: LayerParts, heads: int | None, ffn: int | None) -> None:
    config = student.model.config
    layers = resolve_module(student, student.layer_stack)
    if heads is not None:
        total = config.num_attention_heads
        if not 1 <= heads <= total:
            raise KDistillError(f"student.from_teacher: heads {heads} must be between 1 and {total}.")
        for layer in layers:
            prune_heads(layer, head_importance(layer, total, parts).topk(heads).indices.sort().values, parts)
        student.pruned_heads = heads  # a standard config cannot describe it: export checks this
    if ffn is not None:
        for layer in layers:
            narrow_ffn(layer, ffn, parts)
        config.intermediate_size = ffn
