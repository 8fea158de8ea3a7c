import math

import pytest
import torch

from kdistill.losses import build_loss


def test_uniform_logits_give_log_k():
    assert build_loss("entropy")(torch.zeros(2, 4)).item() == pytest.approx(math.log(4), abs=1e-6)


def test_confident_logits_give_about_zero():
    assert build_loss("entropy")(torch.tensor([[100.0, 0.0, 0.0]])).item() < 1e-6


def test_value_by_hand_with_temperature():
    # logits (2 ln 3, 0) at T = 2 give q = (3/4, 1/4): H = -(.75 ln .75 + .25 ln .25)
    by_hand = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    loss = build_loss("entropy", temperature=2.0)(torch.tensor([[2 * math.log(3.0), 0.0]]))
    assert loss.item() == pytest.approx(by_hand, abs=1e-6)
