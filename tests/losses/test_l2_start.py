import pytest
import torch

from kdistill.losses import build_loss


def test_value_by_hand():
    loss = build_loss("l2_start")
    w, b = torch.tensor([[1.0, 2.0]]), torch.tensor([0.5])
    # (3-1)^2 + (2-2)^2 + (0.5-(-0.5))^2 = 4 + 0 + 1
    assert loss([torch.tensor([[3.0, 2.0]]), torch.tensor([-0.5])], start=[w, b]).item() == 5.0


def test_gradient_pulls_towards_start():
    p = torch.tensor([1.0, -2.0, 0.0], requires_grad=True)
    build_loss("l2_start")([p], start=[torch.zeros(3)]).backward()
    assert torch.equal(p.grad, torch.tensor([2.0, -4.0, 0.0]))  # d/dp p^2 = 2p


def test_missing_start_fails():
    with pytest.raises(RuntimeError, match="theta_0"):
        build_loss("l2_start")([torch.zeros(2)])
