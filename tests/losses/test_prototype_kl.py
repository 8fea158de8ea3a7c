import math

import pytest
import torch

from kdistill.errors import KDistillError
from kdistill.losses import build_loss

# teacher softmax p = (3/4, 1/4) against a uniform M:
KL = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
H = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))


def test_value_by_hand_with_a_teacher():
    loss = build_loss("prototype_kl", lam=0.1)(torch.zeros(1, 2), torch.tensor([[math.log(3.0), 0.0]]))
    assert loss.item() == pytest.approx(KL + 0.1 * H, abs=1e-6)
    # teacher logits doubled at T = 2 give the same p
    hot = build_loss("prototype_kl", lam=0.1, temperature=2.0)
    loss = hot(torch.zeros(1, 2), torch.tensor([[2 * math.log(3.0), 0.0]]))
    assert loss.item() == pytest.approx(KL + 0.1 * H, abs=1e-6)


def test_labels_without_a_teacher_give_cross_entropy():
    # M = softmax(ln 3, 0) = (3/4, 1/4), one-hot p on class 0: KL = -ln 3/4, H = 0
    loss = build_loss("prototype_kl")
    student = torch.tensor([[math.log(3.0), 0.0], [5.0, -5.0]])
    assert loss(student, None, torch.tensor([0, -1])).item() == pytest.approx(-math.log(0.75), abs=1e-6)
    assert loss(student, None, torch.tensor([-1, -1])).item() == 0.0


def test_minimum_when_student_equals_teacher():
    teacher = torch.randn(3, 4)
    student = teacher.clone().requires_grad_()
    loss = build_loss("prototype_kl", lam=0.5)(student, teacher)
    entropy = -(teacher.softmax(-1) * teacher.log_softmax(-1)).sum(-1).mean()
    assert loss.item() == pytest.approx(0.5 * entropy.item(), abs=1e-6)  # KL = 0
    loss.backward()
    assert student.grad.abs().max() < 1e-6


def test_bad_arguments_name_the_loss():
    with pytest.raises(KDistillError, match="prototype_kl"):
        build_loss("prototype_kl", lam=0.0)
