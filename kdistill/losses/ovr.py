"""One-vs-rest sigmoid losses beside softmax cross-entropy: one binary logistic problem per class
(Rifkin and Klautau, "In Defense of One-Vs-All Classification", JMLR 2004)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from kdistill.data.splits import UNLABELLED
from kdistill.losses.ce import labelled_cross_entropy
from kdistill.losses.registry import Contract, register


@register("ovr", Contract(teacher=False, mean_over="labelled"))
class OneVsRest(nn.Module):
    """``loss = mean_i [ -log sigmoid(f_y) - sum_{k != y} log sigmoid(-f_k) ] / (K if normalize)
    + ce_weight * CE(softmax(f), y)``, over the labelled samples (label -1 is left out).

    0 when the batch has no labelled sample.

    Args:
        normalize: divide the one-vs-rest sum by the number of classes K.
        ce_weight: weight of the softmax cross-entropy (0 for one-vs-rest alone).
    Inputs:
        student: logits ``f``, ``(B, K)``. target: ``(B,)``.
    """

    def __init__(self, normalize: bool = False, ce_weight: float = 1.0):
        super().__init__()
        self.normalize, self.ce_weight = normalize, ce_weight

    def forward(self, student, teacher=None, target=None):
        if target is None:
            return student.sum() * 0.0
        labelled = target != UNLABELLED  # (B,); masked, not indexed: nothing waits for the labels
        logits = student.float()  # (B, K)
        one_hot = F.one_hot(target.clamp_min(0), logits.shape[1]).float()  # (B, K); unlabelled rows masked below
        # -log sigmoid(f) for the true class, -log sigmoid(-f) for the others
        per_class = F.binary_cross_entropy_with_logits(logits, one_hot, reduction="none")
        ovr = per_class.mean(dim=1) if self.normalize else per_class.sum(dim=1)  # (B,)
        loss = (ovr * labelled).sum() / labelled.sum().clamp_min(1)
        if self.ce_weight:
            loss = loss + self.ce_weight * labelled_cross_entropy(student, target)
        return loss
