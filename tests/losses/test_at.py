import pytest
import torch

from kdistill.errors import KDistillError
from kdistill.losses import build_loss


def test_value_by_hand():
    # student Q = [1, 0, 0, 0], already unit norm; teacher |A|^2 = [1, 1, 1, 1] -> [.5, .5, .5, .5]
    # squared distance: (1 - .5)^2 + 3 * (0 - .5)^2 = 1
    student = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])  # (1, 1, 2, 2)
    teacher = torch.tensor([[[[1.0, -1.0], [1.0, -1.0]]]])
    assert build_loss("at")(student, teacher).item() == pytest.approx(1.0, abs=1e-6)


def test_zero_for_the_same_attention_map_from_other_channel_counts():
    feats = torch.randn(2, 3, 4, 4)
    # the same attention map from 2 channels in the student, 1 in the teacher
    student = torch.cat([feats[:, :1], torch.zeros(2, 1, 4, 4)], dim=1)
    assert build_loss("at")(student, feats[:, :1]).item() < 1e-6


def test_invariant_to_positive_scaling_of_the_student():
    at = build_loss("at")
    student, teacher = torch.randn(2, 3, 4, 4), torch.randn(2, 5, 4, 4)
    assert at(3.0 * student, teacher).item() == pytest.approx(at(student, teacher).item(), abs=1e-6)


def test_student_map_is_resized_to_the_teachers():
    # a flat 2x2 map stays flat at 4x4, like the flat teacher map
    assert build_loss("at")(torch.ones(2, 3, 2, 2), torch.ones(2, 4, 4, 4)).item() < 1e-6


def test_vectors_are_refused_with_a_message():
    with pytest.raises(KDistillError, match="'at'"):
        build_loss("at")(torch.randn(2, 3), torch.randn(2, 3))
