import pytest
import torch
from torch import nn

from kdistill.errors import KDistillError
from kdistill.models.taps import FeatureTaps


class Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 6), nn.Tanh()))
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        return self.head(self.body(x))


def test_taps_capture_nested_modules_without_editing_forward():
    model = Nested()
    x = torch.randn(5, 4)
    with FeatureTaps(model, ["body.2.0", "body.1", "logits"]) as taps:
        feats = taps.collect(model(x))
    assert set(feats) == {"body.2.0", "body.1", "logits"}
    assert torch.allclose(feats["body.1"], torch.relu(model.body[0](x)))
    assert torch.allclose(feats["body.2.0"], model.body[2][0](feats["body.1"]))
    assert feats["logits"].shape == (5, 3)


def test_hooks_are_removed():
    model = Nested()
    taps = FeatureTaps(model, ["body.1"])
    assert len(model.body[1]._forward_hooks) == 1
    taps.remove()
    assert len(model.body[1]._forward_hooks) == 0


def test_unknown_name_lists_the_closest():
    with pytest.raises(KDistillError, match="body.2.0"):
        FeatureTaps(Nested(), ["body.2.O"], owner="student")
