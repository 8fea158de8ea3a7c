import pytest
import torch

from kdistill.losses import build_loss


def test_value_by_hand():
    # class 0: (0, 0) and (2, 0), mean (1, 0), squared distances 1 and 1; class 1 alone: 0
    # mean over the 3 labelled samples: 2 / 3
    student = torch.tensor([[0.0, 0.0], [2.0, 0.0], [5.0, 5.0]])
    assert build_loss("scatter")(student, None, torch.tensor([0, 0, 1])).item() == pytest.approx(2 / 3)


def test_zero_when_same_class_embeddings_are_equal():
    student = torch.tensor([[1.0, 2.0], [1.0, 2.0], [7.0, 0.0]])
    assert build_loss("scatter")(student, None, torch.tensor([3, 3, 1])).item() == 0.0


def test_unlabelled_samples_are_left_out():
    scatter = build_loss("scatter")
    student = torch.tensor([[0.0, 0.0], [2.0, 0.0], [5.0, 5.0], [100.0, -100.0]])
    with_unlabelled = scatter(student, None, torch.tensor([0, 0, 1, -1]))
    assert with_unlabelled.item() == pytest.approx(2 / 3)


def test_no_labels_gives_zero_and_a_usable_graph():
    student = torch.randn(4, 3, requires_grad=True)
    loss = build_loss("scatter")(student, None, torch.full((4,), -1))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(student.grad, torch.zeros(4, 3))


def test_maps_are_flattened():
    scatter, target = build_loss("scatter"), torch.tensor([0, 0, 1, 1])
    maps = torch.randn(4, 2, 3, 3)
    assert scatter(maps, None, target).item() == pytest.approx(scatter(maps.flatten(1), None, target).item())
