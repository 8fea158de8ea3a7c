"""Variational Information Distillation: Ahn, Hu, Damianou, Lawrence and Dai, "Variational Information
Distillation for Knowledge Transfer", CVPR 2019, arXiv:1904.05835."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter

from kdistill.losses.registry import register


@register("vid")
class VariationalInformationDistillation(LazyModuleMixin, nn.Module):
    """Gaussian negative log-likelihood of the teacher feature under the student's prediction.

    ``loss = mean over b, c, positions of 0.5 * (log sigma_c^2 + (z - mu)^2 / sigma_c^2)``
    with ``sigma_c^2 = softplus(alpha_c) + eps``: the paper's Gaussian with a predicted mean and
    a learned per-channel variance, less the constant ``0.5 * log(2 pi)``, averaged over every
    element (batch, channels and positions) as in the authors' code.

    Args:
        init_variance: ``sigma_c^2`` at the start (5.0 in the authors' code).
        eps: floor on the variance.
    Inputs:
        student: ``mu(a)``, the adapted student feature, ``(B, C, H, W)`` or ``(B, C)``.
        teacher: ``z``, the same shape. Channels are axis 1.

    ``alpha`` (``(C,)``) is learned with the student. C is known only at the first call, so it
    is a lazy parameter: it exists (uninitialised) from construction, so an optimizer built
    before the first call holds it, and the first forward gives it its shape, on the input's
    device, in place. Code that reads its shape or value must run one forward first.
    """

    def __init__(self, init_variance: float = 5.0, eps: float = 1e-5):
        super().__init__()
        if not init_variance > eps > 0:
            raise ValueError("need init_variance > eps > 0")
        self.init_variance, self.eps = init_variance, eps
        self.alpha = UninitializedParameter()

    def initialize_parameters(self, student, teacher=None, target=None) -> None:
        # inverse softplus, so that softplus(alpha) + eps == init_variance
        start = math.log(math.expm1(self.init_variance - self.eps))
        with torch.no_grad():
            self.alpha.materialize((student.shape[1],), device=student.device, dtype=torch.float32)
            self.alpha.fill_(start)

    def variance(self) -> torch.Tensor:
        """``sigma_c^2``, shape ``(C,)``."""
        return F.softplus(self.alpha) + self.eps

    def forward(self, student, teacher, target=None):
        mu, z = student.float(), teacher.float()
        var = self.variance().view(1, -1, *[1] * (mu.dim() - 2))  # (1, C, 1, ...)
        nll = 0.5 * (var.log() + (z - mu) ** 2 / var)  # (B, C, ...)
        return nll.mean()
