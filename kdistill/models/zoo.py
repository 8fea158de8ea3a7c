"""Registered builders for students and teachers, and user models by import path.

Every builder takes plain keyword arguments and returns an ``nn.Module`` mapping images
``(B, C, H, W)`` (or flat vectors for the MLP) to logits ``(B, num_classes)``. Stacked blocks
live in an ``nn.Sequential`` named ``stages`` so that taps can name them (``stages.1``) and
sub-networks can keep a subset of them.
"""

from __future__ import annotations

import difflib
import inspect
import importlib
from typing import Callable

import torch
from torch import nn

from kdistill.errors import KDistillError, shown

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    """Register a model builder under ``name`` (lowercase)."""

    def wrap(fn):
        MODELS[name] = fn
        return fn

    return wrap


def build_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model, or a user's model given as ``package.module:callable``."""
    if ":" in name:
        return _from_import_path(name, **kwargs)
    if name not in MODELS:
        close = difflib.get_close_matches(name, MODELS, n=3) if len(name) <= 100 else []  # difflib is slow on huge strings
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KDistillError(
            f"model: unknown name {shown(name)}.{hint} Known: {', '.join(sorted(MODELS))}, "
            "or give 'package.module:callable'."
        )
    try:
        return MODELS[name](**kwargs)
    except (TypeError, ValueError) as err:  # a builder refusing its arguments (missing, unknown, out of range)
        given = {k: f"<{type(v).__name__}>" if isinstance(v, nn.Module) else v for k, v in kwargs.items()}
        raise KDistillError(f"model {shown(name)}: bad arguments {shown(given, 300)}: {err}") from None


def builds_from_teacher(name: str | None) -> bool:
    """Whether the registered builder ``name`` takes the run's ``teacher`` (a student made from
    it, such as a static-embedding student): the run builds the teacher first and passes it."""
    builder = MODELS.get(name) if name else None
    return builder is not None and "teacher" in inspect.signature(builder).parameters


def with_data_defaults(name: str, args: dict, **known) -> dict:
    """``args`` of the registered model ``name``, plus those of ``known`` (the data's number of
    classes, input channels, flattened input size, image ``[height, width]``) that its builder takes and ``args`` leaves
    out: a model fits the data it is given unless the recipe says otherwise."""
    builder = MODELS.get(name)
    if builder is None:  # a user's package.module:callable: its own defaults
        return dict(args)
    params = inspect.signature(builder).parameters
    return {**{k: v for k, v in known.items() if k in params and v is not None}, **args}


def _from_import_path(path: str, **kwargs) -> nn.Module:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise KDistillError(
            f"model: cannot import {shown(module_name)} from {shown(path)} ({err}); "
            "check the module is on PYTHONPATH."
        ) from None
    if not hasattr(module, attr):
        raise KDistillError(f"model: {shown(module_name)} has no attribute {shown(attr)} (from {shown(path)}).")
    model = getattr(module, attr)(**kwargs)
    if not isinstance(model, nn.Module):
        raise KDistillError(f"model: {shown(path)} returned {type(model).__name__}, not an nn.Module.")
    return model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class MLP(nn.Module):
    """A multilayer perceptron; images are flattened first.

    Args:
        in_features: flattened input size (784 for 28x28 images).
        hidden: widths of the hidden layers, each a stage ``stages.i``.
    """

    def __init__(
        self,
        in_features: int = 784,
        num_classes: int = 10,
        hidden: list[int] = (256, 128),
        dropout: float = 0.0,
    ):
        super().__init__()
        stages, width = [], in_features
        for h in hidden:
            stages.append(nn.Sequential(nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)))
            width = h
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(x.flatten(1)))  # (B, num_classes)


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class CNN(nn.Module):
    """VGG-style CNN: stages of 3x3 conv-BN-ReLU, max-pooled between stages, then a head.

    Args:
        channels: output channels of each stage.
        convs_per_stage: 3x3 convolutions in each stage.
        pool_stages: how many of the first stages end with a 2x2 max-pool
            (default: all but the last).
        hidden: width of a hidden fully connected layer in the head (0 for none).
        image_size: the input's side length, or its ``[height, width]``, used to size the
            flattened head (a run passes the data's own size when the recipe gives none).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        channels: list[int] = (16, 32, 64),
        convs_per_stage: int = 1,
        pool_stages: int | None = None,
        hidden: int = 0,
        dropout: float = 0.0,
        image_size: int | list[int] = 28,
    ):
        super().__init__()
        pool_stages = len(channels) - 1 if pool_stages is None else pool_stages
        height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
        stages, cin = [], in_channels
        for i, cout in enumerate(channels):
            layers = _conv_bn(cin, cout)
            for _ in range(convs_per_stage - 1):
                layers += _conv_bn(cout, cout)
            if i < pool_stages:
                layers.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            stages.append(nn.Sequential(*layers))
            cin = cout
        self.stages = nn.Sequential(*stages)
        flat = cin * height * width
        head: list[nn.Module] = [nn.Flatten(), nn.Dropout(dropout)]
        if hidden:
            head += [nn.Linear(flat, hidden), nn.ReLU(), nn.Dropout(dropout)]
            flat = hidden
        head.append(nn.Linear(flat, num_classes))
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(x))  # (B, num_classes)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projected) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet-style CNN: a stem, stages of basic blocks (stride 2 from the second stage),
    global average pooling and a linear head.

    Args:
        widths: channels of each stage.
        blocks_per_stage: basic blocks in every stage.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        widths: list[int] = (16, 32, 64),
        blocks_per_stage: int = 2,
    ):
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(in_channels, widths[0]))
        stages, cin = [], widths[0]
        for i, cout in enumerate(widths):
            blocks = [BasicBlock(cin, cout, stride=1 if i == 0 else 2)]
            blocks += [BasicBlock(cout, cout) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))  # (B, num_classes)


register("mlp")(MLP)
register("cnn")(CNN)
register("resnet")(ResNet)
