"""FitNets hint regression: Romero, Ballas, Kahou, Chassang, Gatta and Bengio, "FitNets: Hints for
Thin Deep Nets", ICLR 2015, arXiv:1412.6550."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdistill.losses.registry import Contract, register


@register("hint", Contract(mean_over=("samples", "batch")))
class HintLoss(nn.Module):
    """Mean squared error between the adapted student feature and the teacher's hint feature.

    ``loss = mean over every element of (s - t)^2``, s the student feature through the adapter
    (``r(v)`` in the paper), t the teacher's (``u_h``); the paper's sum ``1/2 ||u_h - r(v)||^2`` per
    sample, as a mean here.

    The adapter (the paper's regressor) is built by the objective from the feature shapes;
    this loss sees two tensors of equal shape, e.g. ``(B, C, H, W)``.

    Args:
        normalize: divide by the teacher feature's mean square (not differentiated), giving the
            relative error ``mean((s - t)^2) / mean(t^2)``: 1 for a student that outputs zeros,
            whatever the features' scale. For features whose scale is large or unknown, such as
            a transformer's residual stream, where the plain MSE can be hundreds of times the
            output loss. The ratio of two means over the batch is a statistic of the batch
            (``parts``: ``batch``), the plain MSE a mean over samples.
    """

    def __init__(self, normalize: bool = False):
        super().__init__()
        self.normalize = normalize

    def parts(self, student, teacher, target=None) -> dict[str, torch.Tensor]:
        teacher = teacher.float()
        loss = F.mse_loss(student.float(), teacher)
        if self.normalize:
            return {"batch": loss / teacher.pow(2).mean().clamp_min(1e-12).detach()}
        return {"samples": loss}

    def forward(self, student, teacher, target=None):
        return sum(self.parts(student, teacher, target).values())
