import pytest
import torch

from kdistill.errors import KDistillError
from kdistill.losses import build_loss
from kdistill.losses.fsp import fsp_matrix


def test_fsp_matrix_by_hand():
    # one sample, 1x2 maps: first = [[1, 2]], second channels [[3, 4]] and [[1, 0]]
    first = torch.tensor([[[[1.0, 2.0]]]])  # (1, 1, 1, 2)
    second = torch.tensor([[[[3.0, 4.0]], [[1.0, 0.0]]]])  # (1, 2, 1, 2)
    # G = [(1*3 + 2*4) / 2, (1*1 + 2*0) / 2] = [5.5, 0.5]
    assert torch.equal(fsp_matrix(first, second), torch.tensor([[[5.5, 0.5]]]))


def test_value_from_the_fsp_matrices():
    a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 5, 2, 2)
    fsp = build_loss("fsp")
    # doubling the student's second map doubles G_s: the loss is ||G||^2 summed, averaged over b
    expected = fsp_matrix(a, b).pow(2).sum((1, 2)).mean()
    assert torch.isclose(fsp((a, 2 * b), (a, b)), expected)


def test_needs_two_or_more_taps_on_each_side():
    s, t = (torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)), (torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4))
    with pytest.raises(KDistillError, match="two or more taps"):
        build_loss("fsp")(s[0], t[0])
