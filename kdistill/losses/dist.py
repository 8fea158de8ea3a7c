"""DIST: Knowledge Distillation from A Stronger Teacher (Huang, You, Wang, Qian and Xu,
NeurIPS 2022, arXiv:2205.10536)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdistill.losses.registry import Contract, register


def pearson(a: torch.Tensor, b: torch.Tensor, dim: int, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation of ``a`` and ``b`` along ``dim``; 0 where either is constant."""
    a, b = a - a.mean(dim, keepdim=True), b - b.mean(dim, keepdim=True)
    return (a * b).sum(dim) / (a.norm(dim=dim) * b.norm(dim=dim)).clamp_min(eps)


@register("dist", Contract(mean_over="batch"))
class DIST(nn.Module):
    """``loss = tau^2 * (beta * L_inter + gamma * L_intra)`` on ``Y = softmax(logits / tau)``.

    ``L_inter = mean_b (1 - rho(Y^s[b, :], Y^t[b, :]))``, the relation between classes in each
    sample; ``L_intra = mean_k (1 - rho(Y^s[:, k], Y^t[:, k]))``, the relation between samples
    for each class; rho is Pearson's correlation. The tau^2 factor is the paper's.
    L_intra is 0 for a batch of one (no correlation across one sample). Unchanged when a
    constant is added to a sample's logits.

    Args:
        beta: weight of L_inter (>= 0). gamma: weight of L_intra (>= 0).
        tau: softmax temperature (> 0). Defaults 1, 1, 1, the authors' defaults.
    Inputs:
        student, teacher: logits ``(B, K)``.
    """

    def __init__(self, beta: float = 1.0, gamma: float = 1.0, tau: float = 1.0):
        super().__init__()
        if beta < 0 or gamma < 0 or tau <= 0:
            raise ValueError("beta and gamma must be >= 0 and tau > 0")
        self.beta, self.gamma, self.tau = beta, gamma, tau

    def forward(self, student, teacher, target=None):
        y_s = F.softmax(student.float() / self.tau, dim=1)  # (B, K)
        y_t = F.softmax(teacher.float() / self.tau, dim=1)
        inter = (1 - pearson(y_s, y_t, dim=1)).mean()
        intra = (1 - pearson(y_s, y_t, dim=0)).mean() if len(y_s) > 1 else inter * 0.0
        return self.tau**2 * (self.beta * inter + self.gamma * intra)
