import math

import pytest
import torch

from kdistill.losses import build_loss


def test_value_by_hand():
    # sigma^2 starts at 5 on both channels; squared errors 1 and 9:
    # mean of 0.5 * (ln 5 + 1/5) and 0.5 * (ln 5 + 9/5) = 0.5 * ln 5 + 0.5
    vid = build_loss("vid")
    loss = vid(torch.zeros(1, 2), torch.tensor([[1.0, 3.0]]))
    assert loss.item() == pytest.approx(0.5 * math.log(5) + 0.5, abs=1e-5)


def test_lazy_variance_takes_channels_from_axis_one():
    vid = build_loss("vid", init_variance=2.0)
    feats = torch.randn(2, 3, 4, 4)
    vid(feats, feats.clone())
    assert vid.alpha.shape == (3,)
    assert torch.allclose(vid.variance(), torch.full((3,), 2.0))


def test_minimum_at_mu_equal_to_z():
    vid = build_loss("vid")
    z = torch.randn(2, 3, 4, 4)
    mu = z.clone().requires_grad_()
    at_z = vid(mu, z)
    at_z.backward()
    assert mu.grad.abs().max() < 1e-6
    for shift in (-0.1, 0.1):
        assert vid(z + shift, z) > at_z


def test_optimizer_built_before_the_first_call_trains_the_variance():
    vid = build_loss("vid")
    optimizer = torch.optim.SGD(vid.parameters(), lr=0.1)  # alpha is still uninitialised here
    vid(torch.zeros(2, 3), torch.ones(2, 3)).backward()
    before = vid.alpha.detach().clone()
    optimizer.step()
    assert not torch.equal(vid.alpha.detach(), before)
