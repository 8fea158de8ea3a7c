"""Correlation Congruence for Knowledge Distillation (Peng, Jin, Liu, Li, Wu, Liu, Zhou and Zhang,
ICCV 2019, arXiv:1904.01802)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kdistill.losses.registry import Contract, register


def taylor_rbf_correlation(x: torch.Tensor, gamma: float, order: int) -> torch.Tensor:
    """``C_ij = sum_{p=0}^{P} exp(-2 gamma) (2 gamma)^p / p! * (f_i^T f_j)^p``: ``(B, D) -> (B, B)``.

    ``f = x / ||x||``. For unit vectors the Gaussian RBF is
    ``exp(-gamma ||f_i - f_j||^2) = exp(-2 gamma) exp(2 gamma f_i^T f_j)``; C is that with the
    second exponential cut to its order-P Taylor series.
    """
    f = F.normalize(x.flatten(1).float(), dim=1)
    cos = f @ f.T  # (B, B)
    coeffs = [math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) for p in range(order + 1)]
    return sum(c * cos.pow(p) for p, c in enumerate(coeffs))


@register("cc", Contract(adapt=False, mean_over="pairs"))
class CorrelationCongruence(nn.Module):
    """``loss = ||C_s - C_t||_F^2 / B^2``, C the Taylor-approximated RBF correlation over the batch.

    The correlation-congruence term alone; the paper adds CE and KD, which are separate terms
    here. The features are L2-normalised first (the Taylor form above assumes unit vectors),
    as common implementations do; C is (B, B) whatever the width, so student and teacher
    widths may differ and no adapter is used. The defaults gamma = 0.4, P = 2 are those of the
    common reimplementation in Knowledge-Distillation-Zoo (not checked against the paper's text).

    Args:
        gamma: RBF bandwidth (> 0). order: P, the Taylor order (int >= 0).
    Inputs:
        student: ``(B, Ds)``, teacher: ``(B, Dt)``; higher dims are flattened.
    """


    def __init__(self, gamma: float = 0.4, order: int = 2):
        super().__init__()
        if gamma <= 0 or not isinstance(order, int) or order < 0:
            raise ValueError("gamma must be > 0 and order an int >= 0")
        self.gamma, self.order = gamma, order

    def forward(self, student, teacher, target=None):
        c_s = taylor_rbf_correlation(student, self.gamma, self.order)  # (B, B)
        c_t = taylor_rbf_correlation(teacher, self.gamma, self.order)
        return (c_s - c_t).pow(2).sum() / len(c_s) ** 2
