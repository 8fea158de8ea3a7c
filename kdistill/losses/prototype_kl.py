"""Fine-tuning a prototype classifier towards the teacher: ``KL(p || M) + lam * H(p)``, where M is
the softmax over negative distances to class prototypes (Snell, Swersky and Zemel, "Prototypical
Networks for Few-shot Learning", NeurIPS 2017, arXiv:1703.05175)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdistill.losses.ce import labelled_cross_entropy
from kdistill.losses.registry import Contract, register


@register("prototype_kl", Contract(mean_over=("samples", "labelled")))
class PrototypeKL(nn.Module):
    """``loss = mean_b [ KL(p_b || M_b) + lam * H(p_b) ]``, ``M = softmax(student)``.

    With a teacher, ``p = softmax(teacher / T)`` and the labels are not read. Without one,
    ``p`` is the one-hot label: H(p) = 0 and the KL is the cross-entropy, averaged over the
    labelled samples only (label -1 is left out; 0 when there are none).

    H(p) does not depend on the student, so ``lam`` shifts the value, not the gradient.
    There is no ``T^2`` factor, and T does not divide the student's logits.

    Args:
        lam: weight of the entropy term (> 0).
        temperature: T (> 0), applied to the teacher's logits.
    Inputs:
        student: negative distances to the class prototypes ``(B, K)``.
        teacher: the teacher's logits ``(B, K)``, or None. target: ``(B,)``.
    """

    def __init__(self, lam: float = 0.1, temperature: float = 1.0):
        super().__init__()
        if lam <= 0 or temperature <= 0:
            raise ValueError("lam and temperature must be > 0")
        self.lam, self.temperature = lam, temperature

    def parts(self, student, teacher=None, target=None) -> dict[str, torch.Tensor]:
        """A mean over the samples with a teacher, over the labelled samples without one."""
        if teacher is None:
            return {"labelled": labelled_cross_entropy(student, target)}
        log_m = F.log_softmax(student.float(), dim=-1)  # (B, K)
        log_p = F.log_softmax(teacher.float() / self.temperature, dim=-1)  # (B, K)
        kl = F.kl_div(log_m, log_p, reduction="batchmean", log_target=True)
        entropy = -(log_p.exp() * log_p).sum(dim=-1).mean()
        return {"samples": kl + self.lam * entropy}

    def forward(self, student, teacher=None, target=None):
        return sum(self.parts(student, teacher, target).values())
