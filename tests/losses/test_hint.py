import torch

from kdistill.losses import build_loss


def test_value_by_hand():
    student = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert build_loss("hint")(student, torch.zeros(2, 2)).item() == 7.5  # (1 + 4 + 9 + 16) / 4


def test_zero_when_student_equals_teacher():
    feats = torch.randn(2, 3, 4, 4)
    assert build_loss("hint")(feats, feats.clone()).item() == 0.0


def test_gradient_reaches_student_only():
    student = torch.randn(2, 3, 4, 4, requires_grad=True)
    teacher = torch.randn(2, 3, 4, 4, requires_grad=True)
    build_loss("hint")(student, teacher.detach()).backward()
    assert student.grad.abs().sum() > 0 and teacher.grad is None
