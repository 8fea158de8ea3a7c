import math

import pytest
import torch

from kdistill.errors import KDistillError
from kdistill.losses import build_loss

A = torch.tensor([[math.log(3.0), 0.0]])  # softmax [0.75, 0.25]
B = torch.tensor([[0.0, math.log(3.0)]])  # softmax [0.25, 0.75]


def test_fixed_weights_by_hand():
    uniform = torch.zeros(1, 2)
    equal = build_loss("multi_kd", temperature=1.0)
    assert equal(uniform, (A, B)).item() == pytest.approx(0.0, abs=1e-7)  # p = [0.5, 0.5]
    # weights 3:1 -> p = [0.625, 0.375]; KL(p || uniform) = 0.625 ln 1.25 + 0.375 ln 0.75
    weighted = build_loss("multi_kd", temperature=1.0, weights=[3.0, 1.0])
    expected = 0.625 * math.log(1.25) + 0.375 * math.log(0.75)
    assert weighted(uniform, (A, B)).item() == pytest.approx(expected, abs=1e-6)


def test_confidence_weights_by_hand():
    a = torch.log(torch.tensor([[0.9, 0.1]]))  # confidence 0.9
    b = torch.log(torch.tensor([[0.4, 0.6]]))  # confidence 0.6
    # w = [0.6, 0.4] -> p = [0.6*0.9 + 0.4*0.4, 0.6*0.1 + 0.4*0.6] = [0.70, 0.30]
    p = torch.tensor([[0.70, 0.30]])
    loss = build_loss("multi_kd", temperature=1.0, weighting="confidence")
    assert loss(p.log(), (a, b)).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(torch.zeros(1, 2), (a, b)).item() > 0


def test_one_teacher_is_plain_kd():
    s, t = torch.randn(4, 5), torch.randn(4, 5)
    multi = build_loss("multi_kd", temperature=2.0)(s, (t,))
    plain = build_loss("kd", temperature=2.0, alpha=1.0)(s, t)
    assert multi.item() == pytest.approx(plain.item(), rel=1e-5)
    # a bare tensor is taken as one teacher
    assert build_loss("multi_kd", temperature=2.0)(s, t).item() == pytest.approx(plain.item(), rel=1e-5)


def test_bad_weights_fail_clearly():
    with pytest.raises(KDistillError, match="multi_kd"):
        build_loss("multi_kd", weighting="vote")
    with pytest.raises(KDistillError, match="one weight per teacher"):
        build_loss("multi_kd", weights=[1.0])(torch.zeros(1, 2), (A, B))
