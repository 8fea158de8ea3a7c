"""Flow of solution procedure (FSP) matrices: Yim, Joo, Bae and Kim, "A Gift from Knowledge
Distillation: Fast Optimization, Network Minimization and Transfer Learning", CVPR 2017."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdistill.errors import KDistillError
from kdistill.losses.registry import register


def fsp_matrix(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """``G[i, j] = sum_{h,w} first[i, h, w] * second[j, h, w] / (H * W)``: ``(B, C1, C2)``.

    The larger map is average-pooled to the smaller one's spatial size first.
    """
    if first.shape[-2:] != second.shape[-2:]:
        size = min(first.shape[-2], second.shape[-2]), min(first.shape[-1], second.shape[-1])
        first, second = F.adaptive_avg_pool2d(first, size), F.adaptive_avg_pool2d(second, size)
    a = first.float().flatten(2)  # (B, C1, HW)
    b = second.float().flatten(2)  # (B, C2, HW)
    return a @ b.transpose(1, 2) / a.shape[-1]


@register("fsp")
class FSP(nn.Module):
    """``loss = sum_k mean_b ||G_s^k - G_t^k||_F^2 / K`` over the K consecutive pairs of taps.

    The recipe routes a list of at least two feature maps on each side (``student: [stages.0,
    stages.1]``); each student map is adapted to the teacher's channels first, so that the FSP
    matrices of student and teacher have the same shape. Equal weights for the pairs (the
    paper's lambda_i).

    Inputs: student, teacher: tuples of ``(B, C_k, H_k, W_k)`` maps, in layer order.
    """

    def forward(self, student, teacher, target=None):
        if not isinstance(student, tuple) or len(student) < 2 or len(student) != len(teacher):
            raise KDistillError("loss 'fsp': route a list of two or more taps on each side, "
                                "e.g. student: [stages.0, stages.1], teacher: [stages.0, stages.1]")
        pairs = range(len(student) - 1)
        total = sum(
            (fsp_matrix(student[k], student[k + 1]) - fsp_matrix(teacher[k], teacher[k + 1])).pow(2).sum((1, 2)).mean()
            for k in pairs
        )
        return total / len(pairs)
