import torch
from torch import nn

from kdistill.models.ensemble import TeacherEnsemble
from kdistill.models.taps import FeatureTaps


def test_taps_on_main_and_extra_teachers():
    main = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    extra = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    ensemble = TeacherEnsemble(main, {"second": extra})
    x = torch.randn(6, 3)
    with FeatureTaps(ensemble, ["1", "second:logits", "second:1"]) as taps:
        feats = taps.collect(ensemble(x))
    assert torch.equal(feats["logits"], main(x))
    assert torch.equal(feats["second:logits"], extra(x))
    assert torch.equal(feats["1"], torch.relu(main[0](x)))
    assert torch.equal(feats["second:1"], torch.tanh(extra[0](x)))
