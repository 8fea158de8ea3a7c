"""Entropy of the student's predictions: minimised as in Grandvalet and Bengio, "Semi-supervised
Learning by Entropy Minimization", NeurIPS 2004; maximised as a confidence penalty as in Pereyra,
Tucker, Chorowski, Kaiser and Hinton, "Regularizing Neural Networks by Penalizing Confident Output
Distributions", ICLR 2017 workshop, arXiv:1701.06548."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from kdistill.losses.registry import Contract, register


@register("entropy", Contract(teacher=False))
class PredictiveEntropy(nn.Module):
    """``loss = mean_b H(q_b)``, ``H(q) = -sum_k q_k log q_k``, ``q = softmax(logits / T)``.

    Returns +H: a positive weight in the recipe minimises the entropy (sharper predictions),
    a negative weight maximises it. Uses every sample, labelled or not.

    Args:
        temperature: T (> 0).
    Inputs:
        student: logits ``(B, K)``.
    """

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        if temperature <= 0:
            raise ValueError("temperature must be > 0")
        self.temperature = temperature

    def forward(self, student, teacher=None, target=None):
        log_q = F.log_softmax(student.float() / self.temperature, dim=-1)  # (B, K)
        return -(log_q.exp() * log_q).sum(dim=-1).mean()
