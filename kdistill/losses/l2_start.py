"""L2 pull of the student's weights to a starting point theta_0, as in L2-SP: Li, Grandvalet and
Davis, "Explicit Inductive Bias for Transfer Learning with Convolutional Networks", ICML 2018,
arXiv:1802.01483."""

from __future__ import annotations

from torch import nn

from kdistill.losses.registry import Contract, register
from kdistill.models.taps import WEIGHTS


@register("l2_start", Contract(teacher=False, reads=WEIGHTS, start=True, mean_over="step"))
class L2ToStart(nn.Module):
    """``||theta - theta_0||^2 = sum over parameters of sum((p - p_0)^2)``.

    theta_0 is chosen by the run before the stage trains (the contract's ``start``): the
    student's initialisation (``start: init``; for a sub-network of the teacher, the weights
    taken from the teacher), the weights this stage starts from (``start: stage``, the default:
    after a distillation stage, its result), or the weights a named earlier stage ended with.

    Inputs:
        student: the student's trainable parameters, a list of tensors (the feature
            ``weights``, this loss's default).
        start: theta_0, one tensor per parameter in the same order. teacher, target: unused.
    The term's ``start`` argument (``init``, ``stage`` or the name of an earlier stage) is read
    by the objective, which passes the weights it names.
    """

    def forward(self, student, teacher=None, target=None, start=None):
        if start is None or len(student) != len(start):
            raise RuntimeError("l2_start: theta_0 is not given for these parameters (start=, one tensor a parameter)")
        return sum(((p.float() - p0.to(p.device).float()) ** 2).sum() for p, p0 in zip(student, start))
