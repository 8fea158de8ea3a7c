import math

import pytest
import torch

from kdistill.errors import KDistillError
from kdistill.losses import build_loss

# teacher: two identical directions (cosine 1); student: two orthogonal ones (cosine 0).
# Diagonals agree (cosine 1 on both sides); each off-diagonal entry differs by
#   e^{-2g} * sum_{p=1}^{P} (2g)^p / p!, and the loss is 2 * diff^2 / B^2 = diff^2 / 2.
TEACHER = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
STUDENT = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def test_value_by_hand_first_order():
    # g = 0.4: diff = 0.8 e^{-0.8}, loss = 0.32 e^{-1.6} = 0.064607
    loss = build_loss("cc", gamma=0.4, order=1)(STUDENT, TEACHER)
    assert loss.item() == pytest.approx(0.32 * math.exp(-1.6), abs=1e-6)


def test_value_by_hand_second_order_default():
    # diff = (0.8 + 0.32) e^{-0.8} = 1.12 e^{-0.8}, loss = 1.2544 e^{-1.6} / 2 = 0.126630
    assert build_loss("cc")(STUDENT, TEACHER).item() == pytest.approx(0.6272 * math.exp(-1.6), abs=1e-6)


def test_high_order_approaches_the_gaussian_kernel():
    # off-diagonal: teacher exp(0) = 1, student exp(-0.4 * ||f1 - f2||^2) = exp(-0.8)
    loss = build_loss("cc", gamma=0.4, order=20)(STUDENT, TEACHER)
    assert loss.item() == pytest.approx((1 - math.exp(-0.8)) ** 2 / 2, abs=1e-6)


def test_invariant_to_scaling():
    cc = build_loss("cc")
    feats, teacher = torch.randn(5, 4), torch.randn(5, 6)
    assert cc(3.0 * feats, teacher).item() == pytest.approx(cc(feats, teacher).item(), rel=1e-4)


def test_bad_arguments_name_the_loss():
    with pytest.raises(KDistillError, match="cc"):
        build_loss("cc", order=1.5)
