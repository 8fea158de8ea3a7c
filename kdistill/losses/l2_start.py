"""L2 pull of the student's weights to a starting point theta_0 (as in L2-SP, Li, Grandvalet and
Davis, ICML 2018, arXiv:1802.01483)."""

from __future__ import annotations

import torch
from torch import nn

from kdistill.losses.registry import register
from kdistill.models.taps import WEIGHTS


@register("l2_start")
class L2ToStart(nn.Module):
    """``||theta - theta_0||^2 = sum over parameters of sum((p - p_0)^2)``.

    theta_0 is set by the run before the stage trains (``set_start``): the student's
    initialisation (``start: init``; for a sub-network of the teacher, the weights taken from
    the teacher), the weights this stage starts from (``start: stage``, the default: after a
    distillation stage, its result), or the weights a named earlier stage ended with.

    Inputs:
        student: the student's trainable parameters, a list of tensors (the tap
            ``weights``, this loss's default; the loop fills it). teacher, target: unused.
    Args:
        start: ``init``, ``stage`` or the name of an earlier stage.
    """

    uses_teacher = False
    reads = WEIGHTS  # the student "feature" this loss reads by default

    def __init__(self, start: str = "stage"):
        super().__init__()
        self.start = start
        self.theta_0: list[torch.Tensor] = []

    def set_start(self, tensors: list[torch.Tensor]) -> None:
        """Fix theta_0: one tensor per trainable parameter, in ``model.parameters()`` order."""
        self.theta_0 = [t.detach().clone() for t in tensors]

    def forward(self, student, teacher=None, target=None):
        if len(student) != len(self.theta_0):
            raise RuntimeError("l2_start: theta_0 is not set for these parameters; call set_start first")
        return sum(((p.float() - p0.to(p.device).float()) ** 2).sum() for p, p0 in zip(student, self.theta_0))
