"""Closeness of two embedding spaces: the mean cosine and the shared nearest neighbours."""

import math

import pytest
import torch

from kdistill.closeness import mean_cosine, neighbour_overlap
from kdistill.errors import KDistillError


def on_circle(degrees: list[float]) -> torch.Tensor:
    """Unit vectors at the given angles: ``(N, 2)``."""
    rad = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([rad.cos(), rad.sin()], 1)


def test_mean_cosine_by_hand():
    x = torch.tensor([[1.0, 2.0], [-3.0, 0.5]])
    assert mean_cosine(x, 7 * x) == pytest.approx(1.0)
    assert mean_cosine(torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[0.0, 5.0], [3.0, 0.0]])) == 0.0
    # rows: (3, 4).(4, 3) / 25 = 24/25 and (1, 0).(1, 1) / sqrt(2) = 1/sqrt(2)
    student = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    teacher = torch.tensor([[4.0, 3.0], [1.0, 1.0]])
    assert mean_cosine(student, teacher) == pytest.approx((24 / 25 + 1 / math.sqrt(2)) / 2)


def test_mean_cosine_needs_equal_widths():
    with pytest.raises(KDistillError, match="widths differ"):
        mean_cosine(torch.ones(3, 2), torch.ones(3, 4))
    with pytest.raises(KDistillError, match="one row per sample"):
        mean_cosine(torch.ones(3, 2), torch.ones(4, 2))


def test_neighbour_overlap_of_same_and_rotated_embeddings_is_one():
    x = torch.randn(50, 8, dtype=torch.float64)
    rotation, _ = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64))
    assert neighbour_overlap(x, x) == 1.0
    assert neighbour_overlap(x @ rotation, x) == 1.0
    assert neighbour_overlap(3 * x, x, k=5, chunk_size=7) == 1.0  # lengths do not matter, nor chunks


def test_neighbour_overlap_by_hand():
    # teacher at 0, 10, 30, 70 degrees; 2 nearest others: {1, 2}, {0, 2}, {1, 0}, {2, 1}
    teacher = on_circle([0, 10, 30, 70])
    # student at 0, 10, 45, 40 degrees, wider (3 columns), rows of any length:
    # 2 nearest others: {1, 3}, {0, 3}, {3, 1}, {2, 1}; shared 1, 1, 1, 2 of 2
    student = torch.cat([on_circle([0, 10, 45, 40]), torch.zeros(4, 1)], 1) * torch.tensor([[1.0], [2.0], [0.5], [3.0]])
    assert neighbour_overlap(student, teacher, k=2) == pytest.approx(5 / 8)
    assert neighbour_overlap(student, teacher, k=2, chunk_size=3) == pytest.approx(5 / 8)
    # k = 1: row 0 and 1 agree, row 2 (teacher 1, student 3) does not, row 3 (2 and 2) does
    assert neighbour_overlap(student, teacher, k=1) == pytest.approx(3 / 4)
    with pytest.raises(KDistillError, match="k=4"):
        neighbour_overlap(student, teacher, k=4)
