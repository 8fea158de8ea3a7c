"""Neuron Selectivity Transfer: Huang and Wang, "Like What You Like: Knowledge Distill via Neuron
Selectivity Transfer", 2017, arXiv:1707.01219."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdistill.errors import KDistillError
from kdistill.losses.registry import Contract, register


@register("nst", Contract(adapt=False))
class NeuronSelectivityTransfer(nn.Module):
    """Squared MMD between the student's and the teacher's channel maps, with ``k(x, y) = (x^T y + c)^d``.

    Each channel's flattened spatial map ``f = vec(A_c) / ||vec(A_c)||_2`` (length H*W) is one
    sample; per image,
    ``MMD^2 = mean_{i,i'} k(f_t^i, f_t^i') + mean_{j,j'} k(f_s^j, f_s^j') - 2 mean_{i,j} k(f_s^j, f_t^i)``
    over the Ct teacher and Cs student channels, then averaged over the batch. The paper's
    total is ``CE + lambda/2 * MMD^2``: put lambda/2 in the term's weight.

    Channel counts may differ (``adapt = False``). When spatial sizes differ the student's
    feature map is resized to the teacher's (bilinear) before the maps are normalised.

    Args:
        degree: d (int >= 1; 2 in the paper). c: the kernel's constant (>= 0; 0 in the paper).
    Inputs:
        student: ``(B, Cs, Hs, Ws)``. teacher: ``(B, Ct, Ht, Wt)``.
    """


    def __init__(self, degree: int = 2, c: float = 0.0):
        super().__init__()
        if not isinstance(degree, int) or degree < 1 or c < 0:
            raise ValueError("degree must be an int >= 1 and c >= 0")
        self.degree, self.c = degree, c

    def kernel_mean(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``mean_{i,j} k(x_i, y_j)`` per sample: ``(B, Cx, N), (B, Cy, N) -> (B,)``."""
        return (x @ y.transpose(1, 2) + self.c).pow(self.degree).mean(dim=(1, 2))

    def forward(self, student, teacher, target=None):
        if student.dim() != 4 or teacher.dim() != 4:
            raise KDistillError(
                f"loss 'nst': needs feature maps (B, C, H, W), got student {tuple(student.shape)} "
                f"and teacher {tuple(teacher.shape)}; tap convolutional layers."
            )
        s, t = student.float(), teacher.float()
        if s.shape[-2:] != t.shape[-2:]:
            s = F.interpolate(s, size=t.shape[-2:], mode="bilinear", align_corners=False)
        f_s = F.normalize(s.flatten(2), dim=2)  # (B, Cs, H*W)
        f_t = F.normalize(t.flatten(2), dim=2)  # (B, Ct, H*W)
        mmd = self.kernel_mean(f_t, f_t) + self.kernel_mean(f_s, f_s) - 2 * self.kernel_mean(f_s, f_t)
        return mmd.mean()
