"""Pretrained image classifiers from ``transformers`` (ViT, ConvNeXt, ResNet, Swin, ...): any
``AutoModelForImageClassification`` as a teacher (or student), from a local folder written by
``save_pretrained`` (safetensors only) or from a config.

The model takes ``(B, C, H, W)`` float pixels, already resized and normalised as its image
processor expects, and returns class logits ``(B, K)``. Families whose encoder is one stack of
``num_hidden_layers`` identical layers (ViT, DeiT, BEiT, DINOv2, ...) expose it as ``layer_stack``, so a student can
keep some of its layers (``student.from_teacher.layers``); for the others name the blocks to
keep (``student.from_teacher.keep``), as for CNNs.
"""

from __future__ import annotations

import torch
from torch import nn

from kdistill.data.tokenizer import first_line, import_transformers, resolve_path
from kdistill.errors import KDistillError, shown
from kdistill.models.hf import load_pretrained
from kdistill.models.zoo import register


class HFImageClassifier(nn.Module):
    """An ``AutoModelForImageClassification`` taking pixels, giving logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        stack = _layer_stack(model)
        if stack is not None:
            self.layer_stack = stack

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).logits  # (B, K)


def _layer_stack(model: nn.Module) -> str | None:
    """The path of the encoder's stack of ``config.num_hidden_layers`` identical layers (ViT's
    ``vit.encoder.layer``, or ``vit.layers`` in transformers 5), if the family has one."""
    count = getattr(model.config, "num_hidden_layers", None)
    if not isinstance(count, int):
        return None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == count and len({type(m) for m in module}) == 1:
            return f"model.{name}"
    return None


@register("hf_vision")
def hf_vision(path: str | None = None, config: dict | None = None) -> HFImageClassifier:
    """An image classifier from a local folder or model id (``path``), or a fresh one built from
    a ``config`` dict (e.g. ``{model_type: vit, image_size: 32, patch_size: 8, num_labels: 10,
    ...}``)."""
    transformers = import_transformers()
    if (path is None) == (config is None):
        raise KDistillError("model 'hf_vision': give exactly one of args.path (a folder or model id) and args.config.")
    auto = transformers.AutoModelForImageClassification
    try:
        if path is not None:
            model = load_pretrained(transformers, resolve_path(path, "model 'hf_vision'"), auto, "model 'hf_vision'")
        else:
            config = dict(config)
            model_type = config.pop("model_type", "vit")
            model = auto.from_config(transformers.AutoConfig.for_model(model_type, **config))
    except (OSError, ValueError) as err:
        raise KDistillError(f"model 'hf_vision': cannot load {shown(path or config)}: {first_line(err)}") from None
    return HFImageClassifier(model)
