import pytest
import torch

from kdistill.losses import build_loss


def test_value_by_hand():
    # cos((1, 0), (0, 1)) = 0 and cos((1, 1), (2, 2)) = 1: mean of 1 - 0 and 1 - 1 is 0.5
    student = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    teacher = torch.tensor([[0.0, 1.0], [2.0, 2.0]])
    assert build_loss("embed_cosine")(student, teacher).item() == pytest.approx(0.5, abs=1e-6)


def test_zero_when_student_equals_teacher_up_to_scale():
    emb = torch.randn(3, 5)
    assert build_loss("embed_cosine")(4.0 * emb, emb).item() < 1e-6
