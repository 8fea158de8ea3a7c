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
    student: str | tuple[str, ...] = OUTPUT  # a tuple feeds the loss a tuple of features (e.g. FSP)
    teacher: str | tuple[str, ...] | None = OUTPUT


def _names(tap) -> tuple[str, ...]:
    return tap if isinstance(tap, tuple) else (tap,)


def _gather(feats: dict[str, torch.Tensor], tap):
    return tuple(feats[n] for n in tap) if isinstance(tap, tuple) else feats[tap]


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
        student = [n for t in self.terms for n in _names(t.student)]
        teacher = [n for t in self.terms if t.teacher is not None for n in _names(t.teacher)]
        return list(dict.fromkeys(student)), list(dict.fromkeys(teacher))

    def feature_pairs(self) -> list[tuple[str, str]]:
        """(student tap, teacher tap) pairs that need an adapter where their shapes differ.

        Losses that compare within-sample summaries (attention maps, batch relations) set
        ``adapt = False`` and see the raw student feature.
        """
        pairs = []
        for t in self.terms:
            if t.teacher is None or not getattr(t.loss, "adapt", True):
                continue
            # several taps on each side are adapted pairwise, in order
            pairs += zip(_names(t.student), _names(t.teacher))
        return list(dict.fromkeys(pairs))

    def _adapt(self, term: Term, s):
        """Map student features to the teacher's shapes where an adapter exists for the pair."""
        if isinstance(term.student, str):
            key = adapter_key(term.student, term.teacher)
            return self.adapters[key](s) if key in self.adapters else s
        keys = [adapter_key(a, b) for a, b in zip(term.student, term.teacher)]
        return tuple(self.adapters[k](f) if k in self.adapters else f for k, f in zip(keys, s))

    def forward(
        self,
        student_feats: dict[str, torch.Tensor],
        teacher_feats: dict[str, torch.Tensor] | None,
        target: torch.Tensor | None,
        index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Returns (total loss, {term name: detached value}).

        ``index`` (``(B,)``, each sample's position in the stage's data) reaches only losses that
        set ``wants_index = True``, such as those keeping a memory bank of samples.
        """
        total, values = 0.0, {}
        for term in self.terms:
            s = _gather(student_feats, term.student)
            t = None
            if term.teacher is not None:
                t = _gather(teacher_feats, term.teacher)
                s = self._adapt(term, s)
            extra = {"index": index} if getattr(term.loss, "wants_index", False) else {}
            value = term.loss(s, t, target, **extra)
            values[term.name] = value.detach()
            total = total + term.weight * value
        return total, values


def build_objective(specs: list[dict]) -> Objective:
    """Build an objective from recipe loss terms: ``{loss, weight, student, teacher, args, name}``."""
    terms = []
    for spec in specs:
        loss = build_loss(spec["loss"], **spec.get("args", {}))
        teacher = (spec.get("teacher") or OUTPUT) if getattr(loss, "uses_teacher", True) else None
        student = spec.get("student") or getattr(loss, "reads", OUTPUT)
        student, teacher = (tuple(x) if isinstance(x, list) else x for x in (student, teacher))
        terms.append(
            Term(
                name=spec.get("name") or spec["loss"],
                loss=loss,
                weight=spec.get("weight", 1.0),
                student=student,
                teacher=teacher,
            )
        )
    return Objective(terms)
