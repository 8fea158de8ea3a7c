"""Causal language models judged on held-out token sequences: perplexity, agreement with the
teacher's next-token choice, mean token KL to the teacher, generation speed and sample
continuations.

Every figure is over the positions whose next token counts (the inputs' loss mask): a packed
block's every token after the first, a prompt/response pair's response. Logits are formed chunk
by chunk from the final hidden states and the output projection, never for a whole batch.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from kdistill import progress
from kdistill.data.samples import take
from kdistill.losses.token import auto_chunk, counted_positions, next_tokens, project
from kdistill.models.infer import eval_mode

EVAL_BATCH = 16  # sequences a forward pass


def _rows(model: nn.Module, xb: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, tuple]:
    """The model's hidden states at the counted positions ``(n, d)`` and its output projection."""
    return model(xb)[:, :-1][keep], tuple(model.output_head())


@torch.no_grad()
def token_metrics(model: nn.Module, x, device, teacher: nn.Module | None = None, batch_size: int = EVAL_BATCH,
                  limit: int | None = None, desc: str | None = None) -> dict:
    """Perplexity ``exp(mean -log p(token))`` of ``model`` on the sequences ``x`` (``Inputs`` or a
    tensor ``(N, 3, L)``) and, with a ``teacher``, top-1 agreement with it and the mean token
    ``KL(p_T || p_S)``, over the counted tokens of the first ``limit`` sequences (all: None).
    ``desc``: the pass's name on a bar, shown where the job shows progress (``kdistill.progress``)
    for a pass of more than a few seconds; None: no bar."""
    n = len(x) if limit is None else min(limit, len(x))
    nll = kl = 0.0
    agree = tokens = 0
    with eval_mode(model, *([teacher] if teacher is not None else [])), progress.bar(n, desc) as done:
        for i in range(0, n, batch_size):
            xb = take(x, slice(i, min(i + batch_size, n)), device)
            keep = counted_positions(xb, xb.shape[-1])
            hs, head = _rows(model, xb, keep)
            ids = next_tokens(xb)[keep]
            ht, t_head = _rows(teacher, xb, keep) if teacher is not None else (None, None)
            size = auto_chunk(head[0].shape[0], 0)
            for j in range(0, len(hs), size):
                s = F.log_softmax(project(hs[j:j + size], head), -1)
                nll += float(F.nll_loss(s, ids[j:j + size], reduction="sum"))
                if teacher is not None:
                    t = F.log_softmax(project(ht[j:j + size], t_head), -1)
                    agree += int((s.argmax(-1) == t.argmax(-1)).sum())
                    kl += float(F.kl_div(s, t, reduction="sum", log_target=True))
            tokens += len(hs)
            done.update(min(batch_size, n - i))
    out = {"perplexity": math.exp(nll / max(tokens, 1)), "tokens": tokens}
    if teacher is not None:
        out.update({"agreement": agree / max(tokens, 1), "kl_to_teacher": kl / max(tokens, 1)})
    return out


def prompts_from(x, count: int, length: int) -> torch.Tensor:
    """The first ``length`` tokens of ``count`` sequences of ``x``, spread over it: ``(count, length)``."""
    rows = torch.linspace(0, len(x) - 1, min(count, len(x))).long().unique()
    xb = x.batch(rows, "cpu") if hasattr(x, "batch") else x[rows]
    return xb[:, 0, :length].long()


@torch.no_grad()
def generation_speeds(models: dict[str, nn.Module], prompts: torch.Tensor, batch: int, new_tokens: int, device,
                      repeats: int = 5) -> dict[str, float]:
    """Greedy generated tokens a second of each of ``models`` at ``batch`` prompts at a time
    (``prompts`` repeated to fill it), each prompt continued by exactly ``new_tokens``.

    After one warm-up call each, the models are timed in turn, ``repeats`` rounds, and each keeps
    its best timing: interleaved, so that a slow spell of a shared machine falls on every model
    alike rather than on whichever ran last, and the best, as other work only ever slows a timing
    down. The ratio of two models' figures is the speed-up the run reports."""
    ids = prompts[torch.arange(batch) % len(prompts)].to(device)
    best = dict.fromkeys(models, 0.0)
    for k in range(repeats + 1):
        for name, model in models.items():
            with eval_mode(model):
                start = time.perf_counter()
                model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                               min_new_tokens=new_tokens, do_sample=False, pad_token_id=_pad_id(model))
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if k:  # the first round warms up
                    best[name] = max(best[name], batch * new_tokens / (time.perf_counter() - start))
    return best


@torch.no_grad()
def continuations(model: nn.Module, prompts: torch.Tensor, new_tokens: int, device) -> list[dict]:
    """Greedy continuations of each prompt, decoded: ``[{prompt, continuation}]``."""
    tok = getattr(model, "tokenizer", None)
    out = []
    with eval_mode(model):
        for row in prompts:
            ids = row[None].to(device)
            gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                                 do_sample=False, pad_token_id=_pad_id(model))[0, ids.shape[1]:]
            decode = (lambda t: tok.decode(t.tolist())) if tok is not None else (lambda t: " ".join(map(str, t.tolist())))
            out.append({"prompt": decode(row), "continuation": decode(gen)})
    return out


def _pad_id(model: nn.Module) -> int:
    tok = getattr(model, "tokenizer", None)
    pad = getattr(tok, "pad_token_id", None) if tok is not None else None
    if pad is None:
        pad = getattr(tok, "eos_token_id", None) if tok is not None else None
    return int(pad) if pad is not None else 0
