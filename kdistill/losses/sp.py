"""Similarity-Preserving Knowledge Distillation (Tung and Mori, ICCV 2019, arXiv:1907.09682)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdistill.losses.registry import Contract, register


def normalised_gram(x: torch.Tensor) -> torch.Tensor:
    """``G~ = row-L2-normalise(A A^T)`` with ``A = x`` flattened: ``(B, ...) -> (B, B)``."""
    a = x.flatten(1).float()  # (B, D)
    return F.normalize(a @ a.T, dim=1)


@register("sp", Contract(adapt=False, mean_over="pairs"))
class SimilarityPreserving(nn.Module):
    """``loss = ||G~_s - G~_t||_F^2 / B^2``, ``G~`` the row-normalised batch Gram matrix.

    One layer pair of the paper's sum over pairs; the paper's weight gamma is the term's weight.
    Invariant to scaling either feature set by a positive constant. Widths may differ.

    Inputs:
        student: ``(B, Cs, Hs, Ws)`` or ``(B, Ds)``; teacher: ``(B, Ct, Ht, Wt)`` or ``(B, Dt)``.
    """


    def forward(self, student, teacher, target=None):
        g_s, g_t = normalised_gram(student), normalised_gram(teacher)  # (B, B)
        return (g_s - g_t).pow(2).sum() / len(g_s) ** 2
