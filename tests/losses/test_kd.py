import math

import pytest
import torch

from kdistill.errors import KDistillError
from kdistill.losses import build_loss

# teacher softmax [0.75, 0.25] against a uniform student, worked out by hand:
# KL = 0.75 ln(0.75/0.5) + 0.25 ln(0.25/0.5)
KL_BY_HAND = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)


def test_value_by_hand_at_temperature_one():
    kd = build_loss("kd", temperature=1.0, alpha=1.0)
    loss = kd(torch.zeros(1, 2), torch.tensor([[math.log(3.0), 0.0]]))
    assert loss.item() == pytest.approx(KL_BY_HAND, abs=1e-6)


def test_temperature_squared_scaling():
    # logits doubled at T=2 give the same distributions, so the loss is T^2 = 4 times larger
    kd = build_loss("kd", temperature=2.0, alpha=1.0)
    loss = kd(torch.zeros(1, 2), torch.tensor([[2 * math.log(3.0), 0.0]]))
    assert loss.item() == pytest.approx(4 * KL_BY_HAND, abs=1e-6)


def test_alpha_mixes_in_the_hard_label_loss():
    kd = build_loss("kd", temperature=2.0, alpha=0.25)
    student, teacher = torch.zeros(1, 2), torch.tensor([[2 * math.log(3.0), 0.0]])
    mixed = kd(student, teacher, torch.tensor([0]))
    assert mixed.item() == pytest.approx(0.25 * 4 * KL_BY_HAND + 0.75 * math.log(2), abs=1e-6)
    # an unlabelled sample (-1) contributes no hard-label loss
    assert kd(student, teacher, torch.tensor([-1])).item() == pytest.approx(0.25 * 4 * KL_BY_HAND, abs=1e-6)


def test_bad_arguments_name_the_loss():
    with pytest.raises(KDistillError, match="kd"):
        build_loss("kd", temperature=-1)
    with pytest.raises(KDistillError, match="did you mean|Did you mean"):
        build_loss("kdd")
