"""Cross-entropy on the labelled samples of a batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdistill.data.splits import UNLABELLED
from kdistill.losses.registry import Contract, register


def labelled_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor | None, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Mean cross-entropy over samples whose label is not ``UNLABELLED``; 0 when there are none
    (the graph kept). Computed without reading the labels on the host.

    Args:
        logits: ``(B, K)``. target: ``(B,)`` class indices, ``-1`` for unlabelled samples.
    """
    if target is None:
        return logits.sum() * 0.0  # keeps the graph, contributes nothing
    total = F.cross_entropy(logits.float(), target, ignore_index=UNLABELLED, label_smoothing=label_smoothing,
                            reduction="sum")
    return total / (target != UNLABELLED).sum().clamp_min(1)


@register("ce", Contract(teacher=False, mean_over="labelled"))
class CrossEntropy(nn.Module):
    """Cross-entropy with the labels; unlabelled samples (label -1) are left out.

    ``loss = (1 / N) * sum_{i: y_i != -1} -sum_k q_ik log softmax(z_i)_k``, ``q_i`` the label
    ``y_i`` as a one-hot vector, smoothed: ``q_i = (1 - eps) * onehot(y_i) + eps / K``; N the
    labelled samples of the batch (0 when there are none).

    Args:
        label_smoothing: eps, in [0, 1] (0: the plain cross-entropy).
    Inputs:
        student: logits ``z``, ``(B, K)``. target: ``(B,)``, -1 for an unlabelled sample.
    """

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, student, teacher=None, target=None):
        return labelled_cross_entropy(student, target, self.label_smoothing)
