"""Mean squared error between student and teacher embeddings, as in TinyBERT's hidden-state
distillation: Jiao, Yin, Shang, Jiang, Chen, Li, Wang and Liu, "TinyBERT: Distilling BERT for
Natural Language Understanding", Findings of EMNLP 2020, arXiv:1909.10351."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from kdistill.losses.registry import register


@register("embed_mse")
class EmbeddingMSE(nn.Module):
    """``loss = (1 / (B*D)) * sum_{b,d} (s_bd - t_bd)^2``: the mean over every element.

    Inputs:
        student: the adapted student embedding ``(B, D)``. teacher: ``(B, D)``.
    """

    def forward(self, student, teacher, target=None):
        return F.mse_loss(student.float(), teacher.float())
