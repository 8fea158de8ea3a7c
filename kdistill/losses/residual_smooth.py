"""Smoothness of the hint residual: a first-difference (Tikhonov) penalty on the difference between
the adapted student feature and the teacher feature. No distillation paper; it lets the student
differ from the teacher by a smooth offset (a constant costs nothing) but not by local detail."""

from __future__ import annotations

import torch
from torch import nn

from kdistill.errors import KDistillError
from kdistill.losses.registry import register

# the axes along which neighbouring positions are compared, by the number of dimensions
POSITION_AXES = {4: (2, 3), 3: (1,), 2: (1,)}


@register("residual_smooth")
class ResidualSmoothness(nn.Module):
    """Squared differences of the residual ``r = student - teacher`` between neighbouring positions.

    ``loss = (1 / B) * sum_b [ sum of (r at one position - r at the next)^2 ] / (elements per sample)``:

    - maps ``(B, C, H, W)``: horizontal and vertical neighbours, summed over c, h, w,
      divided by ``C*H*W``;
    - sequences ``(B, T, D)``: neighbours along T, summed over t, d, divided by ``T*D``;
    - vectors ``(B, D)``: neighbouring coordinates along D, divided by ``D``.

    Inputs:
        student: the adapted student feature. teacher: the same shape.
    """

    def forward(self, student, teacher, target=None):
        if student.dim() not in POSITION_AXES or student.shape != teacher.shape:
            raise KDistillError(
                f"loss 'residual_smooth': needs student and teacher of one shape, (B, D), (B, T, D) "
                f"or (B, C, H, W); got {tuple(student.shape)} and {tuple(teacher.shape)}."
            )
        residual = student.float() - teacher.float()
        total = sum(torch.diff(residual, dim=axis).pow(2).sum() for axis in POSITION_AXES[residual.dim()])
        return total / residual.numel()
