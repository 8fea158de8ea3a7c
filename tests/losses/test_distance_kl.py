import math

import pytest
import torch

from kdistill.losses import build_loss


def test_value_by_hand():
    # teacher (0, 0), (1, 0), (0, 1): squared distances d01 = d02 = 1, d12 = 2.
    #   row 0 over (1, 2): softmax(-1, -1) = (1/2, 1/2)
    #   rows 1 and 2 over their other two: softmax(-1, -2) = (a, 1 - a), a = sigmoid(1)
    # student all at one point: every row uniform (1/2, 1/2), so KL(row || uniform) is
    #   0 for row 0 and a ln(2a) + (1 - a) ln(2(1 - a)) for rows 1 and 2; mean over 3 rows
    a = 1 / (1 + math.exp(-1))
    by_hand = 2 * (a * math.log(2 * a) + (1 - a) * math.log(2 * (1 - a))) / 3
    teacher = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert build_loss("distance_kl")(torch.zeros(3, 2), teacher).item() == pytest.approx(by_hand, abs=1e-6)


def test_invariant_to_translating_the_student():
    loss = build_loss("distance_kl")
    student, teacher = torch.randn(4, 3), torch.randn(4, 6)  # widths may differ
    moved = student + torch.tensor([5.0, -3.0, 2.0])
    assert loss(moved, teacher).item() == pytest.approx(loss(student, teacher).item(), abs=1e-5)


def test_batch_of_one_gives_zero():
    student = torch.randn(1, 3, requires_grad=True)
    loss = build_loss("distance_kl")(student, torch.randn(1, 3))
    assert loss.item() == 0.0
    loss.backward()
