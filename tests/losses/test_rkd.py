import math

import pytest
import torch

from kdistill.errors import KDistillError
from kdistill.losses import build_loss

# student: right triangle (0,0), (1,0), (0,1); teacher: equilateral triangle of side 1
RIGHT = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
EQUILATERAL = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2]])


def test_distance_term_by_hand():
    # student distances 1, 1, sqrt2, mean mu = (2 + sqrt2) / 3: normalised 3/(2+sqrt2) (twice) and
    # 3 sqrt2/(2+sqrt2); teacher all 1. Differences all < 1, so Huber = d^2 / 2, mean over the pairs.
    a, b = 3 / (2 + math.sqrt(2)) - 1, 3 * math.sqrt(2) / (2 + math.sqrt(2)) - 1
    by_hand = (2 * a**2 / 2 + b**2 / 2) / 3  # = 0.014719
    loss = build_loss("rkd", distance_weight=1.0, angle_weight=0.0)(RIGHT, EQUILATERAL)
    assert loss.item() == pytest.approx(by_hand, abs=1e-6)


def test_angle_term_by_hand():
    # teacher: every angle 60 deg, cos 0.5. student: cos 0 at (0,0), cos(45 deg) at the others;
    # 6 ordered triplets: 2 with difference -0.5, 4 with sqrt2/2 - 0.5; Huber = d^2 / 2
    by_hand = (2 * 0.5**2 / 2 + 4 * (math.sqrt(2) / 2 - 0.5) ** 2 / 2) / 6  # = 0.055964
    loss = build_loss("rkd", distance_weight=0.0, angle_weight=1.0)(RIGHT, EQUILATERAL)
    assert loss.item() == pytest.approx(by_hand, abs=1e-6)


def test_invariant_to_scaling_and_translating_the_student():
    rkd = build_loss("rkd")
    student, teacher = torch.randn(5, 3), torch.randn(5, 6)  # widths may differ
    base = rkd(student, teacher).item()
    assert rkd(4.0 * student, teacher).item() == pytest.approx(base, rel=1e-4)
    assert rkd(student + torch.tensor([5.0, -3.0, 2.0]), teacher).item() == pytest.approx(base, rel=1e-4)


def test_feature_maps_are_flattened_and_a_batch_of_one_gives_zero():
    rkd = build_loss("rkd")
    maps = torch.randn(4, 2, 3, 3)
    assert rkd(maps, maps.flatten(1).clone()).item() < 1e-6
    assert rkd(torch.randn(1, 3), torch.randn(1, 3)).item() == 0.0


def test_bad_arguments_name_the_loss():
    with pytest.raises(KDistillError, match="rkd"):
        build_loss("rkd", angle_weight=-1.0)


def test_triplet_cosines_from_the_gram_matrix_equal_the_explicit_differences():
    from kdistill.losses.rkd import triplet_cosines

    torch.manual_seed(0)
    x = torch.randn(9, 5) * 3 + 10  # off-centre, so centring matters
    x[4] = x[2]  # a duplicate: e = 0, cosine 0 for triplets through the pair
    e = torch.nn.functional.normalize(x[None, :] - x[:, None], dim=-1)  # e[j, i] = e_ij
    cos = e @ e.transpose(1, 2)  # cos[j, i, k]
    idx = torch.arange(9)
    i, j, k = idx[None, :, None], idx[:, None, None], idx[None, None, :]
    distinct = (i != j) & (j != k) & (i != k)
    got = triplet_cosines(x)
    torch.testing.assert_close(got[distinct], cos[distinct], atol=1e-5, rtol=1e-5)
    assert (got[~distinct] == 0).all() and (got[distinct][cos[distinct] == 0] == 0).all()
    assert (cos[distinct] == 0).sum() == 2 * 7 * 2  # the duplicate pair (2, 4): either order, 7 others as k or i


def test_angle_gradients_are_finite_with_duplicates_in_the_batch():
    x = torch.randn(6, 4)
    x = torch.cat([x, x[:2]]).requires_grad_()
    build_loss("rkd", distance_weight=0.0, angle_weight=1.0)(x, torch.randn(8, 3)).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
