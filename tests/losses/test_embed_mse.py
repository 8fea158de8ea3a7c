import torch

from kdistill.losses import build_loss


def test_value_by_hand():
    # (1 - 3)^2 + (2 - 0)^2 = 8, over 2 elements
    assert build_loss("embed_mse")(torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 0.0]])).item() == 4.0


def test_zero_when_student_equals_teacher():
    emb = torch.randn(3, 5)
    assert build_loss("embed_mse")(emb, emb.clone()).item() == 0.0


def test_gradient_reaches_student_only():
    student = torch.randn(3, 5, requires_grad=True)
    teacher = torch.randn(3, 5, requires_grad=True)
    build_loss("embed_mse")(student, teacher.detach()).backward()
    assert student.grad.abs().sum() > 0 and teacher.grad is None
