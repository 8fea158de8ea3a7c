import pytest
import torch
import torch.nn.functional as F

from kdistill.errors import KDistillError
from kdistill.losses import build_loss


def test_value_by_hand_on_a_map():
    # residual [[1, 2], [3, 5]]: horizontal (2-1)^2 + (5-3)^2 = 5, vertical (3-1)^2 + (5-2)^2 = 13
    # (5 + 13) / (C*H*W = 4) = 4.5
    student = torch.tensor([[[[1.0, 2.0], [3.0, 5.0]]]])  # (1, 1, 2, 2)
    assert build_loss("residual_smooth")(student, torch.zeros(1, 1, 2, 2)).item() == 4.5


def test_value_by_hand_on_sequences_and_vectors():
    # residual (0, 1, 3) along T or D: (1 - 0)^2 + (3 - 1)^2 = 5, over 3 elements
    smooth = build_loss("residual_smooth")
    r = torch.tensor([0.0, 1.0, 3.0])
    assert smooth(r.view(1, 3, 1), torch.zeros(1, 3, 1)).item() == pytest.approx(5 / 3)
    assert smooth(r.view(1, 3), torch.zeros(1, 3)).item() == pytest.approx(5 / 3)


def test_zero_for_a_constant_residual_though_mse_is_not():
    teacher = torch.randn(2, 3, 4, 4)
    student = teacher + 3.0
    assert build_loss("residual_smooth")(student, teacher).item() < 1e-10
    assert F.mse_loss(student, teacher).item() > 8.0


def test_mismatched_shapes_are_refused_with_a_message():
    with pytest.raises(KDistillError, match="residual_smooth"):
        build_loss("residual_smooth")(torch.randn(2, 3), torch.randn(2, 4))
