import math

import torch

from kdistill.losses import build_loss


def test_cross_entropy_by_hand():
    ce = build_loss("ce")
    logits = torch.zeros(1, 2)
    assert torch.isclose(ce(logits, None, torch.tensor([1])), torch.tensor(math.log(2)))


def test_unlabelled_samples_are_left_out():
    ce = build_loss("ce")
    logits = torch.tensor([[0.0, 0.0], [5.0, -5.0]])
    only_first = ce(logits[:1], None, torch.tensor([1]))
    assert torch.isclose(ce(logits, None, torch.tensor([1, -1])), only_first)


def test_no_labels_gives_zero_and_a_usable_graph():
    ce = build_loss("ce")
    logits = torch.randn(4, 3, requires_grad=True)
    loss = ce(logits, None, torch.full((4,), -1))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros(4, 3))
