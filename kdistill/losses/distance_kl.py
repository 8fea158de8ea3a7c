"""Relational distillation of in-batch neighbourhoods: the teacher's and student's distributions
over neighbours, in the form of Hinton and Roweis, "Stochastic Neighbor Embedding", NeurIPS 2002,
matched as in Park, Kim, Lu and Cho, "Relational Knowledge Distillation", CVPR 2019,
arXiv:1904.05068."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdistill.losses.registry import Contract, register


def neighbour_log_probs(x: torch.Tensor, tau: float) -> torch.Tensor:
    """``log P(i, j) = log softmax_{j != i}(-||x_i - x_j||^2 / tau)``: ``(B, D) -> (B, B - 1)``.

    Row i lists j = 0..B-1 without j = i.
    """
    x = x.flatten(1).float()
    x = x - x.mean(dim=0)  # distances do not change; the expansion below loses less precision
    sq = x.pow(2).sum(dim=1)  # (B,)
    dist = (sq[:, None] + sq[None, :] - 2 * x @ x.T).clamp_min(0)  # (B, B)
    off_diagonal = ~torch.eye(len(x), dtype=torch.bool, device=x.device)
    dist = dist[off_diagonal].view(len(x), len(x) - 1)  # (B, B - 1)
    return F.log_softmax(-dist / tau, dim=1)


@register("distance_kl", Contract(adapt=False, mean_over="batch"))
class DistanceKL(nn.Module):
    """``loss = (1 / B) * sum_i KL(P_t(i, .) || P_s(i, .))`` over in-batch neighbours.

    ``P(i, j) = softmax_{j != i}(-||x_i - x_j||^2 / tau)``, from the teacher's embeddings for
    ``P_t`` and the student's for ``P_s``; the diagonal j = i is left out.

    Student and teacher may have different widths: only distances within each are compared.
    Invariant to translating (or rotating) either set of embeddings. 0 for a batch of one.

    Args:
        tau: temperature on the squared distances (> 0).
    Inputs:
        student: ``(B, Ds)``. teacher: ``(B, Dt)``.
    """


    def __init__(self, tau: float = 1.0):
        super().__init__()
        if tau <= 0:
            raise ValueError("tau must be > 0")
        self.tau = tau

    def forward(self, student, teacher, target=None):
        if len(student) < 2:
            return student.sum() * 0.0
        log_p_s = neighbour_log_probs(student, self.tau)  # (B, B - 1)
        log_p_t = neighbour_log_probs(teacher, self.tau)
        return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
