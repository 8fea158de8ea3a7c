import pytest
import torch

from kdistill.errors import KDistillError
from kdistill.losses import build_loss


def test_value_by_hand():
    # one image, 1x2 maps. teacher: one channel (1, 0). student: channels (1, 0) and (0, 1).
    # k = (x.y)^2: teacher-teacher mean 1; student-student mean (1 + 0 + 0 + 1) / 4 = 0.5;
    # cross mean (1 + 0) / 2 = 0.5. MMD^2 = 1 + 0.5 - 2 * 0.5 = 0.5
    teacher = torch.tensor([[[[1.0, 0.0]]]])  # (1, 1, 1, 2)
    student = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])  # (1, 2, 1, 2)
    assert build_loss("nst")(student, teacher).item() == pytest.approx(0.5, abs=1e-6)


def test_zero_for_repeated_channels():
    feats = torch.randn(2, 3, 4, 4)
    nst = build_loss("nst")
    # each channel twice: the same distribution of maps, so MMD = 0 with other channel counts
    assert nst(torch.cat([feats, 2.0 * feats], dim=1), feats).abs().item() < 1e-6


def test_student_maps_are_resized_to_the_teachers():
    assert build_loss("nst")(torch.ones(2, 3, 2, 2), torch.ones(2, 4, 4, 4)).abs().item() < 1e-6


def test_vectors_and_bad_arguments_are_refused():
    with pytest.raises(KDistillError, match="'nst'"):
        build_loss("nst")(torch.randn(2, 3), torch.randn(2, 3))
    with pytest.raises(KDistillError, match="nst"):
        build_loss("nst", degree=0)
