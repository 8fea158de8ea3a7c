"""Soft-target knowledge distillation: Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural
Network", 2015, arXiv:1503.02531."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdistill.losses.ce import labelled_cross_entropy
from kdistill.losses.registry import Contract, register


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(t/T) || softmax(s/T))``, averaged over the batch.

    The ``T^2`` keeps gradient magnitudes comparable across temperatures (Hinton et al., sec. 2).
    Args: student_logits, teacher_logits: ``(B, K)``.
    """
    T = temperature
    log_p_s = F.log_softmax(student_logits.float() / T, dim=-1)  # (B, K)
    log_p_t = F.log_softmax(teacher_logits.float() / T, dim=-1)  # (B, K)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return kl * T * T


@register("kd", Contract(mean_over=("samples", "labelled")))
class SoftTargetKD(nn.Module):
    """``alpha * T^2 * KL(p_t^T || p_s^T) + (1 - alpha) * CE(student, labels)``.

    The CE part uses only the labelled samples of the batch; on a transfer set without
    labels it is zero and the loss is the soft-target term alone. The soft part is a mean over
    the samples, the CE part over the labelled samples (``parts``), so a batch split into
    micro-batches weights each part by its own count.

    Args:
        temperature: softmax temperature T (> 0).
        alpha: weight of the soft-target term, in [0, 1].
    """

    def __init__(self, temperature: float = 4.0, alpha: float = 0.9):
        super().__init__()
        if temperature <= 0 or not 0 <= alpha <= 1:
            raise ValueError("temperature must be > 0 and alpha in [0, 1]")
        self.temperature, self.alpha = temperature, alpha

    def parts(self, student, teacher, target=None) -> dict[str, torch.Tensor]:
        """``{"samples": alpha * soft-target term, "labelled": (1 - alpha) * CE}``."""
        soft = soft_kl(student, teacher, self.temperature)
        if self.alpha == 1.0:
            return {"samples": soft}
        return {"samples": self.alpha * soft, "labelled": (1 - self.alpha) * labelled_cross_entropy(student, target)}

    def forward(self, student, teacher, target=None):
        return sum(self.parts(student, teacher, target).values())
