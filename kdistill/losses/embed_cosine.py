"""Cosine distance between student and teacher embeddings, the cosine embedding loss of DistilBERT:
Sanh, Debut, Chaumond and Wolf, "DistilBERT, a distilled version of BERT: smaller, faster, cheaper
and lighter", 2019, arXiv:1910.01108."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from kdistill.losses.registry import register


@register("embed_cosine")
class EmbeddingCosine(nn.Module):
    """``loss = mean_b (1 - cos(s_b, t_b))``, ``cos(u, v) = u.v / (||u|| ||v||)``.

    Insensitive to the scale of either embedding. Inputs of more than two dimensions are
    flattened per sample.

    Inputs:
        student: the adapted student embedding ``(B, D)``. teacher: ``(B, D)``.
    """

    def forward(self, student, teacher, target=None):
        cos = F.cosine_similarity(student.float().flatten(1), teacher.float().flatten(1), dim=1)  # (B,)
        return (1 - cos).mean()
