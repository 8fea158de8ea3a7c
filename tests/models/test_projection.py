import torch

from kdistill.models.projection import fit_pca
from kdistill.models.taps import FeatureTaps


def test_pca_keeps_the_direction_of_largest_variance():
    torch.manual_seed(0)
    x = torch.randn(500, 3) * torch.tensor([5.0, 1.0, 0.1]) + torch.tensor([1.0, 2.0, 3.0])
    pca = fit_pca(x, 2)
    assert torch.allclose(pca.components[:, 0].abs(), torch.tensor([1.0, 0.0, 0.0]), atol=0.02)
    emb = pca(x)
    assert emb.shape == (500, 2) and emb.mean(0).abs().max() < 1e-4
    assert emb[:, 0].var() > 20 * emb[:, 1].var()


def test_derived_teacher_feature_from_a_tap():
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
    x = torch.randn(50, 4)
    pca = fit_pca(model[1](model[0](x)).detach(), 3)
    with FeatureTaps(model, ["embedding"], derived={"embedding": ("1", pca)}) as taps:
        feats = taps.collect(model(x))
    assert feats["embedding"].shape == (50, 3)
    assert torch.allclose(feats["embedding"], pca(feats["1"]))
