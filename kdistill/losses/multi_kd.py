"""Soft targets from several teachers, combined by fixed weights or by each teacher's confidence
(multi-teacher distillation: You, Xu, Xu and Tao, "Learning from Multiple Teacher Networks",
KDD 2017; confidence weighting as in Zhang, Chen and Wang, "Confidence-Aware Multi-Teacher
Knowledge Distillation", ICASSP 2022, arXiv:2201.00007)."""

from __future__ import annotations

import torch
from torch import nn

from kdistill.errors import KDistillError
from kdistill.losses.registry import Contract, register


def combined_soft_targets(teacher_logits: tuple[torch.Tensor, ...], temperature: float,
                          weights: list[float] | None, weighting: str) -> torch.Tensor:
    """``p = sum_k w_k softmax(t_k / T)``: ``(B, K)``.

    ``fixed``: w_k from ``weights`` (normalised; equal by default). ``confidence``: per sample,
    w_k(x) proportional to teacher k's top-class probability at T = 1.
    """
    probs = torch.stack([t.float().div(temperature).softmax(-1) for t in teacher_logits])  # (M, B, K)
    if weighting == "confidence":
        conf = torch.stack([t.float().softmax(-1).amax(-1) for t in teacher_logits])  # (M, B)
        w = conf / conf.sum(0, keepdim=True)
    else:
        w = torch.tensor(weights or [1.0] * len(teacher_logits), device=probs.device)
        w = (w / w.sum())[:, None].expand(len(teacher_logits), probs.shape[1])  # (M, B)
    return (w[..., None] * probs).sum(0)


@register("multi_kd", Contract(adapt=False))
class MultiTeacherKD(nn.Module):
    """``T^2 * KL(p || softmax(s / T))`` with p the teachers' combined soft targets.

    Route the teachers' logits as a list: ``teacher: [logits, second:logits]`` (``second`` an
    entry of the recipe's ``teachers``).

    Args:
        temperature: T (> 0).
        weights: one fixed weight per teacher, in the order routed (``weighting: fixed``).
        weighting: ``fixed`` or ``confidence``.
    Inputs: student ``(B, K)``; teacher: a tuple of ``(B, K)`` logits.
    """

    def __init__(self, temperature: float = 4.0, weights: list[float] | None = None, weighting: str = "fixed"):
        super().__init__()
        if temperature <= 0 or weighting not in ("fixed", "confidence"):
            raise ValueError("temperature must be > 0 and weighting 'fixed' or 'confidence'")
        if weights is not None and (not weights or min(weights) < 0 or sum(weights) <= 0):
            raise ValueError("weights must be non-negative with a positive sum")
        self.temperature, self.weights, self.weighting = temperature, weights, weighting

    def forward(self, student, teacher, target=None):
        teachers = teacher if isinstance(teacher, tuple) else (teacher,)
        if self.weights is not None and len(self.weights) != len(teachers):
            raise KDistillError(f"loss 'multi_kd': {len(self.weights)} weights for {len(teachers)} teachers; "
                                "give one weight per teacher routed in 'teacher:'")
        p = combined_soft_targets(teachers, self.temperature, self.weights, self.weighting)  # (B, K)
        log_q = student.float().div(self.temperature).log_softmax(-1)
        kl = (p * (p.clamp_min(1e-12).log() - log_q)).sum(-1).mean()
        return kl * self.temperature**2
