"""The objective: a weighted sum of named loss terms, each fed the features the recipe routes to it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from kdistill.losses import build_loss
from kdistill.models.adapters import adapter_key
from kdistill.models.taps import OUTPUT


@dataclass
class Term:
    """One weighted loss term.

    Args:
        name: the name it is logged under.
        loss: a module ``forward(student, teacher=None, target=None) -> scalar``.
        weight: its weight in the total.
        student: the student tap it reads (``"logits"`` for the output).
        teacher: the teacher tap it reads, or None for a loss on labels only.
    """

    name: str
    loss: nn.Module
    weight: float = 1.0
    student: str = OUTPUT
    teacher: str | None = OUTPUT


class Objective(nn.Module):
    """``total = sum_i weight_i * loss_i(adapter_i(student_feats[s_i]), teacher_feats[t_i], target)``.

    Holds the adapters (learned with the student, never saved with it). Terms with weight 0
    are skipped.
    """

    def __init__(self, terms: list[Term]):
        super().__init__()
        self.terms = [t for t in terms if t.weight != 0]
        self.losses = nn.ModuleList(t.loss for t in self.terms)
        self.adapters = nn.ModuleDict()
        # features computed from a tap: {name: (source tap, module)}, e.g. a teacher embedding
        self.student_derived: dict[str, tuple[str, nn.Module]] = {}
        self.teacher_derived: dict[str, tuple[str, nn.Module]] = {}
        self.heads = nn.ModuleDict()  # trainable modules of student_derived features

    @property
    def uses_teacher(self) -> bool:
        return any(t.teacher is not None for t in self.terms)

    def taps(self) -> tuple[list[str], list[str]]:
        """(student tap names, teacher tap names) the terms read."""
        student = [t.student for t in self.terms]
        teacher = [t.teacher for t in self.terms if t.teacher is not None]
        return list(dict.fromkeys(student)), list(dict.fromkeys(teacher))

    def feature_pairs(self) -> list[tuple[str, str]]:
        """(student tap, teacher tap) pairs that need an adapter where their shapes differ.

        Losses that compare within-sample summaries (attention maps, batch relations) set
        ``adapt = False`` and see the raw student feature.
        """
        return [(t.student, t.teacher) for t in self.terms
                if t.teacher is not None and getattr(t.loss, "adapt", True)]

    def forward(
        self,
        student_feats: dict[str, torch.Tensor],
        teacher_feats: dict[str, torch.Tensor] | None,
        target: torch.Tensor | None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Returns (total loss, {term name: detached value})."""
        total, values = 0.0, {}
        for term in self.terms:
            s = student_feats[term.student]
            t = None
            if term.teacher is not None:
                t = teacher_feats[term.teacher]
                key = adapter_key(term.student, term.teacher)
                if key in self.adapters:
                    s = self.adapters[key](s)
            value = term.loss(s, t, target)
            values[term.name] = value.detach()
            total = total + term.weight * value
        return total, values


def build_objective(specs: list[dict]) -> Objective:
    """Build an objective from recipe loss terms: ``{loss, weight, student, teacher, args, name}``."""
    terms = []
    for spec in specs:
        loss = build_loss(spec["loss"], **spec.get("args", {}))
        teacher = (spec.get("teacher") or OUTPUT) if getattr(loss, "uses_teacher", True) else None
        terms.append(
            Term(
                name=spec.get("name") or spec["loss"],
                loss=loss,
                weight=spec.get("weight", 1.0),
                student=spec.get("student") or getattr(loss, "reads", OUTPUT),
                teacher=teacher,
            )
        )
    return Objective(terms)
