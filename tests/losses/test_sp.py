import math

import pytest
import torch

from kdistill.losses import build_loss


def test_value_by_hand():
    # teacher (1,0), (0,1): G = I, rows already unit. student (1,0), (1,0): G = all ones,
    # rows normalised to 1/sqrt2 each. ||diff||_F^2 = 2 (1 - 1/sqrt2)^2 + 2 (1/sqrt2)^2 = 4 - 2 sqrt2,
    # divided by B^2 = 4: 1 - sqrt2/2 = 0.292893
    student = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    teacher = torch.eye(2)
    assert build_loss("sp")(student, teacher).item() == pytest.approx(1 - math.sqrt(2) / 2, abs=1e-6)


def test_zero_for_the_same_gram_matrix_from_other_shapes():
    feats = torch.randn(4, 3, 2, 2)
    # the same Gram matrix from a map with more channels (zeros appended)
    wider = torch.cat([feats, torch.zeros(4, 2, 2, 2)], dim=1)
    assert build_loss("sp")(wider, feats).item() < 1e-6


def test_invariant_to_a_global_scale_of_the_student():
    sp = build_loss("sp")
    student, teacher = torch.randn(4, 3, 2, 2), torch.randn(4, 5, 4, 4)
    assert sp(7.0 * student, teacher).item() == pytest.approx(sp(student, teacher).item(), rel=1e-4)
