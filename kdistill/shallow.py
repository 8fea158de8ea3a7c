"""Shallow distillation: a low-dimensional embedding space drawn from a teacher layer, the
student mapped into it, and the target task solved by distances (prototypes, k-NN).

The teacher side is a PCA of one teacher tap, fitted on the training inputs (transfer set and
labelled inputs; no labels are read); the run exposes it
as the teacher feature ``embedding``. The student's embedding is its own tap passed through the
automatic adapter to ``embedding``. ``prototypes`` is the student feature of negative squared
distances to learnable class prototypes, started at the class means of the labelled set.
"""

from __future__ import annotations

import torch
from torch import nn

from kdistill.fewshot import few_label_accuracy
from kdistill.models.projection import PCAProjection, fit_pca
from kdistill.models.taps import FeatureTaps

EMBEDDING = "embedding"
PROTOTYPES = "prototypes"


class PrototypeHead(nn.Module):
    """Negative squared distances to learnable prototypes: ``(B, D) -> (B, K)``; softmax is M(x)."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.prototypes = nn.Parameter(torch.zeros(num_classes, dim))

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        emb = emb.float()
        # expanded form: differentiable everywhere, unlike cdist at zero distance
        sq = emb.pow(2).sum(1, keepdim=True) - 2 * emb @ self.prototypes.T + self.prototypes.pow(2).sum(1)
        return -sq  # (B, K)


@torch.no_grad()
def tap_outputs(model: nn.Module, tap: str, x: torch.Tensor, device, fn=None, batch_size: int = 512) -> torch.Tensor:
    """The output of module ``tap`` (passed through ``fn`` if given) for inputs ``x``, on the CPU."""
    was_training = model.training
    model.eval()
    parts = []
    with FeatureTaps(model, [tap]) as taps:
        for i in range(0, len(x), batch_size):
            feats = taps.collect(model(x[i : i + batch_size].to(device)))[tap]
            parts.append((fn(feats) if fn is not None else feats).float().cpu())
    model.train(was_training)
    return torch.cat(parts)


def fit_teacher_embedding(teacher: nn.Module, tap: str, x: torch.Tensor, dim: int, device,
                          max_samples: int, seed: int) -> PCAProjection:
    """PCA of the teacher's ``tap`` features over (a seeded sample of) the inputs ``x``.

    The run passes the training inputs, labelled and transfer alike (no label is read), so the
    space exists even when every training image is labelled.
    """
    g = torch.Generator().manual_seed(seed)
    sample = x[torch.randperm(len(x), generator=g)[:max_samples]]
    return fit_pca(tap_outputs(teacher, tap, sample, device), dim).to(device)


@torch.no_grad()
def init_prototypes(head: PrototypeHead, student: nn.Module, tap: str, adapter: nn.Module,
                    x: torch.Tensor, y: torch.Tensor, device) -> None:
    """Set each prototype to the mean student embedding of its labelled samples."""
    adapter_mode = adapter.training
    adapter.eval()
    emb = tap_outputs(student, tap, x, device, adapter)  # (N, D)
    adapter.train(adapter_mode)
    for c in range(head.prototypes.shape[0]):
        members = emb[y == c]
        if len(members):
            head.prototypes[c] = members.mean(0).to(head.prototypes.device)


def embedding_metrics(student: nn.Module, student_tap: str, prototype_head: nn.Sequential, teacher: nn.Module,
                      teacher_tap: str, pca: PCAProjection, labelled, test, device,
                      shots: tuple[int, ...], seed: int) -> dict[str, dict[str, float]]:
    """Few-label accuracy (prototypes, k-NN) in the teacher's and the student's embedding spaces,
    and the test accuracy of the student's trained prototype head (``prototype_head``).

    The few labels are drawn from the labelled set; accuracy is measured on the test set.
    """
    adapter = prototype_head[0]
    adapter_mode = adapter.training
    prototype_head.eval()
    result = {}
    for role, model, tap, fn in (("teacher", teacher, teacher_tap, pca), ("student", student, student_tap, adapter)):
        support = tap_outputs(model, tap, labelled.x, device, fn)
        query = tap_outputs(model, tap, test.x, device, fn)
        result[role] = few_label_accuracy(support, labelled.y, query, test.y, shots, seed=seed)
    logits = tap_outputs(student, student_tap, test.x, device, prototype_head)
    result["student"]["prototype_head"] = (logits.argmax(1) == test.y).float().mean().item()
    prototype_head.train(adapter_mode)
    return result
