"""Learnable projections from student features to the teacher's feature shapes.

Built from the shapes seen in one dry forward pass, so the user never types channel counts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdistill.errors import KDistillError


class ConvAdapter(nn.Module):
    """1x1 convolution to the teacher's channels, then a resize to the teacher's spatial size.

    ``(B, Cs, Hs, Ws) -> (B, Ct, Ht, Wt)``
    """

    def __init__(self, student_channels: int, teacher_channels: int, size: tuple[int, int]):
        super().__init__()
        self.proj = nn.Conv2d(student_channels, teacher_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(teacher_channels)
        self.size = tuple(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return self.bn(self.proj(x))


class PooledLinearAdapter(nn.Module):
    """A feature map to a vector: global average pool, then linear. ``(B, C, H, W) -> (B, D)``"""

    def __init__(self, student_channels: int, teacher_dim: int):
        super().__init__()
        self.proj = nn.Linear(student_channels, teacher_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.mean(dim=(-2, -1)))


def build_adapter(student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]) -> nn.Module:
    """An adapter for one feature pair; shapes exclude the batch dimension.

    Same shape: identity. Vectors or token sequences ``(..., D)``: linear on the last axis.
    Feature maps ``(C, H, W)``: 1x1 conv plus resize. A map to a vector: pool plus linear.
    """
    s, t = tuple(student_shape), tuple(teacher_shape)
    if s == t:
        return nn.Identity()
    if len(s) == 3 and len(t) == 3:
        return ConvAdapter(s[0], t[0], t[1:])
    if len(s) == 3 and len(t) == 1:
        return PooledLinearAdapter(s[0], t[0])
    if len(s) == len(t) and s[:-1] == t[:-1]:
        return nn.Linear(s[-1], t[-1])
    raise KDistillError(
        f"adapters: cannot map a student feature of shape {s} to a teacher feature of shape {t}; "
        "tap layers whose outputs are both maps (C, H, W), both vectors, or equal-length sequences."
    )


def adapter_key(student_name: str, teacher_name: str) -> str:
    # ModuleDict keys cannot hold dots
    return f"{student_name}->{teacher_name}".replace(".", "_")


def build_adapters(
    pairs: list[tuple[str, str]],
    student_feats: dict[str, torch.Tensor],
    teacher_feats: dict[str, torch.Tensor],
) -> nn.ModuleDict:
    """Build one adapter per (student tap, teacher tap) pair from features of a dry forward pass."""
    adapters = nn.ModuleDict()
    for s_name, t_name in pairs:
        key = adapter_key(s_name, t_name)
        if key not in adapters:
            adapters[key] = build_adapter(
                student_feats[s_name].shape[1:], teacher_feats[t_name].shape[1:]
            )
    return adapters
