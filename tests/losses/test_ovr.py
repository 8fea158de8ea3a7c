import math

import pytest
import torch

from kdistill.losses import build_loss

# logits (ln 3, 0), label 0: sigmoid(ln 3) = 3/4, sigmoid(-0) = 1/2, softmax = (3/4, 1/4)
LOGITS = torch.tensor([[math.log(3.0), 0.0]])
OVR = -math.log(0.75) + math.log(2)  # -log sigmoid(f_0) - log sigmoid(-f_1)
CE = -math.log(0.75)


def test_value_by_hand():
    assert build_loss("ovr")(LOGITS, None, torch.tensor([0])).item() == pytest.approx(OVR + CE, abs=1e-6)
    normalized = build_loss("ovr", normalize=True, ce_weight=0.5)(LOGITS, None, torch.tensor([0]))
    assert normalized.item() == pytest.approx(OVR / 2 + 0.5 * CE, abs=1e-6)
    assert build_loss("ovr", ce_weight=0.0)(LOGITS, None, torch.tensor([0])).item() == pytest.approx(OVR)


def test_unlabelled_samples_are_left_out():
    logits = torch.cat([LOGITS, torch.tensor([[5.0, -5.0]])])
    assert build_loss("ovr")(logits, None, torch.tensor([0, -1])).item() == pytest.approx(OVR + CE, abs=1e-6)


def test_no_labels_gives_zero_and_a_usable_graph():
    student = torch.randn(3, 4, requires_grad=True)
    loss = build_loss("ovr")(student, None, torch.full((3,), -1))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(student.grad, torch.zeros(3, 4))


def test_unlabelled_samples_get_no_gradient():
    student = torch.randn(3, 4, requires_grad=True)
    build_loss("ovr")(student, None, torch.tensor([0, -1, 2])).backward()
    assert student.grad[[0, 2]].abs().sum() > 0 and student.grad[1].abs().sum() == 0
