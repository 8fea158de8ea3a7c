"""Contrastive Representation Distillation (Tian, Krishnan and Isola, ICLR 2020, arXiv:1910.10699)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter

from kdistill.errors import KDistillError
from kdistill.losses.registry import Contract, register

BANKS = ("student_bank", "teacher_bank")


def info_nce(anchor, positive, negatives, temperature: float) -> torch.Tensor:
    """``mean_i -log(e^{p_i / tau} / (e^{p_i / tau} + sum_k e^{a_i . n_ik / tau}))``.

    Args:
        anchor: ``(B, D)``; positive: ``(B, 1)``, the anchor's score with its positive;
        negatives: ``(B, K, D)``, K may be 0 (then the loss is 0).
    """
    scores = torch.einsum("bd,bkd->bk", anchor, negatives).float()  # (B, K)
    logits = torch.cat([positive.float(), scores], dim=1) / temperature  # (B, 1 + K)
    return -logits.log_softmax(dim=1)[:, 0].mean()


def embed(x, weight, bias) -> torch.Tensor:
    """Flatten ``(B, ...)``, project with a linear head and L2-normalise: ``(B, feat_dim)``."""
    return F.normalize(F.linear(x.flatten(1).float(), weight, bias).float(), dim=1)


@register("crd", Contract(adapt=False, index=True))
class ContrastiveRepresentationDistillation(LazyModuleMixin, nn.Module):
    """Contrast each sample's student embedding with teacher embeddings of other samples, and back.

    Student and teacher features are flattened, mapped by their own linear heads to
    ``feat_dim`` and L2-normalised: ``s_i``, ``t_i``. Two memory banks hold one normalised
    embedding per sample of the data set (``S`` for the student, ``T`` for the teacher)::

        L_s = mean_i -log(e^{s_i.t_i/tau} / (e^{s_i.t_i/tau} + sum_k e^{s_i.T[n_ik]/tau}))
        L_t = the same with t_i as anchor and S as the bank
        loss = (L_s + L_t) / 2

    The positive is the current batch's pair (gradients reach both heads through it); the
    negatives ``n_ik`` are K = min(num_negatives, bank size - 1) rows drawn uniformly, with
    replacement, from the rows other than i's own, shared by both directions. Bank rows are
    constants (no gradients). After the loss, in training mode, the rows at ``index`` move
    towards the new embeddings: ``row = normalise(m * row + (1 - m) * embedding)``.

    This is the softmax (InfoNCE) form used by most re-implementations, not the paper's NCE
    with a constant normaliser Z: the softmax needs no estimate of Z (the paper fixes it from
    the first batch, which goes stale as the embeddings move), and it stays stable with small
    batches and few negatives. It is still a lower bound on the mutual information between
    the two representations.

    Args:
        feat_dim: width of the shared embedding (128 in the paper).
        num_negatives: negatives per anchor (>= 1; the paper uses 16384).
        temperature: tau (0.07 in the paper).
        momentum: m, the weight kept by a bank row at each update (0.5 in the authors' code).
        seed: seeds the generator of negatives and of new bank rows, so CPU runs repeat.
    Inputs:
        student: ``(B, ...)``, teacher: ``(B, ...)`` (widths may differ; detached here, the
        teacher network is frozen but its head is trained); index: ``(B,)``, each sample's
        position in the stage's data set.

    The heads are lazy parameters (shaped at the first call, on the input's device), so an
    optimizer built before the first call holds them. The banks are buffers, saved with the
    module's state; they start empty and grow to ``index.max() + 1`` rows as indices arrive,
    new rows being random unit vectors. The generator's state is saved with them (extra
    state), so a resumed run draws the same negatives. Memory per call is about ``2 * B * K * feat_dim`` floats.
    """

    def __init__(self, feat_dim: int = 128, num_negatives: int = 4096, temperature: float = 0.07,
                 momentum: float = 0.5, seed: int = 0):
        super().__init__()
        if not (isinstance(feat_dim, int) and feat_dim >= 1):
            raise ValueError("feat_dim must be an integer >= 1")
        if not (isinstance(num_negatives, int) and num_negatives >= 1):
            raise ValueError("num_negatives must be an integer >= 1")
        if not temperature > 0:
            raise ValueError("temperature must be > 0")
        if not 0 <= momentum < 1:
            raise ValueError("momentum must be in [0, 1)")
        self.feat_dim, self.num_negatives = feat_dim, num_negatives
        self.temperature, self.momentum, self.seed = temperature, momentum, seed
        self.student_weight, self.student_bias = UninitializedParameter(), UninitializedParameter()
        self.teacher_weight, self.teacher_bias = UninitializedParameter(), UninitializedParameter()
        for name in BANKS:
            self.register_buffer(name, torch.empty(0, feat_dim))  # (N, feat_dim), grows with index
        self._generator: torch.Generator | None = None

    def initialize_parameters(self, student, teacher=None, target=None, index=None) -> None:
        if not self.has_uninitialized_params():  # already given shapes by load_state_dict
            return
        heads = ((self.student_weight, self.student_bias, student[0].numel()),
                 (self.teacher_weight, self.teacher_bias, teacher[0].numel()))
        with torch.no_grad():
            for weight, bias, width in heads:  # nn.Linear's initialisation
                weight.materialize((self.feat_dim, width), device=student.device, dtype=torch.float32)
                bias.materialize((self.feat_dim,), device=student.device, dtype=torch.float32)
                nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
                nn.init.uniform_(bias, -1 / math.sqrt(width), 1 / math.sqrt(width))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a saved bank may be larger than this module's: take its size, then copy as usual
        for name in BANKS:
            saved = state_dict.get(prefix + name)
            if saved is not None and saved.shape != getattr(self, name).shape:
                setattr(self, name, getattr(self, name).new_empty(saved.shape))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def get_extra_state(self):
        return {"generator": self._generator.get_state() if self._generator is not None else None,
                "device": str(self._generator.device) if self._generator is not None else None}

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)  # the lazy mixin's skips extra state
        destination[prefix + "_extra_state"] = self.get_extra_state()

    def set_extra_state(self, state) -> None:
        if state and state.get("generator") is not None:
            self._generator = torch.Generator(device=state["device"])
            self._generator.set_state(state["generator"])

    def _rng(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
        return self._generator

    def _cover(self, size: int, device: torch.device) -> None:
        """Move the banks to ``device`` and grow them to at least ``size`` rows."""
        for name in BANKS:
            bank = getattr(self, name).to(device)
            if len(bank) < size:
                rng = self._rng(device)
                fresh = torch.randn(size - len(bank), self.feat_dim, generator=rng, device=device)  # (new, D)
                bank = torch.cat([bank, F.normalize(fresh, dim=1).to(bank.dtype)])
            setattr(self, name, bank)

    def _negatives(self, index: torch.Tensor, k: int) -> torch.Tensor:
        """``(B, K)`` rows drawn uniformly, with replacement, from all rows but each anchor's own."""
        if k == 0:
            return index.new_empty(len(index), 0)
        rng = self._rng(index.device)
        draw = torch.randint(len(self.student_bank) - 1, (len(index), k), generator=rng,
                             device=index.device)  # (B, K) in [0, N - 1)
        return draw + (draw >= index[:, None]).long()  # skip the anchor's own row

    @torch.no_grad()
    def _update(self, index: torch.Tensor, *embeddings: torch.Tensor) -> None:
        for name, new in zip(BANKS, embeddings):
            bank = getattr(self, name)
            rows = self.momentum * bank[index] + (1 - self.momentum) * new.to(bank.dtype)  # (B, feat_dim)
            bank.index_copy_(0, index, F.normalize(rows, dim=1))

    def forward(self, student, teacher, target=None, index=None):
        if index is None:
            raise KDistillError("loss 'crd': needs index, each sample's position in the data set; "
                                "call it through the objective's training loop, which passes index=")
        s = embed(student, self.student_weight, self.student_bias)  # (B, feat_dim)
        t = embed(teacher.detach(), self.teacher_weight, self.teacher_bias)  # (B, feat_dim)
        index = index.to(s.device).long()
        self._cover(int(index.max()) + 1, s.device)
        negatives = self._negatives(index, min(self.num_negatives, len(self.student_bank) - 1))  # (B, K)
        positive = (s * t).sum(dim=1, keepdim=True)  # (B, 1)
        student_anchor = info_nce(s, positive, self.teacher_bank[negatives], self.temperature)
        teacher_anchor = info_nce(t, positive, self.student_bank[negatives], self.temperature)
        if self.training:
            self._update(index, s.detach(), t.detach())
        return (student_anchor + teacher_anchor) / 2
