import torch

from kdistill.losses import build_loss


def test_value_by_hand():
    student = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert build_loss("hint")(student, torch.zeros(2, 2)).item() == 7.5  # (1 + 4 + 9 + 16) / 4


def test_mean_over_every_element_of_a_map():
    # a difference of 2 everywhere in a (B, C, H, W) map: squared 4, averaged over all elements
    assert build_loss("hint")(torch.full((2, 3, 4, 4), 2.0), torch.zeros(2, 3, 4, 4)).item() == 4.0
