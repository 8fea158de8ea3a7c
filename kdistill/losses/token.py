"""Token-level distillation of causal language models: divergences between next-token
distributions, computed chunk by chunk so that full ``batch x length x vocabulary`` logits never exist.

Notation, per token: ``p_T = softmax(z_T / T)`` (teacher) and ``p_S = softmax(z_S / T)``
(student) over the vocabulary, ``T`` the temperature.

- ``forward_kl``: ``KL(p_T || p_S) = sum_v p_T (log p_T - log p_S)`` (mode covering; the
  soft-target loss of Hinton, Vinyals and Dean 2015 (``kd``), applied per token).
- ``reverse_kl``: ``KL(p_S || p_T) = sum_v p_S (log p_S - log p_T)`` (mode seeking; Gu, Dong, Wei and
  Huang, "MiniLLM: Knowledge Distillation of Large Language Models", ICLR 2024, arXiv:2306.08543).
- ``jsd``: the generalized Jensen-Shannon divergence of GKD (Agarwal et al., "On-Policy Distillation of
  Language Models: Learning from Self-Generated Mistakes", ICLR 2024, arXiv:2306.13649)
  with ``M = beta p_T + (1 - beta) p_S``: ``JSD_beta = beta KL(p_T || M) + (1 - beta) KL(p_S || M)``.
  The formula tends to 0 at both ends, so ``beta = 0`` is taken as its limit direction, the
  forward KL, and ``beta = 1`` as the reverse KL (as TRL's ``generalized_jsd_loss`` does).
- ``skew_kl``: skew KL of DistiLLM (Ko, Kim, Chen and Yun, "DistiLLM: Towards Streamlined Distillation
  for Large Language Models", ICML 2024, arXiv:2402.03898) with ``a = skew``:
  direction ``forward``: ``KL(p_T || a p_T + (1 - a) p_S)``; ``reverse``: ``KL(p_S || a p_S + (1 - a) p_T)``.
  ``a = 0`` is the plain forward / reverse KL.
- ``tv``: total variation ``0.5 sum_v |p_T - p_S|``.

Every value is multiplied by ``T^2`` (as the soft-target loss is, so gradient sizes stay
comparable across temperatures) and averaged over the tokens that count: position ``t``'s
prediction of token ``t + 1`` counts where the inputs' loss mask marks token ``t + 1``.

Memory: the model's output is its final hidden states ``(B, L, d)`` and the loss gets the output
projection ``(W (V, d), b)`` beside them (the feature ``head``). The counted positions are
gathered, then projected ``chunk`` tokens at a time; each chunk's gradients are computed with its
value, so its logits are freed before the next chunk's exist (the idea of fused linear
cross-entropy kernels), and never recomputed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kdistill.data.lm_batch import prediction_mask, split_inputs
from kdistill.losses.registry import Contract, register, register_count
from kdistill.models.taps import HEAD, OUTPUT
from kdistill.errors import shown

DIVERGENCES = ("forward_kl", "reverse_kl", "jsd", "skew_kl", "tv")
CHUNK_ELEMENTS = 1 << 22  # auto chunk: about this many logits (16 MB in float32) a chunk


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``KL(p || q)`` per row of log-probabilities ``(n, V)``: ``(n,)`` (0 log 0 = 0)."""
    return (log_p.exp() * (log_p - log_q)).nan_to_num(0.0, 0.0, 0.0).sum(-1)


def _mix(log_a: torch.Tensor, log_b: torch.Tensor, a: float) -> torch.Tensor:
    """``log(a p_a + (1 - a) p_b)`` from log-probabilities, for ``0 < a < 1``."""
    return torch.logaddexp(log_a + math.log(a), log_b + math.log1p(-a))


def divergence(log_p_t: torch.Tensor, log_p_s: torch.Tensor, kind: str, beta: float = 0.5,
               skew: float = 0.1, direction: str = "forward") -> torch.Tensor:
    """The per-token divergence ``kind`` (see the module docstring) between teacher and student
    log-probabilities ``(n, V)``: ``(n,)``."""
    if kind == "forward_kl" or (kind == "jsd" and beta == 0):
        return _kl(log_p_t, log_p_s)
    if kind == "reverse_kl" or (kind == "jsd" and beta == 1):
        return _kl(log_p_s, log_p_t)
    if kind == "jsd":
        log_m = _mix(log_p_t, log_p_s, beta)
        return beta * _kl(log_p_t, log_m) + (1 - beta) * _kl(log_p_s, log_m)
    if kind == "skew_kl":
        first, second = (log_p_t, log_p_s) if direction == "forward" else (log_p_s, log_p_t)
        return _kl(first, first if skew == 1 else _mix(first, second, skew) if skew > 0 else second)
    if kind == "tv":
        return 0.5 * (log_p_t.exp() - log_p_s.exp()).abs().sum(-1)
    raise ValueError(f"unknown divergence {shown(kind)}; use one of {', '.join(DIVERGENCES)}")


def counted_positions(inputs: torch.Tensor, length: int) -> torch.Tensor:
    """Which positions' next-token predictions count: ``(B, length - 1)`` bool, position ``t``
    where the loss mask (``inputs[:, 2]``) marks token ``t + 1``; every position but the last
    when the inputs carry only ids (and an attention mask, which then marks the targets)."""
    if inputs is None:
        raise ValueError("token losses need the batch's inputs (token ids and masks)")
    return prediction_mask(inputs)[:, : length - 1]


# the token losses average over the counted positions of a batch (``Contract.mean_over``)
register_count("tokens", lambda x, y: prediction_mask(x).sum())


def next_tokens(inputs: torch.Tensor) -> torch.Tensor:
    """The token each position predicts: ``(B, L - 1)`` ids."""
    return split_inputs(inputs)[0][:, 1:]


def auto_chunk(vocab: int, chunk: int) -> int:
    """Tokens a chunk: ``chunk`` if given (> 0), else about ``CHUNK_ELEMENTS / vocab``."""
    return chunk if chunk > 0 else max(16, CHUNK_ELEMENTS // max(vocab, 1))


def project(hidden: torch.Tensor, head) -> torch.Tensor:
    """Logits ``(n, V)`` (at least float32) of hidden states ``(n, d)`` through ``head = (W (V, d), b or
    None)``; ``head = None``: ``hidden`` are the logits already."""
    logits = hidden if head is None else F.linear(hidden, *head)
    return logits.to(torch.promote_types(logits.dtype, torch.float32))  # half precision computed in float32


def _chunk_sum(fn, hidden, weight, bias, teacher_rows, teacher_head, extra):
    """``fn`` summed over one chunk: student logits from ``hidden`` (through ``weight``, ``bias``
    when there is a weight); teacher logits from rows of hidden states through ``teacher_head``,
    or the rows themselves when they are logits."""
    s = project(hidden, None if weight is None else (weight, bias))
    t = None if teacher_rows is None else project(teacher_rows, teacher_head)
    return fn(s, t, extra).sum()


def chunked_sum(fn, hidden: torch.Tensor, head, teacher_rows: torch.Tensor | None = None, teacher_head=None,
                extra: torch.Tensor | None = None, chunk: int = 0) -> torch.Tensor:
    """``sum_i fn(s_i, t_i, extra_i)`` over rows, ``chunk`` rows at a time.

    Args:
        fn: ``(student logits (n, V), teacher logits (n, V) or None, extra rows or None) -> (n,)``.
        hidden: the student's hidden states of the counted positions ``(N, d)`` (its logits
            ``(N, V)`` when ``head`` is None).
        head: the student's output projection ``(W (V, d), b or None)`` (gradients reach it), or None.
        teacher_rows: the teacher's hidden states ``(N, d_T)`` (with ``teacher_head``) or logits ``(N, V)``.
        extra: per-row values ``fn`` reads (the target ids for cross-entropy).
    Returns: a 0-dim tensor (float32, or float64 for float64 inputs).

    When gradients are needed, each chunk's gradients with respect to ``hidden``, ``W`` and ``b``
    are computed as soon as its value is (``_ChunkedProjection``): a chunk's logits are freed
    before the next chunk's exist, and the backward pass only scales the stored gradients.
    """
    weight, bias = head if head is not None else (None, None)
    size = auto_chunk(hidden.shape[-1] if weight is None else weight.shape[0], chunk)
    params = [p for p in (hidden, weight, bias) if p is not None]
    if torch.is_grad_enabled() and any(p.requires_grad for p in params):
        return _ChunkedProjection.apply(fn, size, teacher_rows, teacher_head, extra, hidden, weight, bias)
    total = hidden.new_zeros((), dtype=torch.promote_types(hidden.dtype, torch.float32))
    for i in range(0, hidden.shape[0], size):
        rows = slice(i, i + size)
        total = total + _chunk_sum(fn, hidden[rows], weight, bias, _rows(teacher_rows, rows), teacher_head,
                                   _rows(extra, rows))
    return total


def _rows(x: torch.Tensor | None, rows: slice) -> torch.Tensor | None:
    return None if x is None else x[rows]


class _ChunkedProjection(torch.autograd.Function):
    """``chunked_sum`` with its gradients computed chunk by chunk in the forward pass."""

    @staticmethod
    def forward(ctx, fn, size, teacher_rows, teacher_head, extra, hidden, weight, bias):
        wants = [x is not None and x.requires_grad for x in (hidden, weight, bias)]
        grads = [torch.zeros_like(x) if want else None for x, want in zip((hidden, weight, bias), wants)]
        leaves = [None if x is None else x.detach().requires_grad_(want) for x, want in zip((weight, bias), wants[1:])]
        total = hidden.new_zeros((), dtype=torch.promote_types(hidden.dtype, torch.float32))
        for i in range(0, hidden.shape[0], size):
            rows = slice(i, i + size)
            h = hidden[rows].detach().requires_grad_(wants[0])
            with torch.enable_grad():
                value = _chunk_sum(fn, h, *leaves, _rows(teacher_rows, rows), teacher_head, _rows(extra, rows))
                inputs = [x for x, want in zip((h, *leaves), wants) if want]
                parts = iter(torch.autograd.grad(value, inputs, allow_unused=True))
            for k, want in enumerate(wants):
                part = next(parts) if want else None
                if part is not None:
                    (grads[0][rows] if k == 0 else grads[k]).add_(part)
            total = total + value.detach()
        ctx.save_for_backward(*[g if g is not None else torch.empty(0) for g in grads])
        ctx.wants = wants
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grads = [g * grad_total if want else None for g, want in zip(ctx.saved_tensors, ctx.wants)]
        return (None, None, None, None, None, *grads)


def _split_feature(feature):
    """``(hidden (B, L, d), head)`` from a feature tuple, or ``(logits (B, L, V), None)``."""
    if isinstance(feature, (tuple, list)):
        hidden, head = feature
        return hidden, tuple(head)
    return feature, None


@register("token_kd", Contract(reads=(OUTPUT, HEAD), teacher_reads=(OUTPUT, HEAD), adapt=False, inputs=True,
                             mean_over="tokens"))
class TokenKD(nn.Module):
    """``T^2 * mean over counted tokens of D(p_T, p_S)``, D the ``divergence`` (module docstring).

    Args:
        divergence: forward_kl, reverse_kl, jsd, skew_kl or tv.
        beta: jsd's mixture weight of the teacher, in [0, 1] (0: forward KL, 1: reverse KL).
        skew: skew_kl's weight ``a`` of the first distribution in the mixture, in [0, 1).
        direction: skew_kl's direction: forward (``KL(p_T || a p_T + (1 - a) p_S)``) or reverse.
        temperature: T (> 0), applied to both sides' logits.
        chunk: tokens projected at a time (0: about 4M logits a chunk).
    Student: ``(hidden (B, L, d), head (W, b))``, or its logits ``(B, L, V)``; teacher: the same.
    """

    def __init__(self, divergence: str = "forward_kl", beta: float = 0.5, skew: float = 0.1,
                 direction: str = "forward", temperature: float = 1.0, chunk: int = 0):
        super().__init__()
        if divergence not in DIVERGENCES:
            raise ValueError(f"divergence must be one of {', '.join(DIVERGENCES)}, not {shown(divergence)}")
        if not 0 <= beta <= 1 or not 0 <= skew < 1 or temperature <= 0 or chunk < 0:
            raise ValueError("beta must be in [0, 1], skew in [0, 1), temperature > 0 and chunk >= 0")
        if direction not in ("forward", "reverse"):
            raise ValueError(f"direction must be forward or reverse, not {shown(direction)}")
        self.kind, self.beta, self.skew, self.direction = divergence, beta, skew, direction
        self.temperature, self.chunk = temperature, chunk

    def _per_token(self, s: torch.Tensor, t: torch.Tensor, _extra) -> torch.Tensor:
        T = self.temperature
        return divergence(F.log_softmax(t / T, -1), F.log_softmax(s / T, -1), self.kind, self.beta,
                          self.skew, self.direction)

    def forward(self, student, teacher, target=None, inputs=None):
        hidden, head = _split_feature(student)
        t_rows, t_head = _split_feature(teacher)
        keep = counted_positions(inputs, hidden.shape[1])
        count = keep.sum()
        total = chunked_sum(self._per_token, hidden[:, :-1][keep], head, t_rows[:, :-1][keep], t_head,
                            chunk=self.chunk)
        return total * self.temperature ** 2 / count.clamp_min(1)


@register("token_ce", Contract(teacher=False, reads=(OUTPUT, HEAD), adapt=False, inputs=True, mean_over="tokens"))
class TokenCE(nn.Module):
    """Cross-entropy of the student's next-token predictions with the data's own tokens,
    ``-mean over counted tokens of log p_S(token t+1 | tokens <= t)``, chunked like ``token_kd``.

    Args: chunk: tokens projected at a time (0: about 4M logits a chunk).
    """

    def __init__(self, chunk: int = 0):
        super().__init__()
        if chunk < 0:
            raise ValueError("chunk must be >= 0")
        self.chunk = chunk

    @staticmethod
    def _per_token(s: torch.Tensor, _t, ids: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(s, ids, reduction="none")

    def forward(self, student, teacher=None, target=None, inputs=None):
        hidden, head = _split_feature(student)
        keep = counted_positions(inputs, hidden.shape[1])
        ids = next_tokens(inputs)[:, : hidden.shape[1] - 1][keep]
        total = chunked_sum(self._per_token, hidden[:, :-1][keep], head, extra=ids, chunk=self.chunk)
        return total / keep.sum().clamp_min(1)
