"""A fixed low-dimensional embedding space drawn from a teacher layer (shallow distillation)."""

from __future__ import annotations

import torch
from torch import nn


class PCAProjection(nn.Module):
    """Project flattened features onto their top principal components.

    ``(B, ...) -> (B, dim)``: ``(x.flatten(1) - mean) @ components``. Fixed (buffers only).
    """

    def __init__(self, mean: torch.Tensor, components: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean)  # (D,)
        self.register_buffer("components", components)  # (D, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1).float() - self.mean) @ self.components  # (B, dim)


def fit_pca(features: torch.Tensor, dim: int) -> PCAProjection:
    """Fit a PCA projection on features ``(N, ...)`` (flattened), keeping ``dim`` components.

    Components come from the SVD of the centred features, ordered by explained variance;
    each component's sign is fixed so its largest entry is positive (a deterministic basis).
    """
    x = features.flatten(1).double()  # (N, D)
    mean = x.mean(0)
    _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)  # vh: (min(N, D), D)
    components = vh[:dim].T  # (D, dim)
    signs = torch.sign(components.gather(0, components.abs().argmax(0, keepdim=True)))
    return PCAProjection(mean.float(), (components * signs).float())
