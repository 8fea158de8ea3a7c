import torch

from kdistill.losses import build_loss


def test_value_by_hand():
    # (1 - 3)^2 + (2 - 0)^2 = 8, over 2 elements
    assert build_loss("embed_mse")(torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 0.0]])).item() == 4.0
