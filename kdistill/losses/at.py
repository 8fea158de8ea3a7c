"""Attention Transfer: Zagoruyko and Komodakis, "Paying More Attention to Attention: Improving the
Performance of Convolutional Neural Networks via Attention Transfer", ICLR 2017, arXiv:1612.03928."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdistill.errors import KDistillError
from kdistill.losses.registry import Contract, register


def attention_map(feats: torch.Tensor, p: float) -> torch.Tensor:
    """``Q = sum_c |A_c|^p``: ``(B, C, H, W) -> (B, 1, H, W)``."""
    return feats.float().abs().pow(p).sum(dim=1, keepdim=True)


@register("at", Contract(adapt=False))
class AttentionTransfer(nn.Module):
    """Distance between the L2-normalised spatial attention maps of student and teacher.

    ``loss = mean_b || Q_s / ||Q_s||_2 - Q_t / ||Q_t||_2 ||_2^2`` with ``Q = vec(sum_c |A_c|^p)``
    per sample: the squared form of the paper's attention-transfer term, which uses the
    unsquared norm and a factor beta/2 (put beta/2 in the term's weight). The authors' code
    also divides by H*W; this does not.

    The maps are summed over channels, so student and teacher channels may differ: the loss
    needs no adapter (``adapt = False``: the objective passes the raw student map). When
    spatial sizes differ, the student's attention map ``Q_s`` is resized to the teacher's size
    (bilinear) before it is normalised.

    Args:
        p: power on the absolute activations (2 in the paper).
    Inputs:
        student: ``(B, Cs, Hs, Ws)``. teacher: ``(B, Ct, Ht, Wt)``.
    """


    def __init__(self, p: float = 2.0):
        super().__init__()
        if p <= 0:
            raise ValueError("p must be > 0")
        self.p = p

    def forward(self, student, teacher, target=None):
        if student.dim() != 4 or teacher.dim() != 4:
            raise KDistillError(
                f"loss 'at': needs feature maps (B, C, H, W), got student {tuple(student.shape)} "
                f"and teacher {tuple(teacher.shape)}; tap convolutional layers."
            )
        q_s, q_t = attention_map(student, self.p), attention_map(teacher, self.p)  # (B, 1, H, W)
        if q_s.shape[-2:] != q_t.shape[-2:]:
            q_s = F.interpolate(q_s, size=q_t.shape[-2:], mode="bilinear", align_corners=False)
        q_s = F.normalize(q_s.flatten(1), dim=1)  # (B, Ht * Wt)
        q_t = F.normalize(q_t.flatten(1), dim=1)
        return (q_s - q_t).pow(2).sum(dim=1).mean()
