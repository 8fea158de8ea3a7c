"""Probabilistic Knowledge Transfer: Passalis and Tefas, "Learning Deep Representations with
Probabilistic Knowledge Transfer", ECCV 2018, arXiv:1803.10837."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdistill.losses.registry import Contract, register


def cosine_conditionals(x: torch.Tensor, eps: float) -> torch.Tensor:
    """``p_{j|i} = K(x_i, x_j) / sum_{k != i} K(x_i, x_k)``, ``K(a, b) = (cos(a, b) + 1) / 2``.

    ``(B, D) -> (B, B - 1)``: row i lists j = 0..B-1 without j = i.
    """
    x = F.normalize(x, dim=1, eps=eps)
    kernel = (x @ x.T + 1) / 2  # (B, B), in [0, 1]
    off_diagonal = ~torch.eye(len(x), dtype=torch.bool, device=x.device)
    kernel = kernel[off_diagonal].view(len(x), len(x) - 1)  # (B, B - 1)
    return kernel / kernel.sum(dim=1, keepdim=True).clamp_min(eps)


@register("pkt", Contract(adapt=False, mean_over="batch"))
class ProbabilisticKT(nn.Module):
    """``loss = sum_i sum_{j != i} p_{j|i} * log((p_{j|i} + eps) / (q_{j|i} + eps))``.

    ``p`` from the teacher's features, ``q`` from the student's (``cosine_conditionals``): the
    paper's KL(P || Q), summed over all ordered pairs i != j as in the paper, so it grows
    about linearly with the batch size (pick the term's weight for your batch size). The
    authors' code instead keeps the diagonal j = i in the kernel and averages over all B^2
    entries. ``eps`` guards the logarithm and the normalisations, as in the authors' code.

    Invariant to scaling either feature set (cosines); widths may differ. 0 for B < 2.

    Args:
        eps: small constant (> 0), 1e-7 in the authors' code.
    Inputs:
        student: ``(B, Ds)``, teacher: ``(B, Dt)``; higher dims are flattened.
    """


    def __init__(self, eps: float = 1e-7):
        super().__init__()
        if eps <= 0:
            raise ValueError("eps must be > 0")
        self.eps = eps

    def forward(self, student, teacher, target=None):
        if len(student) < 2:
            return student.sum() * 0.0
        q = cosine_conditionals(student.flatten(1).float(), self.eps)  # (B, B - 1)
        p = cosine_conditionals(teacher.flatten(1).float(), self.eps)
        return (p * torch.log((p + self.eps) / (q + self.eps))).sum()
