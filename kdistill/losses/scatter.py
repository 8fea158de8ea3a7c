"""Intra-class scatter of the student's embedding: the within-class term of Fisher's criterion
(Fisher, "The Use of Multiple Measurements in Taxonomic Problems", 1936); as a loss, the "center
loss" of Wen, Zhang, Li and Qiao, "A Discriminative Feature Learning Approach for Deep Face
Recognition", ECCV 2016, with in-batch centres."""

from __future__ import annotations

import torch
from torch import nn

from kdistill.data.splits import UNLABELLED
from kdistill.losses.registry import Contract, register


@register("scatter", Contract(teacher=False, mean_over="labelled"))
class IntraClassScatter(nn.Module):
    """Mean squared distance of each labelled embedding to its class mean within the batch.

    ``loss = (1 / N) * sum_i || x_i - m_{y_i} ||_2^2``, ``m_k = mean of the x_i with y_i = k``,
    over the N labelled samples of the batch (label -1 is left out). A class seen once adds 0
    but still counts in N. 0 when the batch has no labelled sample.

    Inputs:
        student: ``(B, D)``, or ``(B, C, H, W)`` flattened to ``(B, C*H*W)``. target: ``(B,)``.
    """

    def forward(self, student, teacher=None, target=None):
        if target is None or not bool((target != UNLABELLED).any()):
            return student.sum() * 0.0
        labelled = target != UNLABELLED
        x = student.flatten(1)[labelled].float()  # (N, D)
        classes, index = target[labelled].unique(return_inverse=True)  # index: (N,) in [0, K)
        sums = x.new_zeros(len(classes), x.shape[1]).index_add_(0, index, x)  # (K, D)
        counts = torch.bincount(index, minlength=len(classes)).unsqueeze(1)  # (K, 1)
        means = sums / counts
        return (x - means[index]).pow(2).sum(dim=1).mean()
