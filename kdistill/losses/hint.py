"""FitNets hint regression (Romero et al. 2015, arXiv:1412.6550)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from kdistill.losses.registry import register


@register("hint")
class HintLoss(nn.Module):
    """Mean squared error between the adapted student feature and the teacher's hint feature.

    The adapter (the paper's regressor) is built by the objective from the feature shapes;
    this loss sees two tensors of equal shape, e.g. ``(B, C, H, W)``.
    """

    def forward(self, student, teacher, target=None):
        return F.mse_loss(student.float(), teacher.float())
