import math

import pytest
import torch

from kdistill.errors import KDistillError
from kdistill.losses import build_loss


def test_value_by_hand():
    # teacher (1,0), (0,1), (1,0): cosines c12 = 0, c13 = 1, c23 = 0 -> K = (c + 1)/2 = .5, 1, .5
    #   rows over the other two: p(.|1) = (1/3, 2/3), p(.|2) = (1/2, 1/2), p(.|3) = (2/3, 1/3)
    # student: three orthogonal unit vectors, every K = .5, every row (1/2, 1/2)
    # KL summed over rows: row 2 gives 0, rows 1 and 3 give 1/3 ln(2/3) + 2/3 ln(4/3) each
    by_hand = 2 * (math.log(2 / 3) / 3 + 2 * math.log(4 / 3) / 3)  # = 0.113266
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert build_loss("pkt")(torch.eye(3), teacher).item() == pytest.approx(by_hand, abs=1e-5)


def test_invariant_to_scaling_the_student():
    pkt = build_loss("pkt")
    student, teacher = torch.randn(5, 3), torch.randn(5, 7)  # widths may differ
    assert pkt(10.0 * student, teacher).item() == pytest.approx(pkt(student, teacher).item(), rel=1e-4)


def test_batch_of_one_gives_zero():
    assert build_loss("pkt")(torch.randn(1, 3), torch.randn(1, 3)).item() == 0.0


def test_bad_arguments_name_the_loss():
    with pytest.raises(KDistillError, match="pkt"):
        build_loss("pkt", eps=0.0)
