"""The objective: a weighted sum of named loss terms, each fed the features the recipe routes to it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from kdistill.losses import build_loss
from kdistill.losses.registry import COUNTS, Contract, kinds_of, contract_of, loss_parts
from kdistill.models.adapters import adapter_key
from kdistill.models.taps import OUTPUT, WEIGHTS


@dataclass
class Term:
    """One weighted loss term.

    Args:
        name: the name it is logged under.
        loss: a module ``forward(student, teacher=None, target=None, **extra) -> scalar``.
        weight: its weight in the total.
        student: the student feature it reads (``"logits"`` for the output).
        teacher: the teacher feature it reads, or None for a loss on labels only.
        contract: what the loss declared when it was registered (``losses.registry.Contract``).
        start: for a loss whose contract takes ``start``: which weights (init, stage or an
            earlier stage's name).
    """

    name: str
    loss: nn.Module
    weight: float = 1.0
    student: str | tuple[str, ...] = OUTPUT  # a tuple feeds the loss a tuple of features (e.g. FSP)
    teacher: str | tuple[str, ...] | None = OUTPUT
    contract: Contract = Contract()
    start: str | None = None


def _names(tap) -> tuple[str, ...]:
    return tap if isinstance(tap, tuple) else (tap,)


def _gather(feats: dict[str, torch.Tensor], tap):
    return tuple(feats[n] for n in tap) if isinstance(tap, tuple) else feats[tap]


class Objective(nn.Module):
    """``total = sum_i weight_i * loss_i(adapter_i(student_feats[s_i]), teacher_feats[t_i], target, extras_i)``.

    Holds the adapters and the trainable modules of the features it reads (learned with the
    student, never saved with it). Terms with weight 0 are skipped. The extras each loss gets
    follow its contract: ``index``, ``start`` (the weights ``prepare`` chose), ``weights``.
    """

    def __init__(self, terms: list[Term]):
        super().__init__()
        self.terms = [t for t in terms if t.weight != 0]
        self.losses = nn.ModuleList(t.loss for t in self.terms)
        self.adapters = nn.ModuleDict()
        self.heads = nn.ModuleDict()  # trainable modules of the student features it reads from providers
        # features computed from a tap: {name: (source tap, module)}, e.g. a teacher embedding
        self.student_derived: dict[str, tuple[str, nn.Module]] = {}
        self.teacher_derived: dict[str, tuple[str, nn.Module]] = {}
        self.providers: list = []  # the FeatureProviders whose features the terms read
        self.params: list[torch.Tensor] = []  # the trained model's trainable parameters (bind)
        self.starts: dict[str, list[torch.Tensor]] = {}  # theta_0 of each term with a start

    @property
    def uses_teacher(self) -> bool:
        return any(t.teacher is not None for t in self.terms)

    def kinds(self) -> list[str]:
        """What the terms' values are means over (``Contract.mean_over``), in a fixed order."""
        return sorted({k for t in self.terms for k in kinds_of(t.contract.mean_over)})

    def counts(self, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """How many of each of ``kinds()`` a batch holds: ``(len(kinds()),)`` float64 (float32 where
        the device has no float64), on the labels' device."""
        dtype = torch.float32 if target.device.type == "mps" else torch.float64
        return torch.stack([COUNTS[k](inputs, target).to(dtype) for k in self.kinds()]) if self.terms else \
            torch.zeros(0, dtype=dtype, device=target.device)

    def taps(self) -> tuple[list[str], list[str]]:
        """(student feature names, teacher feature names) the terms read."""
        student = [n for t in self.terms for n in _names(t.student)]
        teacher = [n for t in self.terms if t.teacher is not None for n in _names(t.teacher)]
        return list(dict.fromkeys(student)), list(dict.fromkeys(teacher))

    def feature_pairs(self) -> list[tuple[str, str]]:
        """(student tap, teacher tap) pairs that need an adapter where their shapes differ
        (terms whose contract has ``adapt``; several taps on each side pair up in order)."""
        pairs = []
        for t in self.terms:
            if t.teacher is not None and t.contract.adapt:
                pairs += zip(_names(t.student), _names(t.teacher))
        return list(dict.fromkeys(pairs))

    def use_providers(self, providers: list) -> None:
        """Take the features the terms read from ``providers`` (``objective.features``)."""
        s_names, t_names = self.taps()
        for provider in providers:
            student = {n: f for n, f in provider.student_features().items() if n in s_names}
            teacher = {n: f for n, f in provider.teacher_features().items() if n in t_names}
            if student or teacher:
                self.providers.append(provider)
            self.student_derived.update(student)
            self.teacher_derived.update(teacher)
            for name, (_, module) in student.items():
                self.heads[name] = module

    def bind(self, model: nn.Module) -> None:
        """The model this objective trains: its trainable parameters feed ``weights``."""
        self.params = [p for p in model.parameters() if p.requires_grad]

    def prepare(self, context) -> bool:
        """Before a stage (``features.StageContext``): bind the trained model, choose each
        ``start``, prepare the providers. Returns whether a provider refitted teacher-side state."""
        self.bind(context.model)
        names = [n for n, p in context.model.named_parameters() if p.requires_grad]
        for term in self.terms:
            if term.contract.start:
                weights = context.start_weights(term.start, term.name)
                self.starts[term.name] = [weights[n] for n in names]
        s_names, t_names = self.taps()
        refitted = False
        for provider in self.providers:
            refitted |= provider.prepare(context, set(s_names) | set(t_names))
        return refitted

    def _adapt(self, term: Term, s):
        """Map student features to the teacher's shapes where an adapter exists for the pair."""
        if isinstance(term.student, str):
            key = adapter_key(term.student, term.teacher)
            return self.adapters[key](s) if key in self.adapters else s
        keys = [adapter_key(a, b) for a, b in zip(term.student, term.teacher)]
        return tuple(self.adapters[k](f) if k in self.adapters else f for k, f in zip(keys, s))

    def _extras(self, term: Term, index, inputs) -> dict:
        extra = {}
        if term.contract.index:
            extra["index"] = index
        if term.contract.start:
            extra["start"] = self.starts.get(term.name)
        if term.contract.weights:
            extra["weights"] = self.params
        if term.contract.inputs:
            extra["inputs"] = inputs
        return extra

    def forward(
        self,
        student_feats: dict[str, torch.Tensor],
        teacher_feats: dict[str, torch.Tensor] | None,
        target: torch.Tensor | None,
        index: torch.Tensor | None = None,
        inputs: torch.Tensor | None = None,
        shares: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Returns (total loss, {term name: detached value}).

        ``index`` (``(B,)``, each sample's position in the stage's data) reaches the losses whose
        contract asks for it, such as those keeping a memory bank of samples; ``inputs`` (the
        batch's model inputs) those that read them, such as the token losses' masks.
        ``shares``: for a part of a larger batch (a micro-batch, one process's share), this
        part's share of each kind of item the whole batch holds (``counts``); each term's mean
        over its kind is weighted by it, so the parts' totals add up to the whole batch's
        total. None: the batch is whole.
        """
        student_feats = {**student_feats, WEIGHTS: self.params}
        total, values = 0.0, {}
        for term in self.terms:
            s = _gather(student_feats, term.student)
            t = None
            if term.teacher is not None:
                t = _gather(teacher_feats, term.teacher)
                s = self._adapt(term, s)
            parts = loss_parts(term.loss, term.contract, s, t, target, **self._extras(term, index, inputs))
            value = sum(v if shares is None else v * shares[k].to(v.dtype) for k, v in parts.items())
            values[term.name] = value.detach()
            total = total + term.weight * value
        return total, values


def build_objective(specs: list[dict]) -> Objective:
    """Build an objective from recipe loss terms: ``{loss, weight, student, teacher, args, name}``."""
    terms = []
    for spec in specs:
        contract, args = contract_of(spec["loss"]), spec.get("args", {})
        teacher = (spec.get("teacher") or contract.teacher_reads) if contract.teacher else None
        student = spec.get("student") or contract.reads
        student, teacher = (tuple(x) if isinstance(x, list) else x for x in (student, teacher))
        terms.append(Term(name=spec.get("name") or spec["loss"], loss=build_loss(spec["loss"], **args),
                          weight=spec.get("weight", 1.0), student=student, teacher=teacher, contract=contract,
                          start=args.get("start", "stage") if contract.start else None))
    return Objective(terms)
