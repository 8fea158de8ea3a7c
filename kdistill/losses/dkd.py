"""Decoupled Knowledge Distillation (Zhao, Cui, Song, Qiu and Liang, CVPR 2022, arXiv:2203.08679)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdistill.data.splits import UNLABELLED
from kdistill.losses.registry import register


def dkd_parts(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample ``(TCKD, NCKD, p_t^target)``, each ``(B,)``, at temperature T (no T^2 factor).

    ``TCKD = KL(b^t || b^s)``, ``b = [p_target, 1 - p_target]``;
    ``NCKD = KL(p^^t || p^^s)``, ``p^`` the softmax over the K - 1 non-target classes.
    Then ``KL(p^t || p^s) = TCKD + (1 - p_t^target) * NCKD`` (the paper's eq. 3).
    Args: logits ``(B, K)``, K >= 2; target ``(B,)`` class indices, all valid.
    """
    z_s, z_t = student_logits.float() / temperature, teacher_logits.float() / temperature
    is_target = F.one_hot(target, z_s.shape[1]).bool()  # (B, K)

    def log_parts(z):
        lse = z.logsumexp(dim=1)  # (B,)
        rest = z[~is_target].view(len(z), -1)  # (B, K - 1), non-target logits
        log_b = torch.stack([z[is_target] - lse, rest.logsumexp(dim=1) - lse], dim=1)  # (B, 2)
        return log_b, F.log_softmax(rest, dim=1)

    log_b_s, log_hat_s = log_parts(z_s)
    log_b_t, log_hat_t = log_parts(z_t)
    tckd = (log_b_t.exp() * (log_b_t - log_b_s)).sum(dim=1)
    nckd = (log_hat_t.exp() * (log_hat_t - log_hat_s)).sum(dim=1)
    return tckd, nckd, log_b_t[:, 0].exp()


@register("dkd")
class DecoupledKD(nn.Module):
    """``loss = T^2 * mean_b (alpha * TCKD_b + beta * NCKD_b)`` (see ``dkd_parts``).

    The target class is the label; for unlabelled samples (label -1, or no labels at all) it
    is the teacher's argmax, since a transfer set has no labels. The authors' code also ramps
    the loss up over the first epochs (warm-up); this does not (the objective has no epoch).

    Args:
        alpha: weight of TCKD (>= 0; 1.0). beta: weight of NCKD (>= 0; 8.0, the paper's CIFAR-100
        setting). temperature: T (> 0; 4.0).
    Inputs:
        student, teacher: logits ``(B, K)``, K >= 2. target: ``(B,)`` or None.
    """

    def __init__(self, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0):
        super().__init__()
        if alpha < 0 or beta < 0 or temperature <= 0:
            raise ValueError("alpha and beta must be >= 0 and temperature > 0")
        self.alpha, self.beta, self.temperature = alpha, beta, temperature

    def forward(self, student, teacher, target=None):
        cls = teacher.argmax(dim=1)  # (B,)
        if target is not None:
            cls = torch.where(target != UNLABELLED, target, cls)
        tckd, nckd, _ = dkd_parts(student, teacher, cls, self.temperature)
        return (self.alpha * tckd + self.beta * nckd).mean() * self.temperature**2
