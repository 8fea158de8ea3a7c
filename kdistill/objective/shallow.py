"""Shallow distillation: a low-dimensional embedding space drawn from a teacher layer, the
student mapped into it, and the target task solved by distances (prototypes, k-NN).

The teacher side is a PCA of one teacher tap, fitted on the training inputs (transfer set and
labelled inputs; no labels are read); the run exposes it
as the teacher feature ``embedding``. The student's embedding is its own tap passed through the
automatic adapter to ``embedding``. ``prototypes`` is the student feature of negative squared
distances to learnable class prototypes, started at the class means of the labelled set.

Both come from the recipe's ``embedding`` section through one provider, ``ShallowSpace``.
"""

from __future__ import annotations

import torch
from torch import nn

from kdistill.data.samples import pick
from kdistill.fewshot import few_label_accuracy
from kdistill.models.adapters import adapter_key, build_adapter
from kdistill.models.infer import dry_features, eval_mode, forward_batches
from kdistill.models.projection import PCAProjection, fit_pca
from kdistill.objective.features import FeatureProvider, StageContext

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


def tap_outputs(model: nn.Module, tap: str, x: torch.Tensor, device, fn=None, batch_size: int = 512,
                owner: str = "model") -> torch.Tensor:
    """The output of module ``tap`` (passed through ``fn`` if given) for inputs ``x``, float32 on the CPU."""

    def keep(feats):
        return (fn(feats[tap]) if fn is not None else feats[tap]).float().cpu()

    return forward_batches(model, x, device, [tap], owner=owner, batch_size=batch_size, each=keep)


def fit_teacher_embedding(teacher: nn.Module, tap: str, x: torch.Tensor, dim: int, device,
                          max_samples: int, seed: int) -> PCAProjection:
    """PCA of the teacher's ``tap`` features over (a seeded sample of) the inputs ``x``.

    The run passes the training inputs, labelled and transfer alike (no label is read), so the
    space exists even when every training image is labelled.
    """
    g = torch.Generator().manual_seed(seed)
    sample = pick(x, torch.randperm(len(x), generator=g)[:max_samples])
    return fit_pca(tap_outputs(teacher, tap, sample, device, owner="embedding.teacher"), dim).to(device)


@torch.no_grad()
def init_prototypes(head: PrototypeHead, student: nn.Module, tap: str, adapter: nn.Module,
                    x: torch.Tensor, y: torch.Tensor, device) -> None:
    """Set each prototype to the mean student embedding of its labelled samples."""
    with eval_mode(adapter):
        emb = tap_outputs(student, tap, x, device, adapter)  # (N, D)
    for c in range(head.prototypes.shape[0]):
        members = emb[y == c]
        if len(members):
            head.prototypes[c] = members.mean(0).to(head.prototypes.device)


class ShallowSpace(FeatureProvider):
    """The recipe's ``embedding`` section: the teacher feature ``embedding`` (a PCA of the
    teacher tap ``spec.teacher``) and the student feature ``prototypes`` (the student tap
    ``spec.student`` through the adapter into that space, then ``PrototypeHead``).

    Before a stage it refits the PCA if a stage trained the teacher since the last fit, and
    starts the prototypes at the class means of the labelled set.
    """

    def __init__(self, spec, pca: PCAProjection, adapter: nn.Module, head: PrototypeHead):
        super().__init__()
        self.spec = spec
        self.pca = pca
        self.head = nn.Sequential(adapter, head)  # student tap -> embedding -> -distances to prototypes

    @classmethod
    def from_recipe(cls, recipe, models: dict, splits, device, sample: torch.Tensor, num_classes: int):
        spec = recipe.embedding
        if spec is None:
            return None
        pca = fit_teacher_embedding(models["teacher"], spec.teacher, splits.pool_set.x, spec.dim, device,
                                    spec.max_samples, recipe.seed)
        width = _dry_shape(models["student"], spec.student, sample)
        adapter = build_adapter(width, (spec.dim,)).to(device)
        return cls(spec, pca, adapter, PrototypeHead(num_classes, spec.dim).to(device))

    def student_features(self):
        return {PROTOTYPES: (self.spec.student, self.head)}

    def teacher_features(self):
        return {EMBEDDING: (self.spec.teacher, self.pca)}

    def adapters(self):
        return {adapter_key(self.spec.student, EMBEDDING): self.head[0]}

    def prepare(self, context: StageContext, reads: set[str]) -> bool:
        refit = EMBEDDING in reads and context.teacher_changed
        if refit:
            fitted = fit_teacher_embedding(context.models["teacher"], self.spec.teacher, context.splits.pool_set.x,
                                           self.spec.dim, context.device, self.spec.max_samples, context.seed)
            self.pca.load_state_dict(fitted.state_dict())
        if PROTOTYPES in reads:
            labelled = context.splits.labelled_set
            init_prototypes(self.head[1], context.model, self.spec.student, self.head[0], labelled.x, labelled.y,
                            context.device)
        return refit

    def summary(self, context: StageContext) -> dict:
        """Few-label accuracy (prototypes, k-NN) in the teacher's and the student's embedding
        spaces, and the test accuracy of the student's trained prototype head.

        The few labels are drawn from the labelled set; accuracy is measured on the test set.
        """
        models, splits, device = context.models, context.splits, context.device
        labelled, test = splits.labelled_set, splits.test_set
        result = {}
        with eval_mode(self.head):
            for role, model, tap, fn in (("teacher", models["teacher"], self.spec.teacher, self.pca),
                                         ("student", models["student"], self.spec.student, self.head[0])):
                support = tap_outputs(model, tap, labelled.x, device, fn)
                query = tap_outputs(model, tap, test.x, device, fn)
                result[role] = few_label_accuracy(support, labelled.y, query, test.y, tuple(self.spec.shots),
                                                  seed=context.seed)
            logits = tap_outputs(models["student"], self.spec.student, test.x, device, self.head)
        result["student"]["prototype_head"] = (logits.argmax(1) == test.y).float().mean().item()
        return {"embedding": result}

    def files(self) -> dict[str, nn.Module]:
        return {"embedding_head": self.head}


def _dry_shape(model: nn.Module, tap: str, sample: torch.Tensor) -> tuple[int, ...]:
    """The shape of one sample's ``tap`` feature (one forward pass on ``sample``)."""
    return tuple(dry_features(model, [tap], "embedding.student", sample)[tap].shape[1:])
