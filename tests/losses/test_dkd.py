import math

import pytest
import torch
import torch.nn.functional as F

from kdistill.errors import KDistillError
from kdistill.losses import build_loss
from kdistill.losses.dkd import dkd_parts

# teacher logits 0, 0, 0 -> p_t = (1/3, 1/3, 1/3); student logits ln2, ln2, 0 -> p_s = (2/5, 2/5, 1/5);
# target class 0. b_t = (1/3, 2/3), b_s = (2/5, 3/5); non-target p^_t = (1/2, 1/2), p^_s = (2/3, 1/3).
# TCKD = 1/3 ln(5/6) + 2/3 ln(10/9); NCKD = 1/2 ln(3/4) + 1/2 ln(3/2) = 1/2 ln(9/8)
TCKD = math.log(5 / 6) / 3 + 2 * math.log(10 / 9) / 3
NCKD = math.log(9 / 8) / 2
STUDENT = torch.tensor([[math.log(2.0), math.log(2.0), 0.0]])
TEACHER = torch.zeros(1, 3)


def test_value_by_hand():
    dkd = build_loss("dkd", alpha=1.0, beta=8.0, temperature=1.0)
    assert dkd(STUDENT, TEACHER, torch.tensor([0])).item() == pytest.approx(TCKD + 8 * NCKD, abs=1e-6)
    # the same distributions at T = 4 (logits x 4) are scaled by T^2 = 16
    dkd4 = build_loss("dkd", alpha=1.0, beta=8.0, temperature=4.0)
    loss4 = dkd4(4 * STUDENT, TEACHER, torch.tensor([0]))
    assert loss4.item() == pytest.approx(16 * (TCKD + 8 * NCKD), abs=1e-5)


def test_kd_decomposes_into_tckd_and_weighted_nckd():
    # the paper's eq. 3: KL(p_t || p_s) = TCKD + (1 - p_t[target]) * NCKD, for each sample
    student, teacher = torch.randn(6, 5), torch.randn(6, 5)
    target = torch.randint(0, 5, (6,))
    tckd, nckd, p_target = dkd_parts(student, teacher, target, temperature=2.0)
    log_s, log_t = F.log_softmax(student / 2, 1), F.log_softmax(teacher / 2, 1)
    kl = F.kl_div(log_s, log_t, reduction="none", log_target=True)
    assert torch.allclose(kl.sum(1), tckd + (1 - p_target) * nckd, atol=1e-5)
    assert torch.allclose(p_target, F.softmax(teacher / 2, 1).gather(1, target[:, None]).squeeze(1))


def test_unlabelled_samples_use_the_teachers_argmax():
    dkd = build_loss("dkd")
    student, teacher = torch.randn(3, 4), torch.randn(3, 4)
    argmax = teacher.argmax(1)
    expected = dkd(student, teacher, argmax).item()
    assert dkd(student, teacher, torch.full((3,), -1)).item() == pytest.approx(expected, abs=1e-6)
    assert dkd(student, teacher, None).item() == pytest.approx(expected, abs=1e-6)
    mixed = torch.tensor([argmax[0].item(), -1, argmax[2].item()])
    assert dkd(student, teacher, mixed).item() == pytest.approx(expected, abs=1e-6)


def test_bad_arguments_name_the_loss():
    with pytest.raises(KDistillError, match="dkd"):
        build_loss("dkd", temperature=0.0)
