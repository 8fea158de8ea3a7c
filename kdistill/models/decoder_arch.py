"""The families of decoder layers a causal language model is width-pruned in
(``hf_causal.prune_width``), one small ``Arch`` each: the names and functions in which they
differ. A new family is an ``Arch`` and a line in ``ARCHS``.

- ``llama``: ``self_attn`` with ``q/k/v/o_proj`` and an ``mlp`` of ``up/down_proj`` (and maybe
  ``gate_proj``), all ``nn.Linear`` (Llama, Qwen2, Mistral);
- ``gpt2``: ``attn.c_proj`` and an ``mlp`` of ``c_fc/c_proj``, all ``transformers``' ``Conv1D``
  (weights ``(in, out)``); its config cannot express fewer heads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from kdistill.errors import KDistillError
from kdistill.models.subnet import prune_linear

FRESH_MODEL_TYPE = "llama"  # a causal LM built from a config that names no model_type


@dataclass(frozen=True)
class Arch:
    """One family of decoder layers.

    Args:
        described: its name in messages.
        matches(layer): whether a decoder layer is of this family.
        mlp_out(layer): the MLP's output projection, whose input holds the MLP units.
        mlp_width(layer): the MLP units of a layer.
        narrow_mlp(mlp, keep): keep only the MLP units ``keep`` (sorted indices), in place.
        ffn_field: the config's field of the MLP width.
        heads_out(layer): the attention output projection, whose input is one slice a query
            head; None where the family's heads cannot be pruned, and ``no_heads`` says why.
    """

    described: str
    matches: Callable[[nn.Module], bool]
    mlp_out: Callable[[nn.Module], nn.Module]
    mlp_width: Callable[[nn.Module], int]
    narrow_mlp: Callable[[nn.Module, torch.Tensor], None]
    ffn_field: str
    heads_out: Callable[[nn.Module], nn.Module] | None = None
    no_heads: str = ""


def _conv1d():
    from transformers.pytorch_utils import Conv1D

    return Conv1D


def _is_llama(layer: nn.Module) -> bool:
    attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
    return (attn is not None and mlp is not None
            and all(isinstance(getattr(attn, n, None), nn.Linear) for n in ("q_proj", "k_proj", "v_proj", "o_proj"))
            and all(isinstance(getattr(mlp, n, None), nn.Linear) for n in ("up_proj", "down_proj"))
            and {n for n, m in mlp.named_children() if isinstance(m, nn.Linear)} <= {"gate_proj", "up_proj",
                                                                                     "down_proj"})


def _is_gpt2(layer: nn.Module) -> bool:
    attn, mlp, conv = getattr(layer, "attn", None), getattr(layer, "mlp", None), _conv1d()
    return (attn is not None and mlp is not None and isinstance(getattr(attn, "c_proj", None), conv)
            and all(isinstance(getattr(mlp, n, None), conv) for n in ("c_fc", "c_proj")))


def _narrow_gated_mlp(mlp: nn.Module, keep: torch.Tensor) -> None:
    for name in ("gate_proj", "up_proj"):
        if hasattr(mlp, name):
            setattr(mlp, name, prune_linear(getattr(mlp, name), keep, 0))
    mlp.down_proj = prune_linear(mlp.down_proj, keep, 1)
    if hasattr(mlp, "intermediate_size"):
        mlp.intermediate_size = len(keep)


def _narrow_conv_mlp(mlp: nn.Module, keep: torch.Tensor) -> None:
    mlp.c_fc, mlp.c_proj = _prune_conv1d(mlp.c_fc, keep, outputs=True), _prune_conv1d(mlp.c_proj, keep, False)


def _prune_conv1d(conv: nn.Module, keep: torch.Tensor, outputs: bool) -> nn.Module:
    """A copy of a GPT-2 ``Conv1D`` (weight ``(in, out)``) with only the output or input units ``keep``."""
    weight = conv.weight.index_select(1 if outputs else 0, keep)  # (in, out)
    out = _conv1d()(weight.shape[1], weight.shape[0])
    out.weight.data.copy_(weight)
    out.bias.data.copy_(conv.bias[keep] if outputs else conv.bias)
    return out.to(conv.weight.device, conv.weight.dtype)


ARCHS = {
    "llama": Arch("Llama-style layers (q/k/v/o_proj, gate/up/down_proj: Llama, Qwen2, Mistral)", _is_llama,
                  mlp_out=lambda layer: layer.mlp.down_proj, mlp_width=lambda layer: layer.mlp.down_proj.in_features,
                  narrow_mlp=_narrow_gated_mlp, ffn_field="intermediate_size",
                  heads_out=lambda layer: layer.self_attn.o_proj),
    "gpt2": Arch("GPT-2", _is_gpt2, mlp_out=lambda layer: layer.mlp.c_proj,
                 mlp_width=lambda layer: layer.mlp.c_proj.weight.shape[0], narrow_mlp=_narrow_conv_mlp,
                 ffn_field="n_inner", no_heads="a GPT-2 config derives the head size from n_embd / n_head, so it "
                 "cannot express fewer heads; prune ffn or layers instead."),
}


def arch_of(layer: nn.Module) -> Arch:
    """The family of the decoder ``layer``; one this table lacks is refused."""
    for arch in ARCHS.values():
        if arch.matches(layer):
            return arch
    raise KDistillError(f"prune_width: does not know the decoder layer {type(layer).__name__}; it prunes "
                        f"{' and '.join(a.described for a in ARCHS.values())}.")
