import pytest
import torch

from kdistill.losses import build_loss


def test_value_by_hand_and_zero_at_start():
    loss = build_loss("l2_start")
    w, b = torch.tensor([[1.0, 2.0]]), torch.tensor([0.5])
    loss.set_start([w, b])
    assert loss([w.clone(), b.clone()]).item() == 0.0
    # (3-1)^2 + (2-2)^2 + (0.5-(-0.5))^2 = 4 + 0 + 1
    assert loss([torch.tensor([[3.0, 2.0]]), torch.tensor([-0.5])]).item() == 5.0


def test_gradient_pulls_towards_start():
    loss = build_loss("l2_start")
    loss.set_start([torch.zeros(3)])
    p = torch.tensor([1.0, -2.0, 0.0], requires_grad=True)
    loss([p]).backward()
    assert torch.equal(p.grad, torch.tensor([2.0, -4.0, 0.0]))  # d/dp p^2 = 2p


def test_unset_start_fails():
    with pytest.raises(RuntimeError, match="set_start"):
        build_loss("l2_start")([torch.zeros(2)])
